"""`dermalens serve`: uvicorn with N worker processes, each loading the model once."""
from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from ..defaults import DEFAULT_MODEL
from .settings import Settings


def run_server(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, model: str | None = None,
               log_level: str = "info") -> None:
    import uvicorn
    if model:
        os.environ["DERMALENS_MODEL"] = str(Path(model).resolve())  # workers read their settings from env
    if not Path(os.environ.get("DERMALENS_MODEL", DEFAULT_MODEL)).is_dir():
        print(f"warning: model bundle {os.environ.get('DERMALENS_MODEL')} not found; the app starts and "
              "says so at /health, but cannot predict", file=sys.stderr)
    Settings.from_env()  # a bad DERMALENS_* setting stops here with its message, before the address is printed
    check_address(host, port)  # uvicorn loads the model first and binds after: a wrong --host would cost that wait
    print(f"dermalens: http://{host}:{port}/  (API docs: http://{host}:{port}/docs)", file=sys.stderr)
    uvicorn.run("dermalens.serve.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_keep_alive=5, limit_concurrency=256)


def check_address(host: str, port: int) -> None:
    """Resolve `host` and bind `port` on each of its addresses as uvicorn (asyncio's create_server) will, then let
    go: ValueError naming the host or port and what to do when that cannot be done."""
    where = f"--host {host} (or DERMALENS_HOST)"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) and e.strerror else str(e)
        raise ValueError(f"{where}: cannot be resolved ({why}); give this machine's name or one of its addresses, "
                         "such as 127.0.0.1 (this machine only) or 0.0.0.0 (every network interface)") from None
    sockets = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closing connection is no bar
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                raise ValueError(_cannot_bind(where, host, port, address[0], e)) from None
    finally:
        for sock in sockets:
            sock.close()


def _cannot_bind(where: str, host: str, port: int, address: str, e: OSError) -> str:
    shown = host if host == address else f"{host} ({address})"
    if e.errno == errno.EADDRINUSE:
        return (f"port {port} is in use on {shown} (another server, perhaps another dermalens serve, listens "
                "there); stop it or give another --port (or DERMALENS_PORT)")
    if e.errno == errno.EADDRNOTAVAIL:
        return (f"{where}: {shown} is not an address of this machine, so nothing can be served on it; give one "
                "of its own, such as 127.0.0.1 (this machine only) or 0.0.0.0 (every network interface)")
    if e.errno == errno.EACCES:
        return (f"port {port} on {shown}: permission denied (ports below 1024 need special rights); give a "
                "--port (or DERMALENS_PORT) of 1024 or more")
    return f"cannot serve on {shown} port {port} ({e.strerror or e}); check --host and --port"
