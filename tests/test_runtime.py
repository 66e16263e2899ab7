"""inference.runtime: OpenVINO and onnxruntime give the same probabilities at fp32; bf16 runs; the
asynchronous path returns what the synchronous one does; a bad choice is a clear error."""
import numpy as np
import pytest

from dermalens.inference import BundleError, Predictor, load_bundle
from dermalens.inference import runtime as rt
from conftest import FIXTURES, MINI

pytest.importorskip("openvino")
IMAGES = sorted((MINI / "images").iterdir())[:12] + sorted((FIXTURES / "fullres").iterdir())


def _probs(bundle_path, **kw):
    pred = Predictor(bundle_path, **kw)
    pixels = np.stack([pred.load(p) for p in IMAGES])
    return pred.forward(pixels)[0], pred


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_runtimes_agree_at_fp32(which, tiny_bundle, shipped_bundle):
    path = tiny_bundle if which == "tiny" else shipped_bundle
    ort_probs, ort_pred = _probs(path, runtime="onnxruntime", precision="fp32")
    ov_probs, ov_pred = _probs(path, runtime="openvino", precision="fp32")
    assert ort_pred.runtime_info["runtime"] == "onnxruntime" and ov_pred.runtime_info["runtime"] == "openvino"
    assert ov_pred.runtime_info["precision"] == "fp32"
    assert np.abs(ort_probs - ov_probs).max() < 1e-4


def test_bf16_runs_and_stays_close(tiny_bundle):
    """bf16 rounds weights and activations (natively on AMX / AVX512-BF16, emulated elsewhere)."""
    fp32, _ = _probs(tiny_bundle, runtime="openvino", precision="fp32")
    bf16, pred = _probs(tiny_bundle, runtime="openvino", precision="bf16")
    assert pred.runtime_info["precision"] == "bf16"
    assert np.allclose(bf16.sum(axis=1), 1, atol=1e-4)
    assert np.abs(bf16 - fp32).max() < 0.1


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("mode", ["latency", "throughput"])
def test_submit_equals_run(tiny_bundle, runtime, mode):
    bundle = load_bundle(tiny_bundle, runtime=runtime, mode=mode, precision="fp32")
    pred = Predictor(bundle)
    xs = [pred.load(p)[None] for p in IMAGES]
    futures = [bundle.submit(x) for x in xs]  # all in flight at once
    for x, fut in zip(xs, futures):
        logits, feats = bundle.run(x)
        out = fut.result(timeout=60)
        assert np.allclose(out["logits"], logits, atol=1e-5) and np.allclose(out["features"], feats, atol=1e-5)


def test_submit_failure_reaches_its_caller_only(tiny_bundle):
    bundle = load_bundle(tiny_bundle, runtime="openvino", mode="throughput")
    bad = bundle.model.submit({"image": np.zeros((1, 5, 5, 3), np.uint8)})
    good = bundle.submit(np.zeros((1, *bundle.spec.input_size, 3), np.uint8))
    with pytest.raises(Exception):
        bad.result(timeout=60)
    assert good.result(timeout=60)["logits"].shape == (1, 7)


def test_environment_overrides(tiny_bundle, monkeypatch):
    monkeypatch.setenv("DERMALENS_RUNTIME", "onnxruntime")
    assert Predictor(tiny_bundle).runtime_info["runtime"] == "onnxruntime"
    monkeypatch.setenv("DERMALENS_RUNTIME", "tensorflow")
    with pytest.raises(BundleError, match="DERMALENS_RUNTIME must be one of"):
        load_bundle(tiny_bundle)
    monkeypatch.setenv("DERMALENS_RUNTIME", "onnxruntime")
    monkeypatch.setenv("DERMALENS_PRECISION", "bf16")
    with pytest.raises(BundleError, match="bf16 inference needs the openvino runtime"):
        load_bundle(tiny_bundle)


def test_default_precision_follows_the_cpu(tiny_bundle, monkeypatch):
    monkeypatch.delenv("DERMALENS_RUNTIME", raising=False)
    monkeypatch.delenv("DERMALENS_PRECISION", raising=False)
    info = Predictor(tiny_bundle).runtime_info
    assert info["runtime"] == "openvino"
    assert info["precision"] == ("bf16" if rt.cpu_has_bf16() else "fp32")


def test_any_onnx_file_compiles(tiny_bundle):
    """The same function compiles any graph of a bundle (a gate, a second member...)."""
    model = rt.compile(tiny_bundle / "model.onnx", mode="throughput", threads=1)
    assert set(model.outputs) == {"logits", "features"} and model.inputs["image"][1:] == [3, 48, 64]
    out = model.run({"image": np.zeros((2, 3, 48, 64), np.float32)})
    assert out["logits"].shape == (2, 7)


def test_normalisation_inside_the_graph_is_preprocess_normalize_views(shipped_bundle):
    """OpenVINO normalises a member's uint8 views inside its graph; the result is the graph run on
    preprocess.normalize_views (the one definition), as onnxruntime runs it."""
    import json
    import onnxruntime as ort
    from dermalens.preprocess import normalize_views
    entry = json.loads((shipped_bundle / "card.json").read_text())["members"][1]
    h, w = entry["input_size"]
    views = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    model = rt.compile(shipped_bundle / entry["graph"], runtime="openvino", precision="fp32",
                       views=(entry["mean"], entry["std"]))
    assert model.takes_views and model.inputs["image"][1:] == [3, h, w]
    want = ort.InferenceSession(str(shipped_bundle / entry["graph"])).run(
        ["logits"], {"image": normalize_views(views, entry["mean"], entry["std"])})[0]
    assert np.abs(model.run({"image": views})["logits"] - want).max() < 1e-4


