"""Decode and resize every image once, keep uint8 pixels in memory (and on disk).

The cache holds exactly `PreprocessSpec.to_uint8` of each image, so training sees the
same pixels serving does; only augmentation and normalisation happen per step.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data import Record
from ..preprocess import PreprocessSpec


def _decode(args):
    spec_dict, path = args
    return PreprocessSpec.from_dict(spec_dict).to_uint8(path)


def cache_key(spec: PreprocessSpec, records: list[Record]) -> str:
    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for r in records:
        h.update(f"{r.image_id}:{r.path}\n".encode())
    return h.hexdigest()[:16]


def load_pixels(records: list[Record], spec: PreprocessSpec, cache_dir: Path | None = None,
                workers: int = 2, desc: str = "decode") -> np.ndarray:
    """N x H x W x 3 uint8 for the records, from the disk cache when it matches."""
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"pixels-{cache_key(spec, records)}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
    jobs = [(spec.to_dict(), str(r.path)) for r in records]
    h, w = spec.input_size
    out = np.empty((len(records), h, w, 3), np.uint8)
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as pool:
            for i, arr in enumerate(tqdm(pool.map(_decode, jobs, chunksize=64), total=len(jobs), desc=desc)):
                out[i] = arr
    else:
        for i, job in enumerate(tqdm(jobs, desc=desc, disable=len(jobs) < 200)):
            out[i] = _decode(job)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(cache_file)
    return out
