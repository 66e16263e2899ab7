"""Request payload -> image bytes, with the HTTP status each failure deserves."""
from __future__ import annotations

import base64
import binascii
import re

from ..preprocess import FORMAT_NAMES, SUPPORTED_FORMATS

# data:[type][;name=value]...[;base64], with optional whitespace around each ';', '=' and ',', as some tools
# write it ("data:image/jpeg; base64,...")
_DATA_URL = re.compile(r"^data:\s*([\w.+-]+/[\w.+-]+)?\s*((?:;\s*[\w-]+\s*=\s*[\w.-]+\s*)*)(;\s*base64\s*)?,",
                       re.IGNORECASE)
SUPPORTED_MIME = {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/bmp", "image/x-ms-bmp",
                  "image/gif", "image/webp", "image/tiff", "image/x-tiff", "image/heic", "image/heif", "image/avif",
                  "application/octet-stream"}


def accepted_type(mime: str) -> bool:
    """Whether a declared media type may be sent on to the decoder. Any image/* may: the bytes say which format
    it is (image/x-png from old browsers, image/x-citrix-jpeg from Citrix desktops), and one dermalens does not
    read (HEIC, SVG...) is refused by name there."""
    return not mime or mime in SUPPORTED_MIME or mime.startswith("image/")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def decode_image_string(s: str, max_bytes: int) -> bytes:
    """Raw base64 or a data URL -> bytes."""
    s = s.strip()
    if not s:
        raise ApiError(400, "empty_image", "the 'image' field is empty")
    m = _DATA_URL.match(s)
    if m:
        mime = (m.group(1) or "").lower()
        if not accepted_type(mime):
            raise ApiError(415, "unsupported_media_type",
                           f"data URL type {mime!r} is not supported; send {FORMAT_NAMES}")
        if not m.group(3):
            raise ApiError(400, "invalid_base64", "data URL must be base64-encoded (';base64,')")
        s = s[m.end():]
    elif s[:5].lower() == "data:":
        raise ApiError(400, "invalid_data_url", "malformed data URL; expected data:image/...;base64,...")
    try:  # plain base64, as browsers and most clients send it: no copy, no scan in Python
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        data = _lenient_b64decode(s)
    if not data:
        raise ApiError(400, "empty_image", "the decoded image is empty")
    if len(data) > max_bytes:  # the request body was capped already (serve.app.BodyLimit)
        raise ApiError(413, "payload_too_large", f"image larger than {max_bytes:,} bytes")
    return data


def _lenient_b64decode(s: str) -> bytes:
    """Base64 with line breaks, URL-safe letters or missing padding."""
    given, s = s, re.sub(r"\s+", "", s)
    s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        if _LOOKS_LIKE_A_NAME.search(given.strip()):  # the server neither fetches URLs nor reads the client's files
            raise ApiError(400, "invalid_base64", "the 'image' field holds a URL or file name, not the image: "
                                                  "send the file's bytes as base64 or a data URL") from None
        raise ApiError(400, "invalid_base64", "the 'image' field is not valid base64") from None


_LOOKS_LIKE_A_NAME = re.compile(r"^[a-z][\w+.-]*://|\.(jpe?g|png|bmp|gif|webp|tiff?|heic|avif)$", re.IGNORECASE)


__all__ = ["ApiError", "accepted_type", "decode_image_string", "SUPPORTED_FORMATS", "SUPPORTED_MIME"]
