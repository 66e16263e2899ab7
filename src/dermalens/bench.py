"""Inference benchmarks: prints figures, asserts nothing.

    python -m dermalens.bench --model models/dermalens-lite2 --images DIR

Single-image latency (p50/p95) for preprocessing, inference, inference + TTA and Grad-CAM;
preprocessing of a 12-megapixel JPEG (a dermoscope's size, made by upscaling the first image)
with the reduced-scale decode and, for comparison, with a full decode; batch throughput over a
folder of full-size JPEGs (decode + preprocess + inference); each graph's forward pass on one core;
peak RSS.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from .argtypes import positive
from .defaults import DEFAULT_MODEL, bench_images


def _percentiles(samples_s: list[float]) -> dict:
    a = np.asarray(samples_s) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "n": len(a)}


def _time(fn, repeat: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return _percentiles(out)


def _twelve_megapixel_jpeg(path: Path) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(model: str, images: str, repeat: int = 200, batch_size: int = 4, threads: int | None = None) -> dict:
    from .inference import Predictor
    from .inference.gradcam import gradcam, overlay, to_png
    from .preprocess import ImageError, load_rgb
    if not Path(images).is_dir():
        raise SystemExit(f"error: --images {images}: not a folder of JPEG/PNG images")
    paths = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rss_start = peak_rss_mb()
    t_load = time.perf_counter()
    pred = Predictor(model, threads=threads)
    load_s = time.perf_counter() - t_load  # what every command and server start pays once
    b = pred.bundle
    readable = []
    for p in paths:
        try:
            pred.load(p)
            readable.append(p)
        except ImageError as e:  # timed images must all be images, or the figures time error paths
            print(f"warning: left out {p}: {e}", file=sys.stderr)
    if not readable:
        raise SystemExit(f"error: {images}: no readable JPEG/PNG image to benchmark with")
    paths = readable
    data = [p.read_bytes() for p in paths]
    big = _twelve_megapixel_jpeg(paths[0])
    one = pred.load(data[0])
    _, feats = b.run(one[None])
    i = iter(range(10**9))

    from PIL import Image
    first = Image.open(paths[0])
    results = {
        "model": f"{b.card['name']} {b.card['version']} ({b.card['backbone']['name']}, input "
                 f"{b.spec.input_size[0]}x{b.spec.input_size[1]})",
        "image_size": list(map(int, first.size)),
        "image_format": first.format,
        "images_timed": len(paths),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, {b.model.runtime} {b.model.precision} "
                   f"({b.model.mode}-tuned; {len(b.members) + (b.gate is not None)} graphs per image side by side, "
                   f"{b.model.threads} thread(s) each)",
        "runtime": b.model.describe(),
        "single_image": {
            "preprocess (decode + resize)": _time(lambda: pred.load(data[next(i) % len(data)]), repeat),
            "inference, first network (normalise + forward)": _time(lambda: b.run(one[None]), repeat),
            "inference, every network (probabilities)": _time(lambda: b.probabilities(one[None]), repeat),
            "inference + TTA": _time(lambda: pred.forward(one[None], tta=True), max(1, repeat // 2)),
            "Grad-CAM (+ overlay PNG)": _time(lambda: to_png(overlay(one, gradcam(feats[0], b.head_weight, 0,
                                                                                 b.spec.input_size))), repeat),
            "end to end (file bytes -> Prediction)": _time(lambda: pred.predict(data[next(i) % len(data)]), repeat),
            "preprocess 12 MP JPEG (reduced-scale decode)": _time(lambda: pred.load(big),
                                                                  max(10, repeat // 10), warmup=2),
            "preprocess 12 MP JPEG (full decode)": _time(
                lambda: np.asarray(b.spec.resize_image(load_rgb(big))), max(10, repeat // 10),
                warmup=2),
        },
    }
    # Batch: the folder pipeline of `dermalens predict` (parallel decode, throughput-tuned runtime).
    from .inference.pipeline import predict_stream
    n_total = max(len(paths), 512)
    order = [data[k % len(data)] for k in range(n_total)]
    fast = Predictor(b.path, threads=threads, mode="throughput")
    t = time.perf_counter()
    for _ in predict_stream(fast, order, batch_size=batch_size):
        pass
    dt = time.perf_counter() - t
    results["batch"] = {"images": n_total, "batch_size": batch_size, "seconds": round(dt, 2),
                        "images_per_s": round(n_total / dt, 1)}
    # What each graph costs one core (throughput-tuned: one thread per request), the floor under any throughput.
    graphs = {m.name: (lambda m=m: m.run(one[None])) for m in fast.bundle.members}
    if fast.bundle.gate is not None:
        graphs["image-type check"] = lambda: fast.bundle.gate.features(one[None])
    results["one_core_per_graph"] = {name: _time(fn, max(1, repeat // 2)) for name, fn in graphs.items()}
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["rss_before_model_mb"] = round(rss_start, 1)
    results["bundle_load_s"] = round(load_s, 2)
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--images", help="folder of JPEG/PNG images (default: dermalens.defaults.bench_images)")
    ap.add_argument("--repeat", type=positive, default=200, help="timed runs of each step (200)")
    ap.add_argument("--batch-size", type=positive, default=4)
    ap.add_argument("--threads", type=positive, default=None, help="cores the graphs of an image share (default: all cores)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    if a.json and not Path(a.json).resolve().parent.is_dir():  # found before the run, not after it
        raise SystemExit(f"error: --json {a.json}: its folder does not exist")
    if not a.images:
        found, where = bench_images()
        print(where)
        if found is None:
            raise SystemExit("error: no images to benchmark with; pass --images DIR")
        a.images = str(found)
    from .inference import BundleError
    try:
        res = run(a.model, a.images, a.repeat, a.batch_size, a.threads)
    except BundleError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"model:   {res['model']}\nmachine: {res['machine']}\nimages:  {res['images_timed']}, the first {res['image_size'][0]}x{res['image_size'][1]} {res['image_format']}")
    print(f"  bundle load (every graph compiled, first in this process) {res['bundle_load_s']:.2f} s")
    for k, v in res["single_image"].items():
        print(f"  {k:46s} p50 {v['p50_ms']:7.2f} ms   p95 {v['p95_ms']:7.2f} ms")
    bt = res["batch"]
    print(f"  batch throughput (decode+preprocess+infer) {bt['images_per_s']:7.1f} images/s "
          f"({bt['images']} images, batch {bt['batch_size']})")
    for k, v in res["one_core_per_graph"].items():
        print(f"  one core: {k:36s} p50 {v['p50_ms']:7.2f} ms")
    print(f"  peak RSS {res['peak_rss_mb']:.0f} MB")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