_FIRST_CALLS = """
import sys
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from dermalens.inference import Predictor
p = Predictor(sys.argv[1], runtime="openvino")
views = np.full((1, *p.bundle.spec.input_size, 3), 128, np.uint8)
with ThreadPoolExecutor(4) as ex:
    list(ex.map(lambda _: p.predict_pixels(views), range(16)))
print("done")
"""


@pytest.mark.slow
def test_first_concurrent_predictions_do_not_deadlock(shipped_bundle):
    """Four threads predicting at once in a fresh process (three graphs each, side by side): without the
    single-threaded warm-up in inference.runtime this hung about one start in six."""
    import subprocess
    import sys
    for _ in range(8):
        try:
            r = subprocess.run([sys.executable, "-c", _FIRST_CALLS, str(shipped_bundle)], capture_output=True,
                               text=True, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("concurrent first predictions hung")
        assert "done" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("tta", [False, True])
def test_batches_in_flight_come_back_in_order(shipped_bundle, tta):
    """forward queues each batch before collecting the one before: results stay in the images' order."""
    pred = Predictor(shipped_bundle, precision="fp32")
    pixels = np.stack([pred.load(p) for p in IMAGES[:7]])
    probs, pooled, maps = pred.forward(pixels, tta=tta, batch_size=8 if tta else 2)
    for i in range(len(pixels)):
        p1, f1, m1 = pred.forward(pixels[i:i + 1], tta=tta)
        assert np.allclose(probs[i], p1[0], atol=1e-5) and np.allclose(pooled[i], f1[0], atol=1e-4)
        assert maps[i].shape == m1[0].shape


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_prepare_runs_on_the_runtimes_thread_before_the_inference(tiny_bundle, runtime):
    import threading
    bundle = load_bundle(tiny_bundle, runtime=runtime, precision="fp32")
    x = Predictor(bundle).load(IMAGES[0])[None]
    threads = []

    def prepare(v):
        threads.append(threading.current_thread().name)
        return {"image": v}
    out = bundle.model.submit(x, prepare=prepare).result(timeout=60)
    assert np.allclose(out["logits"], bundle.run(x)[0], atol=1e-5)
    assert threads and threads[0].startswith("dermalens-") and threads[0] != threading.current_thread().name


def test_the_graphs_of_an_image_share_the_cores(shipped_bundle, monkeypatch):
    from dermalens.inference.bundle import threads_per_graph
    assert threads_per_graph(2, 3) == 1 and threads_per_graph(8, 3) == 2 and threads_per_graph(4, 1) == 4
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)))
    assert threads_per_graph(None, 3) == 2
    bundle = load_bundle(shipped_bundle, threads=6)  # two members and the image-type check
    assert [m.model.threads for m in bundle.members] + [bundle.gate.model.threads] == [2, 2, 2]
    alone = load_bundle(shipped_bundle, threads=6, share_cores=False)  # evaluation: one graph at a time
    assert [m.model.threads for m in alone.members] + [alone.gate.model.threads] == [6, 6, 6]


def _predict_in_child(predictor, image, answers):
    try:
        predictor.predict(image)
        answers.put("answered")
    except Exception as e:  # noqa: BLE001 - the child reports whatever it met
        answers.put(f"{type(e).__name__}: {e}")


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_a_process_forked_after_loading_gets_an_error_not_a_hang(runtime, tiny_bundle):
    """The runtime's threads are not copied into a forked child: its first inference used to wait for ever."""
    import multiprocessing
    import queue
    predictor = Predictor(tiny_bundle, runtime=runtime)
    predictor.predict(IMAGES[0])  # the parent's threads are running
    ctx = multiprocessing.get_context("fork")
    answers = ctx.Queue()
    child = ctx.Process(target=_predict_in_child, args=(predictor, IMAGES[0], answers))
    child.start()
    try:
        answer = answers.get(timeout=60)
    except queue.Empty:
        answer = "no answer within 60 s"
    child.join(10)
    if child.is_alive():
        child.kill()
    assert answer.startswith("CompiledInAnotherProcess") and "spawn" in answer, answer
    assert predictor.predict(IMAGES[0]).probabilities.sum() > 0.99  # the parent still predicts


def test_loading_reads_every_npz_file_on_the_calling_thread(shipped_bundle, monkeypatch):
    """np.load parses array headers with Python's ast, which CPython 3.11 cannot do in two threads at once
    (`SystemError: AST constructor recursion depth mismatch` in make test): load_bundle overlaps only numpy maths
    (the feature-distance model's eigendecomposition) with the compiling, never a file read."""
    import threading
    real, threads = np.load, []

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)
    monkeypatch.setattr(np, "load", recording)
    load_bundle(shipped_bundle)
    assert threads and set(threads) == {threading.current_thread().name}, threads
