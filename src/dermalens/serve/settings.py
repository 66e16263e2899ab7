"""Server settings, from environment variables (so every uvicorn worker sees the same)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..defaults import DEFAULT_MODEL
from ..paths import cannot_write_in
from ..preprocess import DEFAULT_MAX_PIXELS, max_pixels_setting


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value > 2**31 - 1:  # larger ones overflow the timer or the runtime's thread count on every request
        raise SystemExit(f"{name} must be at most {2**31 - 1}, got {raw.strip()}")
    return value


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    max_body_bytes: int = 15 * 1024 * 1024  # a 10 MB image is ~13.4 MB as base64
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = 12_000
    max_batch: int = 16
    timeout_s: int = 30
    api_key: str | None = None  # when set, /predict* need the X-API-Key header
    upload_dir: str | None = None  # uploads are written to disk only when this is set
    threads: int = 0  # cores the graphs of an image share; 0 = every core this process may use
    max_queue: int = 64  # requests admitted at once; more are refused with 503 (not left waiting)
    infer_mode: str = "latency"  # runtime tuning (inference.runtime): "latency" or "throughput"

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        s = cls(
            model=os.environ.get("DERMALENS_MODEL", cls.model),
            max_body_bytes=_int("DERMALENS_MAX_BODY_BYTES", cls.max_body_bytes),
            max_pixels=at_start_up(max_pixels_setting),  # the same reader as the CLI, desktop app and Dask workers
            max_side=_int("DERMALENS_MAX_SIDE", cls.max_side),
            max_batch=_int("DERMALENS_MAX_BATCH", cls.max_batch),
            timeout_s=_int("DERMALENS_TIMEOUT_S", cls.timeout_s),
            api_key=at_start_up(api_key_from_env),
            upload_dir=str(Path(os.environ["DERMALENS_UPLOAD_DIR"]).expanduser()) if os.environ.get(
                "DERMALENS_UPLOAD_DIR", "").strip() else None,  # ~/uploads is the home folder's, as in a shell
            threads=_int("DERMALENS_THREADS", cls.threads),
            max_queue=_int("DERMALENS_MAX_QUEUE", cls.max_queue),
            infer_mode=os.environ.get("DERMALENS_INFER_MODE", "").strip().lower() or cls.infer_mode,  # as RUNTIME
        )
        if s.infer_mode not in ("latency", "throughput"):
            raise SystemExit(f"DERMALENS_INFER_MODE must be latency or throughput, got {s.infer_mode!r}")
        for name, value, least in (("MAX_BODY_BYTES", s.max_body_bytes, 1), ("MAX_SIDE", s.max_side, 1),
                                   ("MAX_BATCH", s.max_batch, 1), ("TIMEOUT_S", s.timeout_s, 1), ("MAX_QUEUE", s.max_queue, 1),
                                   ("THREADS", s.threads, 0)):
            if value < least:
                raise SystemExit(f"DERMALENS_{name} must be at least {least}, got {value}")
        _check_runtime()
        if s.upload_dir:
            _check_writable(s.upload_dir)
        return cls(**{**s.__dict__, **overrides})


def at_start_up(read):
    """read(), where a ValueError stops start-up with its message, as every other setting does."""
    try:
        return read()
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _check_runtime() -> None:
    """A misspelt DERMALENS_RUNTIME or _PRECISION stops start-up, as DERMALENS_INFER_MODE does, not every request."""
    from ..inference import runtime as rt
    try:
        if os.environ.get("DERMALENS_RUNTIME", "").strip():
            rt.choose_runtime()
        if os.environ.get("DERMALENS_PRECISION", "").strip():
            rt.choose_precision(rt.choose_runtime())
    except rt.RuntimeUnavailable as e:
        raise SystemExit(str(e)) from None


def api_key_from_env() -> str | None:
    """DERMALENS_API_KEY as the server uses it (None when unset or empty); every reader of it calls this one.
    ValueError for a key no header can carry: HTTP drops whitespace around a header value and browsers send only
    Latin-1, so such a key would match nothing."""
    raw = os.environ.get("DERMALENS_API_KEY")
    if not raw:
        return None
    key = raw.strip()  # a secret file's trailing newline
    if not key or not all(" " <= ch <= "~" for ch in key):
        raise ValueError("DERMALENS_API_KEY must be printable ASCII (letters, digits, punctuation, inner spaces) "
                         "to travel in the X-API-Key header; the key set is not (not shown here)")
    return key


def _check_writable(folder: str) -> None:
    """Fail at start-up, not on every request, when uploads cannot be kept where DERMALENS_UPLOAD_DIR says."""
    try:
        os.makedirs(folder, exist_ok=True)
        why = cannot_write_in(folder)
    except OSError as e:
        why = e.strerror or str(e)
    if why:
        raise SystemExit(f"DERMALENS_UPLOAD_DIR={folder}: uploads cannot be written there ({why})")
