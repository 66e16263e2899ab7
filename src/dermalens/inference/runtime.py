"""Compile any ONNX graph of a bundle for this CPU: OpenVINO when installed, onnxruntime otherwise.

    model = compile(path, mode="latency")            # one request at a time, all cores on it
    model = compile(path, mode="throughput")         # several requests in flight (a stream per core)
    outputs = model.run({"image": x})                # -> {"logits": ..., "features": ...}
    model = compile(path, views=(mean, std))         # "image" takes uint8 NHWC views instead of NCHW floats
    future = model.submit({"image": x})              # concurrent.futures.Future of the same dict
    future = model.submit(views, prepare=to_inputs)  # to_inputs(views) runs on the runtime's thread first

Both runtimes read the bundle's ONNX file directly (no conversion step, nothing cached on disk).
Precision: bf16 where the CPU computes it natively (AMX / AVX512-BF16, OpenVINO only), fp32
elsewhere; DERMALENS_RUNTIME=onnxruntime|openvino and DERMALENS_PRECISION=fp32|bf16 override.
"""
from __future__ import annotations

import functools
import os
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..preprocess import normalize_views

RUNTIMES = ("openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16")
MODES = ("latency", "throughput")


def short_reason(e: Exception) -> str:
    """A runtime's error in one line: OpenVINO's messages are several lines of C++ checks, the last one says what."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


class RuntimeUnavailable(RuntimeError):
    """The runtime or precision asked for cannot be used here; the message says why."""


class CompiledInAnotherProcess(RuntimeError):
    """A compiled graph used in a process forked from the one that compiled it: the runtime's threads do not
    survive a fork, so the call would wait for ever."""


def _openvino_core():
    global _CORE
    if _CORE is None:
        import openvino as ov
        _CORE = ov.Core()
    return _CORE


_CORE = None


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (OpenVINO lists BF16 among its capabilities then);
    elsewhere OpenVINO emulates it, several times slower than fp32."""
    if not openvino_installed():
        return False
    return "BF16" in _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def choose_runtime(runtime: str | None = None) -> str:
    runtime = (runtime or os.environ.get("DERMALENS_RUNTIME") or "").strip().lower()
    if not runtime:
        return "openvino" if openvino_installed() else "onnxruntime"
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"DERMALENS_RUNTIME must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "openvino" and not openvino_installed():
        raise RuntimeUnavailable("runtime 'openvino' asked for, but the openvino package is not installed "
                                 "(pip install openvino, or DERMALENS_RUNTIME=onnxruntime)")
    return runtime


