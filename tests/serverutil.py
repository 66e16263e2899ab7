"""Start a real `dermalens serve` on a free loopback port for tests."""
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model, env_extra=None, workers=1):
    port = free_port()
    env = dict(os.environ, **(env_extra or {}))
    log = open(os.devnull, "w")
    proc = subprocess.Popen([sys.executable, "-m", "dermalens.cli", "serve", "--port", str(port), "--model",
                             str(model), "--workers", str(workers)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code in (200, 503):  # 503: up, without a model
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start (exit code {proc.poll()})")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
