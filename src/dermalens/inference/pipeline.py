"""Many images -> Predictions, with decoding in parallel with inference and bounded memory.

    for path, result in predict_stream(predictor, paths):   # in the order of `paths`
        ...  # result is a Prediction, or the ImageError that kept this file from being predicted

Decoding runs in a thread pool (Pillow releases the GIL while it decodes and resizes); small batches
go to the runtime from as many threads as it runs requests at once (OpenVINO releases the GIL too),
so the cores stay busy with either. At most `max_batches` batches are decoded or running at any time.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from ..preprocess import ImageError


def decode(predictor, source, read=None) -> tuple[np.ndarray, tuple[int, int]]:
    """One image -> (preprocessed uint8 pixels, the upright (width, height) it shows), as Predictor.predict does.
    `read`: source -> what to open (bytes fetched from a URL); it raises ImageError when it cannot."""
    return predictor.load_sized(predictor.open_image(read(source) if read else source))


def predict_stream(predictor, paths: Iterable, tta: bool = False, explain: bool = False, batch_size: int = 4,
                   decode_threads: int | None = None, max_batches: int | None = None,
                   progress: bool = False, desc: str = "predict", read=None,
                   patient: list | None = None) -> Iterator[tuple[object, object]]:
    """Yield (path, Prediction or ImageError) in input order. `patient`: one PatientMetadata (or None) per path."""
    paths = list(paths)
    cores = len(os.sched_getaffinity(0))
    infer_threads = max(2, predictor.bundle.model.in_flight)  # one batch's numpy work beside another's graphs
    max_batches = max_batches or 2 * infer_threads + 2
    decoder = ThreadPoolExecutor(decode_threads or cores, thread_name_prefix="dermalens-decode")
    runner = ThreadPoolExecutor(infer_threads, thread_name_prefix="dermalens-infer")

    def run_batch(offset, chunk, decoded):
        results, loaded = [None] * len(chunk), []
        for k, fut in enumerate(decoded):
            try:
                loaded.append((k, *fut.result()))
            except ImageError as e:
                results[k] = e
        if loaded:
            preds = predictor.predict_pixels(np.stack([px for _, px, _ in loaded]), tta=tta, explain=explain,
                                             sources=[_name(chunk[k]) for k, _, _ in loaded],
                                             source_sizes=[s for _, _, s in loaded],
                                             metadata=None if patient is None else
                                             [patient[offset + k] for k, _, _ in loaded])
            for (k, _, _), pr in zip(loaded, preds):
                results[k] = pr
        return list(zip(chunk, results))

    def start(offset):
        chunk = paths[offset:offset + batch_size]
        decoded = [decoder.submit(decode, predictor, p, read) for p in chunk]
        return runner.submit(run_batch, offset, chunk, decoded)

    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, smoothing=0.1)
    window: deque = deque()
    try:
        for offset in range(0, len(paths), batch_size):
            window.append(start(offset))
            if len(window) >= max_batches:
                yield from _drain(window.popleft(), bar)
        while window:
            yield from _drain(window.popleft(), bar)
    finally:
        for fut in window:
            fut.cancel()
        decoder.shutdown(wait=True, cancel_futures=True)
        runner.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _drain(fut, bar):
    results = fut.result()
    bar.update(len(results))
    yield from results


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else ""
