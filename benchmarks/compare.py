"""`make bench-compare`: dermalens against a seed-style reference server, side by side, in one run.

Starts `dermalens serve` and benchmarks/reference_server.py (Flask + eager PyTorch + Pillow per request)
on loopback, sends the same 600x450 JPEG as base64 JSON to POST /predict of each at concurrency 1 and
16, and prints p50s, throughputs and their ratios, plus the runtime's forward-only figures (the
machine's limit for this network: what is left once HTTP, decoding and resizing cost nothing).

    python benchmarks/compare.py --requests 2000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from dermalens import DEFAULT_MODEL
from dermalens.argtypes import positive
from dermalens.paths import image_argument
from dermalens.serve.loadbench import DEFAULT_IMAGE, measure, request_body, start_server

HERE = Path(__file__).resolve().parent


def forward_only(model: str, seconds: float = 5.0) -> dict:
    """The features member's graph alone on every core: batch-1 latency (latency-tuned) and images/s with
    requests in flight (throughput-tuned). In the bundle each image's graphs share the cores instead."""
    from dermalens.inference import load_bundle
    from dermalens.inference import runtime as rt
    member = load_bundle(model).features_member
    out = {}
    for mode in ("latency", "throughput"):
        b = rt.compile(member.model.path, mode=mode, views=(member.mean, member.std))
        x = {"image": np.zeros((1, *member.input_size, 3), np.uint8)}  # the runtime normalises it
        for _ in range(5):
            b.run(x)
        if mode == "latency":
            t, lat = time.perf_counter(), []
            while time.perf_counter() - t < seconds:
                s = time.perf_counter()
                b.run(x)
                lat.append(time.perf_counter() - s)
            out["latency_p50_ms"] = round(1000 * float(np.median(lat)), 2)
        else:
            n, t = 0, time.perf_counter()
            window = [b.submit(x) for _ in range(2 * b.in_flight)]
            while time.perf_counter() - t < seconds:
                window.pop(0).result()
                window.append(b.submit(x))
                n += 1
            for f in window:
                f.result()
            out["throughput_images_per_s"] = round(n / (time.perf_counter() - t), 1)
        out.update(runtime=b.runtime, precision=b.precision, network=member.name)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--checkpoint", default="checkpoints/lite2_224x300_distill_cpu",
                    help="the same network as a training checkpoint, for the reference server")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--requests", type=positive, default=2000,
                    help="per server at concurrency 16 (a quarter, at least 50, at 1)")
    ap.add_argument("--concurrency", type=positive, default=16)
    a = ap.parse_args(argv)
    # checked before any server starts, so a wrong path does not cost a dermalens run first
    size = "x".join(map(str, image_argument(a.image)))
    if not Path(a.checkpoint).exists():
        raise SystemExit(f"error: --checkpoint {a.checkpoint}: not found (the reference server loads it)")
    from dermalens.inference.bundle import read_card
    from dermalens.preprocess import PreprocessSpec
    h, w = PreprocessSpec.from_dict(read_card(Path(a.model))["preprocessing"]).input_size
    servers = {
        "dermalens": [sys.executable, "-m", "dermalens.cli", "serve", "--port", "8765", "--model", a.model],
        "reference": [sys.executable, str(HERE / "reference_server.py"), "--port", "8766",
                      "--checkpoint", a.checkpoint, "--input-size", f"{h}x{w}"],
    }
    body, res = request_body(Path(a.image)), {}
    counts = {1: max(50, a.requests // 4), a.concurrency: a.requests}
    for name, cmd in servers.items():
        url = f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"
        proc = start_server(cmd, url)
        try:
            measure(url, body, 20, 1)  # warm-up
            res[name] = {c: measure(url, body, n, c) for c, n in counts.items()}
        finally:
            proc.terminate()
            proc.wait()
    fwd = forward_only(a.model)
    print(f"image {a.image} ({size}); dermalens runtime {fwd['runtime']} {fwd['precision']}; requests per server: "
          + ", ".join(f"{n} at c={c}" for c, n in counts.items()))
    print(f"{'':24s} {'dermalens':>12s} {'reference':>12s} {'ratio':>8s}  (ratio > 1: dermalens better)")
    for c in counts:
        d, r = res["dermalens"][c], res["reference"][c]
        print(f"p50 ms, c={c:<2d}             {d['p50_ms']:12.1f} {r['p50_ms']:12.1f} {r['p50_ms'] / d['p50_ms']:7.1f}x")
        print(f"p99 ms, c={c:<2d}             {d['p99_ms']:12.1f} {r['p99_ms']:12.1f} {r['p99_ms'] / d['p99_ms']:7.1f}x")
        print(f"requests/s, c={c:<2d}         {d['requests_per_s']:12.1f} {r['requests_per_s']:12.1f} "
              f"{d['requests_per_s'] / r['requests_per_s']:7.1f}x")
        print(f"errors, c={c:<2d}             {d['errors']:12d} {r['errors']:12d}")
    print(f"forward only, {fwd['network']} alone on every core (no HTTP, decode or resize): batch 1 p50 {fwd['latency_p50_ms']} ms, "
          f"{fwd['throughput_images_per_s']} images/s with requests in flight")


if __name__ == "__main__":
    main()
