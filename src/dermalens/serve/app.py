"""FastAPI application: the web UI at `/`, the REST API under `/predict` and `/health`.

Errors are always JSON `{"success": false, "error": {"code", "message"}}`: 400 for bad
base64 or a non-image, 401 for a missing/wrong API key, 413 for too large, 415 for an
unsupported type, 422 for a body that does not match the schema, 503 without a model,
504 on timeout. Handlers never let an exception turn into a stack trace.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import DISCLAIMER, __version__
from ..inference import BundleError, Predictor
from ..inference import runtime as rt
from ..inference.metadata import MAX_AGE, SEXES, SITES, UNKNOWN, MetadataError, PatientMetadata, normalise_word
from ..preprocess import FORMAT_NAMES, ImageError, ImageTooLarge, UnsupportedImageType, upright_size
from .decode import ApiError, accepted_type, decode_image_string
from .settings import Settings

log = logging.getLogger("dermalens.serve")
UPLOAD_FIELDS = {"file", "tta", "explain", "age", "sex", "site"}  # /predict/upload's form
STATIC = Path(__file__).parent / "static"


class Metadata(BaseModel):
    """Optional patient details; any may be left out (or 'unknown') and is then marginalised, not guessed."""
    model_config = ConfigDict(extra="forbid")
    age: float | None = Field(None, ge=0, le=MAX_AGE, allow_inf_nan=False, description="age in years")
    sex: Literal[SEXES + (UNKNOWN,)] | None = None
    site: Literal[SITES + (UNKNOWN,)] | None = Field(None, description="body site (HAM10000 localization)")

    @field_validator("age", mode="before")
    @classmethod
    def _not_a_boolean(cls, v):
        if isinstance(v, bool):  # pydantic would read true as age 1
            raise ValueError("age must be a number of years, not true or false")
        return v

    @field_validator("sex", "site", mode="before")
    @classmethod
    def _as_the_upload_form_reads_them(cls, v):
        return normalise_word(v) if isinstance(v, str) else v

    def parsed(self) -> PatientMetadata:
        return PatientMetadata.parse(self.age, self.sex, self.site)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(..., description="Base64 image, raw or as a data URL (data:image/jpeg;base64,...)")
    tta: bool = Field(False, description="Test-time augmentation: the image's flips (and, for a square input, "
                                         "its quarter turns), averaged")
    explain: bool = Field(False, description="Include a Grad-CAM overlay PNG as a data URL")
    metadata: Metadata | None = Field(None, description="optional patient details: age, sex, site")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(..., min_length=1, description="Base64 images or data URLs")
    tta: bool = False
    explain: bool = False
    metadata: list[Metadata | None] | None = Field(None, description="one entry (or null) per image")


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over the limit (413) before the app parses them. A body without a
    Content-Length (chunked) is read up to the limit here first: past the app's own body parsing, an error
    would come back as a vague 400."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._reject(scope, receive, send)
            return await self.app(scope, receive, send)
        messages, seen = [], 0
        while True:
            msg = await receive()
            messages.append(msg)
            if msg["type"] != "http.request":
                break
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                return await self._reject(scope, receive, send)
            if not msg.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()
        await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send):
        ctype = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"").lower()
        if ctype.startswith(b"multipart/"):  # an upload carries the file's own bytes
            advice = f"send an image file of at most {(self.max_bytes - 1024) / 1e6:.1f} MB"
        else:
            advice = (f"an image sent as base64 grows by a third, so send one of at most "
                      f"{image_bytes(self.max_bytes) / 1e6:.1f} MB")
        resp = error_response(413, "payload_too_large",
                              f"the request is larger than this server accepts ({self.max_bytes / 1e6:.1f} MB, "
                              f"{self.max_bytes:,} bytes: DERMALENS_MAX_BODY_BYTES); {advice}, or a smaller copy of it")
        await resp(scope, receive, send)


def image_bytes(max_body_bytes: int) -> int:
    """The largest image file a JSON request of this many bytes carries: base64 takes 4 bytes for 3, and the
    rest of the request (the data URL's header, the other fields) fits in 1 kB."""
    return max(0, (max_body_bytes - 1024) * 3 // 4)


class RequireKey:
    """Pure ASGI middleware: with an API key set, /predict* without the right X-API-Key get 401 before their body
    is read or validated (a request without the key learns nothing about what it sent)."""

    def __init__(self, app, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send):
        if self.key and scope["type"] == "http" and scope.get("path", "").startswith("/predict"):
            given = next((v for k, v in scope.get("headers", []) if k == b"x-api-key"), b"")
            if not secrets.compare_digest(given, self.key.encode()):
                resp = error_response(401, "unauthorized", "missing or wrong X-API-Key header")
                return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


class Engine:
    """The predictor of one worker, loaded once at start-up.

    A request is decoded and predicted in one worker thread (Pillow and the runtime release the GIL; one
    hand-over from the event loop, not two), in a pool sized to the cores and at least two threads (more where
    the runtime runs more requests at once), so requests decode in parallel and one request's decoding and
    numpy work overlap another's networks; the event loop only moves bytes.
    No dynamic batching: on a CPU a batch costs as much per image as single runs, and it made every
    request wait for the slowest of its batch.
    At most `max_queue` requests are admitted at once, each until its work ends (a 504 does not stop a running
    job); more get a 503 at once instead of waiting."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.predictor: Predictor | None = None
        self.error: str | None = None
        self.admitted = 0
        self.lock = threading.Lock()
        self.workers: ThreadPoolExecutor | None = None

    def load(self):
        try:
            self.predictor = Predictor(self.settings.model, threads=self.settings.threads or None,
                                       max_pixels=self.settings.max_pixels, mode=self.settings.infer_mode)
        except (BundleError, OSError) as e:
            self.error = str(e)
            log.error("model not loaded: %s", e)
            return
        self.workers = ThreadPoolExecutor(max(2, rt.cores(self.settings.threads or None),
                                              self.predictor.bundle.model.in_flight),
                                          thread_name_prefix="dermalens-predict")

    def close(self):
        if self.workers:
            self.workers.shutdown(wait=False, cancel_futures=True)

    def admit(self):
        with self.lock:
            if self.admitted >= self.settings.max_queue:
                raise ApiError(503, "overloaded", f"the server is busy ({self.admitted} requests in progress, "
                                                  f"limit {self.settings.max_queue}); retry in a moment")
            self.admitted += 1

    def release(self):
        with self.lock:
            self.admitted -= 1

    def release_when_done(self, jobs: list) -> None:
        """Free a request's admission once every job it started has ended: a job outliving its request (a 504)
        still holds a worker, so MAX_QUEUE counts it."""
        remaining = [len(jobs)]
        lock = threading.Lock()

        def one_done(_):
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                self.release()
        if not jobs:
            self.release()
        for job in jobs:
            job.add_done_callback(one_done)  # at once for a job already done (or cancelled before it started)

    @contextmanager
    def admission(self):
        """Admit one request (a /predict or a whole batch) for the block, yielding the list its worker jobs go in;
        its place is freed once the block has ended and every one of those jobs too."""
        self.require()
        self.admit()
        jobs: list = []
        try:
            yield jobs
        finally:
            self.release_when_done(jobs)

    def require(self) -> Predictor:
        if self.predictor is None:
            raise ApiError(503, "model_unavailable", f"no model loaded ({self.error})")
        return self.predictor

    def decode(self, data: bytes):
        s = self.settings
        try:
            img = self.require().open_image(data)  # the server's limit: Predictor built with max_pixels
        except ImageTooLarge as e:
            raise ApiError(413, "image_too_large", str(e)) from None
        except UnsupportedImageType as e:
            raise ApiError(415, "unsupported_media_type", str(e)) from None
        except ImageError as e:
            raise ApiError(400, "invalid_image", str(e)) from None
        if max(img.width, img.height) > s.max_side:
            raise ApiError(413, "image_too_large",
                           f"image is {img.width}x{img.height}; the longest side may be at most {s.max_side}")
        return img

    def prepare(self, data: bytes):
        """Decode and preprocess: (uint8 view, what the answer says of the image as sent)."""
        predictor = self.require()
        img = self.decode(data)
        width, height = upright_size(img)  # as sent and displayed
        info = {"width": width, "height": height, "format": img.format}
        try:
            pixels, info["read_size"] = predictor.load_sized(img)  # the part the view shows: the heat-map's shape
        except ImageError as e:
            raise ApiError(400, "invalid_image", str(e)) from None
        if self.settings.upload_dir:
            folder = Path(self.settings.upload_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{hashlib.sha256(data).hexdigest()[:24]}.{(img.format or 'bin').lower()}").write_bytes(data)
        return pixels, info

    def infer(self, data: bytes, tta: bool, explain: bool, metadata: PatientMetadata | None = None) -> dict:
        """Bytes -> the API's answer (in a worker thread)."""
        pixels, info = self.prepare(data)
        p = self.predictor.predict_pixels(pixels[None], tta=tta, explain=explain,
                                          source_sizes=[info.pop("read_size")],
                                          metadata=None if metadata is None else [metadata])[0]
        return {"success": True, **p.to_dict(), "image": info}  # to_dict here: the overlay PNG is work too

    async def predict(self, data: bytes, tta: bool, explain: bool, metadata: PatientMetadata | None = None,
                      jobs: list | None = None) -> dict:
        """`jobs`: the admitted request's list of worker jobs (a batch shares one); None admits this one alone."""
        self.require()
        with (self.admission() if jobs is None else nullcontext(jobs)) as jobs:  # a batch admitted its images already
            jobs.append(self.workers.submit(self.infer, data, tta, explain, metadata))
            return await asyncio.wrap_future(jobs[-1])  # cancelled by a timeout: a job not yet started never runs


SEND_AS_JSON = ("send the request body as JSON with the header Content-Type: application/json, such as "
                "{\"image\": \"<base64 or data URL>\"}; or an image file as a form to /predict/upload")


def _declares_json(request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))  # as FastAPI reads


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = Engine(settings)

    @asynccontextmanager
    async def lifespan(app):
        engine.load()
        yield
        engine.close()

    app = FastAPI(title="dermalens API", version=__version__, lifespan=lifespan,
                  description="HAM10000 skin-lesion classifier. " + DISCLAIMER)
    app.state.engine = engine

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        retry = {"Retry-After": "1"} if exc.code == "overloaded" else None
        return error_response(exc.status, exc.code, exc.message, retry)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        kind = first.get("type", "")
        if kind == "json_invalid":
            msg = "the request body is not valid JSON"
        elif kind in ("model_attributes_type", "dict_type") and not where:
            if not _declares_json(request):  # FastAPI reads a body as JSON only when it says so
                return error_response(415, "unsupported_media_type", SEND_AS_JSON)
            msg = "the request body must be a JSON object such as {\"image\": \"<base64 or data URL>\"}"
        else:
            msg = f"{where or 'body'}: {first.get('msg', 'invalid request').removeprefix('Value error, ')}"
        return error_response(422, "invalid_request", msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # the framework could not parse the body: not UTF-8 JSON, a broken multipart form
            return error_response(422, "invalid_request", "the request body is not valid JSON (UTF-8 text)"
                                  if _declares_json(request) else f"the request body cannot be read ({exc.detail})")
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                              getattr(exc, "headers", None))  # a 405 keeps its Allow header

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal_error", "unexpected server error; the request was not processed")

    async def run(data: bytes, tta: bool, explain: bool, metadata: PatientMetadata | None = None,
                  jobs: list | None = None):
        try:
            return await asyncio.wait_for(engine.predict(data, tta, explain, metadata, jobs),
                                          timeout=settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"prediction took longer than {settings.timeout_s} s") from None

    @app.get("/health", tags=["service"], responses={503: {"description": "no model loaded (the body says why)"}})
    async def health():
        p = engine.predictor
        body = {"status": "healthy" if p else "degraded", "model_loaded": p is not None,
                "model": {"name": p.model_info["name"], "version": p.model_info["version"]} if p else None,
                "runtime": p.runtime_info if p else None, "error": engine.error, "version": __version__}
        # 503 without a model: a load balancer or orchestrator must not send it traffic
        return body if p else JSONResponse(body, status_code=503)

    @app.get("/model", tags=["service"])
    async def model_card():
        p = engine.require()
        c = p.bundle.card
        out = {k: c[k] for k in ("name", "version", "classes", "preprocessing", "temperature", "thresholds",
                                 "members", "metrics", "modality", "disclaimer") if k in c}
        if "metadata" in c:  # what a client may send: the accepted values
            out["metadata"] = {k: c["metadata"][k] for k in ("fields", "sexes", "sites", "missing") if k in c["metadata"]}
        return out | {"runtime": p.runtime_info, "limits": {
            "max_body_bytes": settings.max_body_bytes, "max_image_bytes": image_bytes(settings.max_body_bytes),
            "max_pixels": settings.max_pixels, "max_side": settings.max_side, "max_batch": settings.max_batch,
            "timeout_s": settings.timeout_s}}

    @app.post("/predict", tags=["predict"])
    async def predict(body: PredictRequest):
        data = decode_image_string(body.image, settings.max_body_bytes)
        return await run(data, body.tta, body.explain, body.metadata.parsed() if body.metadata else None)

    @app.post("/predict/upload", tags=["predict"])
    async def predict_upload(request: Request, file: UploadFile = File(...), tta: bool = Form(False),
                             explain: bool = Form(False), age: str | None = Form(None),
                             sex: str | None = Form(None), site: str | None = Form(None)):
        try:
            metadata = PatientMetadata.parse(age, sex, site)
        except MetadataError as e:
            raise ApiError(422, "invalid_request", str(e)) from None
        form = await request.form()
        if len(form.getlist("file")) > 1:  # FastAPI would keep the last and drop the others
            raise ApiError(422, "invalid_request", "send one file per request; several images go to /predict/batch")
        unknown = sorted(set(form.keys()) - UPLOAD_FIELDS)
        if unknown:  # a misspelt field ("Age", "location") would otherwise be dropped without a word
            raise ApiError(422, "invalid_request", f"unknown form field(s) {unknown}; accepted: {sorted(UPLOAD_FIELDS)}")
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if not accepted_type(ctype):
            raise ApiError(415, "unsupported_media_type",
                           f"file type {ctype!r} is not supported; send {FORMAT_NAMES}")
        data = await file.read()
        if not data:
            raise ApiError(400, "empty_image", "the uploaded file is empty")
        return await run(data, tta, explain, metadata if metadata.present else None)

    @app.post("/predict/batch", tags=["predict"])
    async def predict_batch(body: BatchRequest):
        if len(body.images) > settings.max_batch:
            raise ApiError(413, "batch_too_large", f"at most {settings.max_batch} images per batch")
        if body.metadata is not None and len(body.metadata) != len(body.images):
            raise ApiError(422, "invalid_request", f"metadata: {len(body.metadata)} entries for "
                                                   f"{len(body.images)} images (one entry or null per image)")
        metas = [m.parsed() if m else None for m in body.metadata] if body.metadata else [None] * len(body.images)

        async def one(i: int, image: str) -> dict:
            try:
                return await run(decode_image_string(image, settings.max_body_bytes), body.tta, body.explain,
                                 metas[i], jobs)
            except ApiError as e:
                if e.status in (503, 504):
                    raise
                return {"success": False, "index": i, "error": {"code": e.code, "message": e.message}}
            except Exception:  # one image's unexpected failure must not cost the others their answers
                log.exception("unexpected error on image %d of a batch", i)
                return {"success": False, "index": i, "error": {
                    "code": "internal_error", "message": "unexpected server error; this image was not processed"}}
        # a batch is one request: counted per image, one larger than MAX_QUEUE could never pass
        with engine.admission() as jobs:
            tasks = [asyncio.ensure_future(one(i, s)) for i, s in enumerate(body.images)]
            try:  # gathered, so the images are decoded and predicted in parallel
                results = await asyncio.gather(*tasks)
            finally:
                for t in tasks:  # after a 503/504 the others stop: those not yet handed to a worker never are
                    t.cancel()
        return {"success": all(r["success"] for r in results), "results": results, "disclaimer": DISCLAIMER}

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    for path, endpoint in (("/health", health), ("/model", model_card), ("/", index)):
        # HEAD as GET (RFC 9110 requires it): uptime checks and `curl -I` use it
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequireKey, key=settings.api_key)  # added last: runs first
    return app
