"""`dermalens serve`: uvicorn with N worker processes, each loading the model once."""
from __future__ import annotations

import os
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
    print(f"dermalens: http://{host}:{port}/  (API docs: http://{host}:{port}/docs)", file=sys.stderr)
    uvicorn.run("dermalens.serve.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_keep_alive=5, limit_concurrency=256)
