"""Where predictions come from: the bundle in-process (local) or a dermalens server (remote).

Both return the REST API's response shape, so the window shows either the same way.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


class BackendError(Exception):
    """A prediction that could not be made; the message is shown to the user."""


class NotDermalens(BackendError):
    """Something answered at the URL, but not a dermalens server (another program on that port, a proxy's page)."""


URL_EXAMPLE = "--api needs a URL such as http://127.0.0.1:8000"


def check_url(url) -> str:
    """The server URL without a trailing slash; BackendError saying what a URL looks like otherwise."""
    text = (url or "").strip() if isinstance(url, str) else ""
    if not text:
        raise BackendError(f"{URL_EXAMPLE}; it was empty")
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as e:
        raise BackendError(f"{URL_EXAMPLE}; {text!r} is not a URL ({e})") from None
    if "://" not in text:
        raise BackendError(f"{URL_EXAMPLE}; {text!r} has no http:// in front (try http://{text})")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(f"{URL_EXAMPLE} (http:// or https:// and a host); got {text!r}")
    return text.rstrip("/")


class LocalBackend:
    def __init__(self, model: str | Path):
        from ..inference import BundleError, Predictor
        try:
            self.predictor = Predictor(model)
        except BundleError as e:
            raise BackendError(f"cannot load the model: {e}") from None
        except Exception as e:  # a damaged bundle can fail in onnxruntime, numpy or zipfile: still a message
            raise BackendError(f"cannot load the model {model}: {e or type(e).__name__} ({type(e).__name__})") from None
        self.description = f"local model {self.predictor.model_info['name']} {self.predictor.model_info['version']}"

    def predict(self, path: str | Path, explain: bool = True, tta: bool = False, metadata: dict | None = None) -> dict:
        """`metadata`: the API's {"age", "sex", "site"} (any may be missing)."""
        from ..inference.metadata import MetadataError, PatientMetadata
        from ..preprocess import ImageError
        try:
            meta = PatientMetadata.from_mapping(metadata) if metadata else None
            return {"success": True, **self.predictor.predict(path, tta=tta, explain=explain,
                                                              metadata=meta).to_dict()}
        except (ImageError, MetadataError) as e:
            raise BackendError(str(e)) from None


class RemoteBackend:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60):
        self.url = check_url(url)
        self.api_key, self.timeout = api_key, timeout
        try:
            health = self._request("GET", "/health", answers=(503,))  # 503: up, without a model
        except NotDermalens:
            raise
        except BackendError as e:
            raise BackendError(f"cannot reach the dermalens server at {self.url}: {e}") from None
        if not isinstance(health, dict) or "model_loaded" not in health:
            raise self._not_dermalens("/health", "no model_loaded in its answer")
        if not health.get("model_loaded"):
            why = f" ({health['error']})" if health.get("error") else ""
            raise BackendError(f"the server at {self.url} has no model loaded{why}")
        m = health.get("model") or {}
        self.description = f"server {self.url} ({m.get('name')} {m.get('version')})"

    def _not_dermalens(self, path: str, detail: str) -> "NotDermalens":
        return NotDermalens(f"{self.url} answered {path}, but not as a dermalens server does ({detail}); "
                            "is --api the address of `dermalens serve`?")

    def _request(self, method: str, path: str, body: dict | None = None, answers: tuple = ()) -> dict:
        """The JSON answer; BackendError with the server's message for an error status not in `answers`."""
        data = json.dumps(body).encode() if body is not None else None
        try:
            req = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
            if self.api_key:
                req.add_header("X-API-Key", self.api_key)
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                answer = json.loads(e.read())
            except Exception:
                answer = {}
            err = answer.get("error") if isinstance(answer, dict) else None
            if e.code in answers and isinstance(answer, dict) and answer:
                return answer
            if not (isinstance(err, dict) and "message" in err):  # every dermalens error carries one; a proxy's may not
                status = f"HTTP {e.code} {e.reason}"
                raise (self._not_dermalens(path, status) if path == "/health" else BackendError(status)) from None
            msg = err["message"]
            if e.code == 401:  # the desktop app sends the key it finds where the server reads it
                msg += "; start dermalens gui with DERMALENS_API_KEY set to the server's key"
            raise BackendError(msg) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError):  # "timed out" alone does not say what waited for what
                raise BackendError(f"{self.url} did not answer within {self.timeout:g} s") from None
            raise BackendError(str(reason)) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise self._not_dermalens(path, "its answer is not JSON") from None

    def predict(self, path: str | Path, explain: bool = True, tta: bool = False, metadata: dict | None = None) -> dict:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise BackendError(f"{path}: {e.strerror or e}") from None
        body = {"image": base64.b64encode(raw).decode(), "explain": explain, "tta": tta}
        if metadata:
            body["metadata"] = {k: v for k, v in metadata.items() if v not in (None, "")}
        answer = self._request("POST", "/predict", body)
        if not (isinstance(answer, dict) and isinstance(answer.get("quality"), dict)
                and isinstance(answer.get("risk"), dict)):  # the window reads these from every answer
            raise self._not_dermalens("/predict", "no quality or risk in its answer")
        return answer
