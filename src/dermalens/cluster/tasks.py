"""What runs on a Dask worker: one partition of images -> one Parquet file, and a few figures.

Each worker process keeps one Predictor per (bundle, runtime threads) for its whole life: the
bundle is loaded by the worker from its path, once, never pickled through the scheduler.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..predict import prediction_row, predict_files
from ..preprocess import ImageError
from .inputs import Partition, is_url
from .store import OutFolder

_PREDICTORS: dict = {}
_LOCK = threading.Lock()  # a worker with several threads must still load the bundle once
_LOADS = {"count": 0, "seconds": 0.0}
_ROW_TYPES: dict = {}


def cached_predictor(model: str, threads: int):
    with _LOCK:
        key = (model, threads)
        if key not in _PREDICTORS:
            from ..inference import Predictor
            t0 = time.perf_counter()
            _PREDICTORS[key] = Predictor(model, threads=threads)
            _LOADS["count"] += 1
            _LOADS["seconds"] += time.perf_counter() - t0
        return _PREDICTORS[key]


def row_types(predictor) -> dict:
    """Column name -> arrow type of a result row, from the row function itself (on a blank image),
    so every partition has every column even when all its images failed."""
    if id(predictor) not in _ROW_TYPES:
        h, w = predictor.bundle.spec.input_size
        p = predictor.predict_pixels(np.zeros((1, h, w, 3), np.uint8))[0]
        # typed as an assessed image's row (a blank image is not assessed, and its diagnostic columns are empty)
        p.in_distribution, p.ood_reasons = True, []
        if predictor.bundle.gate is not None:
            p.dermoscopic = 0.0
        row = prediction_row("", p)
        _ROW_TYPES[id(predictor)] = {k: pa.string() if v is None else pa.infer_type([v]) for k, v in row.items()}
    return _ROW_TYPES[id(predictor)]


def read_source(key: str):
    """A local path as itself (the predictor opens it, exactly as in-process); a URL as bytes."""
    if not is_url(key):
        return Path(key)
    import fsspec
    try:
        with fsspec.open(key, "rb") as f:
            return f.read()
    except (OSError, ValueError) as e:
        raise ImageError(f"{key}: cannot read ({e})") from None


def runtime_threads(per_host: dict[str, int]) -> int:
    """The runtime's own threads: this machine's cores shared among the task threads of all workers
    on it. A host that joined after the run started is assumed full (1 thread), as a cluster node
    running one single-threaded worker per core is."""
    from distributed import get_worker
    from distributed.comm import get_address_host
    task_threads = per_host.get(get_address_host(get_worker().address))
    if not task_threads:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))  # what SLURM or a container grants, not the whole host
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // task_threads)


def predict_partition(part: Partition, model: str, tta: bool, out_url: str,
                      per_host: dict[str, int], columns: tuple[str, ...] = ()) -> dict:
    from distributed import get_worker
    loads = _LOADS["seconds"]
    predictor = cached_predictor(model, runtime_threads(per_host))
    t0 = time.perf_counter()
    rows, errors = predict_files(predictor, [it.key for it in part.items], tta=tta,
                                 metadata=[it.extra for it in part.items], read=read_source,
                                 patient=[it.patient for it in part.items])
    types = dict(row_types(predictor))
    for k in (*columns, *(k for it in part.items for k in it.extra)):  # every run's manifest column, in each file
        types.setdefault(k, pa.string())
    types["error"] = pa.string()
    OutFolder(out_url).write_partition(part.id, [{**r, "error": None} for r in rows] + errors, types)
    return {"part": part.id, "images": len(rows) + len(errors),
            "failed": [{"file": e["file"], "error": e["error"]} for e in errors],
            "seconds": time.perf_counter() - t0, "load_seconds": _LOADS["seconds"] - loads,
            "worker": get_worker().address, "pid": os.getpid(), "loads": _LOADS["count"]}
