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
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..argtypes import positive
from ..defaults import DEFAULT_MODEL, fixture_images
from .settings import api_key_from_env, at_start_up

# found from the checkout, so the default works from any folder
DEFAULT_IMAGE = str((fixture_images() or Path("tests/fixtures/fullres")) / "ISIC_0024311.jpg")


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


async def _worker(host, port, body: bytes, n: int, latencies: list, errors: list, api_key: str | None = None):
    reader, writer = await asyncio.open_connection(host, port)
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""  # a server with DERMALENS_API_KEY refuses requests without it
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{key}"
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


async def _run(url: str, body: bytes, requests: int, concurrency: int, api_key: str | None = None):
    u = urlparse(url)
    latencies, errors = [], []
    per = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    key = at_start_up(api_key_from_env) if api_key is None else api_key  # the key a started server reads, as it does
    t = time.perf_counter()
    await asyncio.gather(*(_worker(u.hostname, u.port or 80, body, n, latencies, errors, key) for n in per if n))
    return time.perf_counter() - t, latencies, errors


def request_body(image: Path) -> bytes:
    return json.dumps({"image": base64.b64encode(image.read_bytes()).decode()}).encode()


def measure(url: str, body: bytes, requests: int, concurrency: int, api_key: str | None = None) -> dict:
    dt, lat, errors = asyncio.run(_run(url, body, requests, concurrency, api_key))
    if errors and len(errors) == requests:  # figures of error answers would pass for the server's speed
        raise SystemExit(f"error: all {requests} requests to {url}/predict failed, the first with {errors[0]!r}")
    ms = np.asarray(lat) * 1000
    return {"requests": requests, "seconds": round(dt, 2), "requests_per_s": round(requests / dt, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "errors": len(errors)}


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # runs the caller's finally, which stops the started server


def start_server(cmd: list[str], url: str, timeout_s: float = 120) -> subprocess.Popen:
    """Start a server process and wait until GET /health answers 200; on failure say why, leaving nothing running."""
    import tempfile
    import urllib.error
    import urllib.request
    u = urlparse(url)
    with socket.socket() as s:  # whatever listens there would answer /health in place of the server started here
        if s.connect_ex((u.hostname, u.port)) == 0:
            raise SystemExit(f"error: port {u.port} is already in use; stop what listens there first")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + timeout_s
    try:
        while True:
            why = f"exit code {proc.poll()}" if proc.poll() is not None else None
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                if why is None:
                    return proc
            except urllib.error.HTTPError as e:  # up but unhealthy (dermalens without a model: 503, the body says why)
                why = f"GET /health answered {e.code}: {e.read()[:500].decode(errors='replace')}"
            except OSError:
                pass
            if why is None and time.time() > deadline:
                why = f"no answer to GET /health within {timeout_s:.0f} s"
            if why:
                proc.kill()
                proc.wait()
                log.seek(0)
                tail = "\n".join(log.read().decode(errors="replace").strip().splitlines()[-5:])
                raise SystemExit(f"error: {' '.join(cmd)}: server did not start ({why})" + (f"\n{tail}" if tail else ""))
            time.sleep(0.2)
    except BaseException:
        if proc.poll() is None:  # Ctrl-C while waiting: do not leave the server running
            proc.kill()
            proc.wait()
        raise
    finally:
        log.close()


def bench(url: str, image: Path, requests: int, concurrency: int, server_pid: int | None,
          api_key: str | None = None) -> dict:
    body = request_body(image)
    # warm-up at both concurrencies, so RSS growth below measures leaks, not first-use allocation
    # (no more than the run itself, so a short run stays short)
    asyncio.run(_run(url, body, min(50, requests), 1, api_key))
    asyncio.run(_run(url, body, min(400, requests), concurrency, api_key))
    rss_before = tree_rss_mb(server_pid) if server_pid else None
    out = {}
    for c, n in ((1, min(500, requests)), (concurrency, requests)):
        out[f"concurrency_{c}"] = measure(url, body, n, c, api_key)
    if server_pid:
        after = tree_rss_mb(server_pid)
        out["rss_mb"] = {"before": round(rss_before, 1), "after": round(after, 1),
                         "growth_percent": round(100 * (after - rss_before) / rss_before, 1)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server; default: start one on 127.0.0.1:8765")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--workers", type=positive, default=1, help="of the server started here (1)")
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="default: a 600x450 JPEG (the targets' size)")
    ap.add_argument("--requests", type=positive, default=10000, help="at the higher concurrency (10000; at 1: up to 500)")
    ap.add_argument("--concurrency", type=positive, default=16)
    ap.add_argument("--api-key", help="sent as X-API-Key (default: $DERMALENS_API_KEY)")
    a = ap.parse_args(argv)
    from ..paths import image_argument
    size = "x".join(map(str, image_argument(a.image)))  # before a server starts, as the benchmark scripts check it
    if a.url and (urlparse(a.url).scheme != "http" or not urlparse(a.url).hostname):
        raise SystemExit(f"error: --url {a.url}: expected http://HOST[:PORT] (the client speaks plain HTTP)")
    proc = None
    url = a.url.rstrip("/") if a.url else None
    if url is None:
        url = "http://127.0.0.1:8765"
        proc = start_server([sys.executable, "-m", "dermalens.cli", "serve", "--port", "8765", "--model",
                             a.model, "--workers", str(a.workers)], url)
    try:
        import urllib.request
        try:
            runtime = json.loads(urllib.request.urlopen(url + "/health", timeout=5).read()).get("runtime")
        except (OSError, ValueError, AttributeError) as e:
            raise SystemExit(f"error: {url}/health: {e} (is a dermalens server running there?)") from None
        res = bench(url, Path(a.image), a.requests, a.concurrency, proc.pid if proc else None, a.api_key)
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    server = f"started here, {a.workers} worker(s)" if proc else "already running"
    print(f"server {url} ({server}), image {a.image} ({size}), runtime {runtime}")
    for k, v in res.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