def choose_precision(runtime: str, precision: str | None = None) -> str:
    precision = (precision or os.environ.get("DERMALENS_PRECISION") or "").strip().lower()
    if not precision:
        return "bf16" if runtime == "openvino" and cpu_has_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise RuntimeUnavailable(f"DERMALENS_PRECISION must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and runtime != "openvino":
        raise RuntimeUnavailable("bf16 inference needs the openvino runtime (DERMALENS_RUNTIME=openvino)")
    return precision


def cores(threads: int | None = None) -> int:
    """The cores to use: `threads`, or every core this process may use (SLURM's and containers' limits count)."""
    return threads or len(os.sched_getaffinity(0))


@functools.cache
def single_threaded_numpy():
    """Keep numpy's BLAS on one thread once a network is compiled: its idle threads spin after every
    small product (the OOD distance, the image-type check's head) and take the cores from the runtime's
    threads (docs/benchmarks.md)."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1, user_api="blas")


@dataclass
class CompiledModel:
    """One compiled graph. `run` is thread-safe; `submit` queues asynchronous inference."""
    path: Path
    runtime: str
    precision: str
    mode: str
    threads: int
    inputs: dict[str, list]  # name -> the graph's own shape, None where a dimension is dynamic
    outputs: dict[str, list]
    takes_views: bool = False  # "image" is uint8 NHWC, normalised by the runtime (compile's `views`)
    _impl: object = field(repr=False, default=None)
    _pid: int = field(repr=False, default_factory=os.getpid)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._same_process()
        return self._impl.run(inputs)

    def submit(self, inputs, prepare: Callable | None = None) -> Future:
        """`prepare`: inputs -> the dict to run, called on the runtime's thread (a resize there overlaps the
        caller's work and the other graphs')."""
        self._same_process()
        return self._impl.pool.submit(lambda: self._impl.run(prepare(inputs) if prepare else inputs))

    def _same_process(self):
        if os.getpid() != self._pid:
            raise CompiledInAnotherProcess(
                f"{self.path.name} was loaded in process {self._pid}, and this process ({os.getpid()}) was forked "
                "from it: a model's threads do not survive a fork. Load the model (the Predictor) in this process, "
                "or start processes with multiprocessing.get_context('spawn')")

    @property
    def in_flight(self) -> int:
        """How many requests the runtime runs at once at best (OpenVINO's optimal infer requests)."""
        return self._impl.parallel

    def describe(self) -> dict:
        return {"runtime": self.runtime, "precision": self.precision, "mode": self.mode, "threads": self.threads,
                "parallel_requests": self.in_flight}

    def close(self):
        self._impl.close()


def compile(path: str | Path, mode: str = "latency", threads: int | None = None, runtime: str | None = None,
            precision: str | None = None, views: tuple | None = None) -> CompiledModel:
    """ONNX file -> CompiledModel. `threads`: cores to use (default: all this process may use).
    `views`: (mean, std) of the graph's input: "image" then takes uint8 NHWC pixels and is normalised as
    preprocess.normalize_views does, inside the graph with OpenVINO (no pass of numpy over the pixels),
    by that function before the run with onnxruntime."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    single_threaded_numpy()
    path = Path(path)
    runtime = choose_runtime(runtime)
    precision = choose_precision(runtime, precision)
    threads = cores(threads)
    impl = (_OpenVINO if runtime == "openvino" else _OnnxRuntime)(path, mode, threads, precision, views)
    return CompiledModel(path, runtime, precision, mode, threads, impl.input_shapes, impl.output_shapes,
                         takes_views=views is not None, _impl=impl)


class _OpenVINO:
    def __init__(self, path: Path, mode: str, threads: int, precision: str, views: tuple | None):
        core = _openvino_core()
        model = core.read_model(str(path))
        self.input_shapes = {p.get_any_name(): _ov_shape(p) for p in model.inputs}
        if views is not None:
            model = _normalising(model, *views)
        # Not pinned: pinned streams of different graphs share core 0, and the graphs of one image then queue there.
        config = {"PERFORMANCE_HINT": mode.upper(), "INFERENCE_NUM_THREADS": threads,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "ENABLE_CPU_PINNING": False}
        self.compiled = core.compile_model(model, "CPU", config)
        self.output_shapes = {p.get_any_name(): _ov_shape(p) for p in self.compiled.outputs}
        self.output_names = list(self.output_shapes)
        self.parallel = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        # A run borrows an idle request, so several threads may call run() at once; submit() runs it in a
        # pool of as many threads (a blocking infer releases the GIL). Plain threads rather than OpenVINO's
        # callback queue: nothing waits on a callback that needs the GIL.
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.parallel):
            self.idle.put(self.compiled.create_infer_request())
        self.pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="dermalens-openvino")
        self._warm_up()

    def _warm_up(self):
        """One inference on this thread before any other can start: the first use of OpenVINO's Python tensor
        accessors initialises a static, and two threads arriving there at once deadlocked the server."""
        inputs = {p.get_any_name(): np.zeros([d.get_length() if d.is_static else 1 for d in p.get_partial_shape()],
                                             p.get_element_type().to_dtype())
                  for p in self.compiled.inputs}
        self.run(inputs)

    def run(self, inputs):
        request = self.idle.get()
        try:
            request.infer(inputs)
            # copies: the request's buffers are reused by its next inference
            return {name: np.array(request.get_output_tensor(i).data) for i, name in enumerate(self.output_names)}
        finally:
            self.idle.put(request)

    def close(self):
        self.pool.shutdown(wait=True)


def _normalising(model, mean, std):
    """The graph with uint8 NHWC pixels in: (x - 255 mean) / (255 std), then NCHW, before its first layer."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor
    ppp = PrePostProcessor(model)
    image = ppp.input("image")
    image.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    image.model().set_layout(ov.Layout("NCHW"))
    image.preprocess().convert_element_type(ov.Type.f32).mean([255 * float(m) for m in mean]) \
        .scale([255 * float(s) for s in std])
    return ppp.build()


class _OnnxRuntime:
    def __init__(self, path: Path, mode: str, threads: int, precision: str, views: tuple | None):
        self.views = views
        import onnxruntime as ort
        opts = ort.SessionOptions()
        # throughput: one session thread per core, and as many runs in flight as cores
        self.parallel = threads if mode == "throughput" else 1
        opts.intra_op_num_threads = 1 if mode == "throughput" else threads
        opts.inter_op_num_threads = 1
        # The arena keeps the largest batch's activations for the life of the process (hundreds
        # of MB at batch 32); without it, memory follows the batch actually running.
        opts.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_shapes = {i.name: _ort_shape(i.shape) for i in self.session.get_inputs()}
        self.output_shapes = {o.name: _ort_shape(o.shape) for o in self.session.get_outputs()}
        self.output_names = list(self.output_shapes)
        self.pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="dermalens-ort")

    def run(self, inputs):
        if self.views is not None:
            inputs = {**inputs, "image": normalize_views(inputs["image"], *self.views)}
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))

    def close(self):
        self.pool.shutdown(wait=True)


def _ov_shape(port) -> list:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _ort_shape(shape) -> list:
    return [d if isinstance(d, int) else None for d in shape]
