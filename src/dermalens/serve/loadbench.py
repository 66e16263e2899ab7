"""Load benchmark of a running (or freshly started) dermalens server: prints figures only.

    python -m dermalens.serve.loadbench --requests 10000 --concurrency 16

A minimal asyncio HTTP/1.1 keep-alive client (so the client itself costs little CPU on the
same machine) posts one HAM10000 image per request to /predict.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..defaults import DEFAULT_MODEL

DEFAULT_IMAGE = "tests/fixtures/fullres/ISIC_0024311.jpg"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tree_rss_mb(pid: int) -> float:
    """RSS of a server and its worker processes."""
    total = rss_mb(pid)
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        kids = []
    return total + sum(tree_rss_mb(int(k)) for k in kids)


async def _worker(host, port, body: bytes, n: int, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(n):
        t = time.perf_counter()
        writer.write(head + body)
        await writer.drain()
        status_line = await reader.readline()
        length, close = 0, status_line.startswith(b"HTTP/1.0")
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            close = close or line.lower().replace(b" ", b"").startswith(b"connection:close")
        payload = await reader.readexactly(length)
        latencies.append(time.perf_counter() - t)
        if b" 200 " not in status_line or b'"success":true' not in payload.replace(b" ", b""):
            errors.append(status_line.decode(errors="replace").strip())
        if close:  # a server without keep-alive (Flask's own server): connect again, as any client would
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
    writer.close()


async def _run(url: str, body: bytes, requests: int, concurrency: int):
    u = urlparse(url)
    latencies, errors = [], []
    per = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    t = time.perf_counter()
    await asyncio.gather(*(_worker(u.hostname, u.port, body, n, latencies, errors) for n in per if n))
    return time.perf_counter() - t, latencies, errors


def request_body(image: Path) -> bytes:
    return json.dumps({"image": base64.b64encode(image.read_bytes()).decode()}).encode()


def measure(url: str, body: bytes, requests: int, concurrency: int) -> dict:
    dt, lat, errors = asyncio.run(_run(url, body, requests, concurrency))
    ms = np.asarray(lat) * 1000
    return {"requests": requests, "seconds": round(dt, 2), "requests_per_s": round(requests / dt, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "errors": len(errors)}


def start_server(cmd: list[str], url: str, timeout_s: float = 120) -> subprocess.Popen:
    """Start a server process and wait until GET /health answers."""
    import urllib.request
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise SystemExit(f"{' '.join(cmd)}: server did not start (exit code {proc.poll()})")
            time.sleep(0.2)


def bench(url: str, image: Path, requests: int, concurrency: int, server_pid: int | None) -> dict:
    body = request_body(image)
    # warm-up at both concurrencies, so RSS growth below measures leaks, not first-use allocation
    asyncio.run(_run(url, body, 50, 1))
    asyncio.run(_run(url, body, 400, concurrency))
    rss_before = tree_rss_mb(server_pid) if server_pid else None
    out = {}
    for c, n in ((1, min(500, requests)), (concurrency, requests)):
        out[f"concurrency_{c}"] = measure(url, body, n, c)
    if server_pid:
        after = tree_rss_mb(server_pid)
        out["rss_mb"] = {"before": round(rss_before, 1), "after": round(after, 1),
                         "growth_percent": round(100 * (after - rss_before) / rss_before, 1)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server; default: start one on 127.0.0.1:8765")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="default: a 600x450 JPEG (the targets' size)")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args(argv)
    proc = None
    url = a.url
    if url is None:
        url = "http://127.0.0.1:8765"
        proc = start_server([sys.executable, "-m", "dermalens.cli", "serve", "--port", "8765", "--model",
                             a.model, "--workers", str(a.workers)], url)
    try:
        import urllib.request
        runtime = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read()).get("runtime")
        res = bench(url, Path(a.image), a.requests, a.concurrency, proc.pid if proc else None)
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    print(f"server {url} ({a.workers} worker(s)), image {a.image}, runtime {runtime}")
    for k, v in res.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
