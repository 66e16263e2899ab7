"""The one preprocessing definition: image file -> model input.

Training, evaluation, the API and the GUI all go through `PreprocessSpec`:
`to_uint8` turns any supported image into an HxWx3 uint8 array at the model's input
size (the training cache stores exactly this), and `normalize` turns that into the
float32 NCHW tensor the network sees. The spec is plain data, saved in every model
bundle's card, so a bundle always says how its inputs were made.
Numpy and Pillow only: serving must not need PyTorch.
"""
from __future__ import annotations

import importlib.util
import io
import os
import re
import struct
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

RESIZE_POLICIES = ("stretch", "center_crop")
COLOR_CONSTANCY = (None, "shades_of_gray")
# Default cap on the pixels decoded for one image: far above any dermoscope (~6000x4000) but it stops a
# 20,000 x 20,000 "decompression bomb" before Pillow allocates it. A JPEG read at reduced scale counts the pixels
# decoded (decoded_size), so a phone's 48-108 megapixel JPEG is read.
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_VARIABLE = "DERMALENS_MAX_PIXELS"
JPEG_FORMATS = ("JPEG", "MPO")  # the formats libjpeg can decode at 1/2, 1/4 or 1/8 scale
ORIENTATION = 0x0112  # the EXIF tag of how the camera was held


# An iPhone's photos (HEIC): pi-heif, a serving dependency that only decodes, is loaded at the first HEIC file (its
# libraries cost start-up time); an install without it names HEIC as a type it does not read.
READS_HEIF = importlib.util.find_spec("pi_heif") is not None
READS_AVIF = features.check("avif")  # Pillow's own AVIF reader (libavif, in its wheels since 11.3)

SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF") + (("HEIF",) if READS_HEIF else ()) \
    + (("AVIF",) if READS_AVIF else ())
_NAMES = ["JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF"] + ["HEIC"] * READS_HEIF + ["AVIF"] * READS_AVIF
FORMAT_NAMES = ", ".join(_NAMES[:-1]) + " or " + _NAMES[-1]  # what a refusal says dermalens reads
# What Pillow's readers raise on damaged data besides OSError (a short PNG header: ValueError; a TIFF page
# without dimensions: TypeError): each is this file's fault, never a reason to stop the other images.
# Pillow's AVIF reader raises RuntimeError on damaged colour planes.
DECODE_ERRORS = (OSError, ValueError, TypeError, SyntaxError, EOFError, IndexError, KeyError, struct.error,
                 RuntimeError)


class ImageError(ValueError):
    """An input that is not a usable image (unreadable, empty, truncated...)."""


class ImageTooLarge(ImageError):
    """Decoding would exceed the pixel budget (a decompression bomb, or just too big)."""


class UnsupportedImageType(ImageError):
    """A real image, in a format dermalens does not read."""


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: tuple[int, int] = (192, 256)  # (height, width): HAM10000 frames are 4:3
    resize: str = "stretch"  # "stretch": whole frame to input_size; "center_crop": scale short side, crop
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color_constancy: str | None = None  # None or "shades_of_gray" (Finlayson & Trezzi, p=6)
    gray_equalize: bool = False  # grayscale + histogram equalisation, replicated to 3 channels
    interpolation: str = "bilinear"
    transparent_background: tuple[int, int, int] = field(default=(0, 0, 0))
    # True: an image whose orientation (portrait/landscape) differs from input_size's is turned
    # 90 degrees before the resize instead of being squeezed into it. Lesions have no canonical
    # orientation and training shows every rotation (train.augment), so the turned image is a view
    # the network knows; a squeezed one is not. False (cards before 2.2.2) resizes as it comes.
    match_orientation: bool = False
    # Keep only this central fraction of the frame's width and height before the resize (1 = all).
    # The network was trained on random crops of 50-100 % of the frame, which show lesions larger than
    # a whole frame does; a central cut is chosen on validation at export (--center-fraction).
    center_fraction: float = 1.0
    # True: first cut away the dark margins a dermoscope's round field leaves inside a black frame
    # (trim_dark_margins); the networks were fitted on frames filled with skin. False: cards before 3.3.0.
    trim_dark_margins: bool = False

    def __post_init__(self):
        size = self.input_size
        if not (isinstance(size, (tuple, list)) and len(size) == 2
                and all(isinstance(v, int) and 16 <= v <= 2048 for v in size)):
            raise ValueError(f"input_size must be two integers in 16..2048, got {size!r}")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.color_constancy not in COLOR_CONSTANCY:
            raise ValueError(f"color_constancy must be one of {COLOR_CONSTANCY}, got {self.color_constancy!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {tuple(_RESAMPLE)}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must have 3 values each, std > 0")
        if isinstance(self.center_fraction, bool) or not isinstance(self.center_fraction, (int, float)) \
                or not 0.5 <= self.center_fraction <= 1:
            raise ValueError(f"center_fraction must be a number from 0.5 to 1, got {self.center_fraction!r}")
        for name in ("match_orientation", "trim_dark_margins"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    # ---- (de)serialisation: the spec travels in card.json -------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        for k in ("mean", "std", "transparent_background"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        """From to_dict()'s fields or a card's preprocessing in timm's terms (dermalens.card_terms)."""
        from .card_terms import from_card
        d = from_card(d)
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        for k in ("input_size", "mean", "std", "transparent_background"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)

    # ---- the pipeline ---------------------------------------------------------------------
    @property
    def decode_at_least(self) -> int:
        """Both sides a big JPEG is decoded at (at least): twice the input size, so the resize that follows still
        shrinks at least 2x with its antialiasing filter."""
        return 2 * max(self.input_size)

    def to_uint8(self, source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Any supported image -> HxWx3 uint8 at input_size (what the training cache stores)."""
        return self.load_view(source, max_pixels)[0]

    def load_view(self, source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, "ViewPart"]:
        """to_uint8's view, and what of the decoded upright image it shows (ViewPart): the size checks and the
        heat-map go by that part."""
        img = load_rgb(source, max_pixels=max_pixels, background=self.transparent_background,
                       at_least=self.decode_at_least)  # a big JPEG decoded at reduced scale
        frame_width, trimmed = img.width, False
        if self.trim_dark_margins:
            img, kept = trim_dark_margins(img)
            trimmed = kept != (1.0, 1.0)
        part = ViewPart(img.width, img.height, frame_width, trimmed, self.turns(img.width, img.height))
        img = self.resize_image(img)
        arr = np.asarray(img, dtype=np.uint8)
        if self.color_constancy == "shades_of_gray":
            arr = shades_of_gray(arr)
        if self.gray_equalize:
            gray = ImageOps.equalize(Image.fromarray(arr).convert("L"))
            arr = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)
        return np.ascontiguousarray(arr), part

    def load_sized(self, img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, "ReadSize"]:
        """An opened image -> (its view, the upright size of the part of it the view shows), the size the size
        checks and the heat-map go by."""
        upright = upright_size(img)  # before load: a reduced-scale JPEG decode shrinks it
        pixels, part = self.load_view(img, max_pixels)
        return pixels, ReadSize.of(upright, part)

    def turns(self, width: int, height: int) -> bool:
        """Whether an image of this size is turned 90 degrees (counter-clockwise) before the resize."""
        h, w = self.input_size
        return self.match_orientation and width != height and h != w and (height > width) != (h > w)

    def resize_image(self, img: Image.Image) -> Image.Image:
        h, w = self.input_size
        resample = _RESAMPLE[self.interpolation]
        if self.turns(img.width, img.height):
            img = img.transpose(Image.Transpose.ROTATE_90)
        if self.center_fraction < 1:  # after the turn, so a turned image is cut like a landscape one
            cw, ch = max(1, round(img.width * self.center_fraction)), max(1, round(img.height * self.center_fraction))
            left, top = (img.width - cw) // 2, (img.height - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        if self.resize == "center_crop":
            scale = max(w / img.width, h / img.height)
            sw, sh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
            img = img.resize((sw, sh), resample)
            left, top = (sw - w) // 2, (sh - h) // 2
            return img.crop((left, top, left + w, top + h))
        return img.resize((w, h), resample)

    def normalize(self, arr: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 (or NxHxWx3) -> float32 NCHW, scaled to [0,1] then (x - mean) / std."""
        return normalize_views(arr, self.mean, self.std)

    def preprocess(self, source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Image -> float32 array of shape (1, 3, H, W), ready for the network."""
        return self.normalize(self.to_uint8(source, max_pixels=max_pixels))


class ViewPart(NamedTuple):
    """What a view shows of its image, in the decoded upright image's pixels (a big JPEG is decoded reduced)."""
    width: int  # of the part kept: the whole frame, or what is inside its dark margins
    height: int
    frame_width: int  # of the whole decoded frame
    trimmed: bool  # dark margins were cut away
    turned: bool  # the view turned the part 90 degrees (PreprocessSpec.turns, decided on the part itself)


class ReadSize(tuple):
    """(width, height) of the part of an image its view shows, upright, in the image's own pixels, carrying
    `trimmed` and `turned` from its ViewPart: the size checks word their reason by them and the heat-map is
    turned back by the view's own decision, which a size rounded back from a reduced decode could contradict."""
    trimmed: bool
    turned: bool

    def __new__(cls, width: int, height: int, trimmed: bool = False, turned: bool | None = None):
        size = super().__new__(cls, (width, height))
        size.trimmed, size.turned = trimmed, turned
        return size

    def __getnewargs__(self):  # pickled (a Dask task's result) with its two flags
        return self[0], self[1], self.trimmed, self.turned

    @classmethod
    def of(cls, upright: tuple[int, int], part: ViewPart) -> "ReadSize":
        """The upright size of the image as sent (upright_size) and its view's part -> the size the view shows."""
        if not part.trimmed:
            return cls(*upright, False, part.turned)
        scale = upright[0] / part.frame_width  # one factor for both sides: the part keeps its orientation
        return cls(max(1, round(part.width * scale)), max(1, round(part.height * scale)), True, part.turned)


# A frame's edge row or column is dark all along when its brightest pixels (this percentile) stay below this
# luminance: a dermoscope's black frame, with room for JPEG noise. Margins under min_share of the side are kept,
# and nothing is cut when less than min_kept of a side would be left (the exposure check speaks for such images).
DARK_MARGINS = {"luminance": 40.0, "percentile": 99.0, "min_share": 0.03, "min_kept": 0.1, "probe_side": 128}
# (probe_side: the image is read at 1/k scale, k the whole number of probe_sides in its long side)


def dark_margins(img: Image.Image, rule: dict = DARK_MARGINS) -> tuple[float, float, float, float]:
    """(left, top, right, bottom): the share of the width or height along each edge of an RGB image that is
    dark all along."""
    probe = img.reduce(max(1, max(img.size) // rule["probe_side"]))  # box averages: a few hundred pixels a side
    bright = np.asarray(probe.convert("L")) >= rule["luminance"]
    most = 1 - rule["percentile"] / 100  # a line is lit when more of its pixels than this are bright
    shares = []
    for lines in (bright.T, bright, bright.T[::-1], bright[::-1]):  # from the left, top, right, bottom edges inwards
        lit = np.flatnonzero(lines.mean(axis=1) > most)
        share = (lit[0] if len(lit) else len(lines)) / len(lines)
        shares.append(share if share >= rule["min_share"] else 0.0)
    left, top, right, bottom = shares
    if 1 - left - right < rule["min_kept"] or 1 - top - bottom < rule["min_kept"]:
        return 0.0, 0.0, 0.0, 0.0
    return left, top, right, bottom


def trim_dark_margins(img: Image.Image) -> tuple[Image.Image, tuple[float, float]]:
    """The image without its dark margins, and the share of its width and height kept."""
    left, top, right, bottom = dark_margins(img)
    if not (left or top or right or bottom):
        return img, (1.0, 1.0)
    w, h = img.size
    box = (round(left * w), round(top * h), w - round(right * w), h - round(bottom * h))
    return img.crop(box), ((box[2] - box[0]) / w, (box[3] - box[1]) / h)


def normalize_views(arr: np.ndarray, mean, std) -> np.ndarray:
    """uint8 HxWx3 (or NxHxWx3) -> float32 NCHW, scaled to [0,1] then (x - mean) / std. The one definition:
    OpenVINO computes the same inside the graph (inference.runtime, a test holds them together)."""
    if arr.dtype != np.uint8:
        raise TypeError(f"normalize expects uint8 pixels, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    x = arr.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resize_views(pixels: np.ndarray, input_size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """uint8 NxHxWx3 views -> the same views at `input_size` (height, width).

    An ensemble bundle's members all see the bundle's one preprocessed view; a member with another
    input size gets that view resized, so every member looks at the same cut of the same image."""
    h, w = input_size
    if pixels.shape[1:3] == (h, w):
        return pixels
    resample = _RESAMPLE[interpolation]
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(v)).resize((w, h), resample), np.uint8)
                     for v in pixels]) if len(pixels) else np.zeros((0, h, w, 3), np.uint8)


_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def _pillow_allows(max_pixels: int) -> None:
    """Raise Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS, process-wide; it warns above it and
    refuses above twice it, when opening and again when loading, cropping...) to `max_pixels` where that is
    higher, so the limit the caller chose (DERMALENS_MAX_PIXELS) is the one that applies. Never lowered: Pillow
    stays the backstop for anything that does not go through open_image."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _too_large(name: str | None, size: str, max_pixels: int) -> ImageTooLarge:
    return ImageTooLarge(f"{name + ': ' if name else ''}image too large: {size} pixels (limit {max_pixels:,}); "
                         "use a smaller copy of the image")


def max_pixels_setting() -> int:
    """The pixel limit a user set (DERMALENS_MAX_PIXELS, read by the server, dermalens predict and evaluate, the
    desktop app and Dask workers alike), else DEFAULT_MAX_PIXELS; ValueError naming the variable when it is no
    positive whole number."""
    raw = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_VARIABLE} must be a whole number of pixels, such as 60000000; got {raw!r}")
    return value


def decoded_size(img: Image.Image, at_least: int | None = None) -> tuple[int, int]:
    """(width, height) that load_rgb(..., at_least) decodes of an opened image: a JPEG not yet decoded is read at
    1/2, 1/4 or 1/8 scale while both sides stay at least `at_least` (the rule of Pillow's JpegImageFile.draft,
    which load_rgb calls); anything else, or without `at_least`, whole."""
    w, h = img.size
    if not at_least or img.format not in JPEG_FORMATS or len(getattr(img, "tile", ())) != 1 \
            or getattr(img, "decoderconfig", ()):  # decoded already, or already set to a reduced scale
        return w, h
    if img.info.get("progressive") or img.info.get("progression"):  # libjpeg holds every coefficient of the image
        return w, h
    scale = min(w // at_least, h // at_least)
    s = next((s for s in (8, 4, 2) if scale >= s), 1)
    return (w + s - 1) // s, (h + s - 1) // s


def open_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, at_least: int | None = None) -> Image.Image:
    """Open (lazily) a path, bytes or PIL image, refusing what is not an image or too large: over `max_pixels`
    (which may be above Pillow's own limit: see _pillow_allows) as it will be decoded, a JPEG at reduced scale
    where the caller reads it so (`at_least`: decoded_size)."""
    name = None
    _pillow_allows(max_pixels)  # also for an image opened elsewhere: Pillow checks again when it loads (TIFF)
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise ImageError("the image is empty (0 bytes)")
            fp, name = io.BytesIO(bytes(source)), "the image sent"
        else:
            path = Path(source)
            try:
                if not path.exists():
                    if path.is_symlink():
                        raise ImageError(f"{path}: a link to {os.readlink(path)}, which does not exist")
                    raise ImageError(f"{path}: no such file")
                if path.is_dir():
                    raise ImageError(f"{path}: is a folder, not an image")
                if path.stat().st_size == 0:
                    raise ImageError(f"{path}: the file is empty (0 bytes)")
            except OSError as e:  # a name too long for the system, a folder it may not look into
                raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
            fp, name = path, str(path)
        try:
            try:
                img = _open(fp)
            except UnidentifiedImageError:
                if not (READS_HEIF and _other_kind(fp) == "HEIC/HEIF"):
                    raise
                _load_heif()  # then once more, now that Pillow knows HEIC (another thread may have taught it)
                img = _open(io.BytesIO(fp.getvalue()) if isinstance(fp, io.BytesIO) else fp)
        except UnidentifiedImageError:
            kind = _other_kind(fp)
            if kind:
                if kind == "HEIC/HEIF" and READS_HEIF:  # its header says HEIC, libheif could not open it
                    raise ImageError(f"{name}: cannot read this HEIC/HEIF image (damaged, or a kind libheif "
                                     "cannot decode)") from None
                if kind == "AVIF" and READS_AVIF:
                    raise ImageError(f"{name}: cannot read this AVIF image (damaged, or a kind libavif cannot "
                                     "decode)") from None
                raise UnsupportedImageType(f"{name}: {kind} files are not supported; use {FORMAT_NAMES}") from None
            raise ImageError(f"{name}: not a recognised image ({FORMAT_NAMES})") from None
        except Image.DecompressionBombError as e:  # over twice Pillow's limit, itself at least max_pixels
            img = _huge_jpeg(fp)  # a 200 MP camera's JPEG may still be decoded small enough: decided below
            if img is None:
                found = re.search(r"\((\d+) pixels\)", str(e))  # Pillow says how many; not the sides
                raise _too_large(name, f"{int(found.group(1)):,}" if found else f"over {2 * Image.MAX_IMAGE_PIXELS:,}",
                                 max_pixels) from None
        except DECODE_ERRORS as e:
            raise ImageError(f"{name}: cannot read image ({e})") from None
        if img.format not in SUPPORTED_FORMATS:
            raise UnsupportedImageType(
                f"{name}: {img.format} images are not supported; use {FORMAT_NAMES}")
    decoded = decoded_size(img, at_least)
    if decoded[0] * decoded[1] > max_pixels:
        raise _too_large(name, f"{img.width}x{img.height} = {img.width * img.height:,}", max_pixels)
    if img.width < 1 or img.height < 1:
        raise ImageError("image has no pixels")
    return img


def _huge_jpeg(fp) -> Image.Image | None:
    """A JPEG over Pillow's open-time limit, opened lazily without that check (open_image then applies its own,
    to the reduced-scale decode); None for any other kind of file."""
    from PIL import JpegImagePlugin
    if not _head(fp).startswith(b"\xff\xd8\xff"):
        return None
    try:
        if isinstance(fp, io.BytesIO):
            fp.seek(0)
        return JpegImagePlugin.JpegImageFile(fp)
    except DECODE_ERRORS:
        return None


def _open(fp) -> Image.Image:
    with warnings.catch_warnings():  # Pillow's decompression-bomb warning: open_image decides after it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(fp)


_HEIF_LOCK = threading.Lock()


def _load_heif() -> None:
    """Teach Pillow HEIC (pi-heif's opener) the first time one is met, once whichever thread meets it first."""
    with _HEIF_LOCK:
        if "HEIF" not in Image.OPEN:
            from pi_heif import register_heif_opener
            register_heif_opener()


def _head(fp, n: int = 512) -> bytes:
    """The first bytes of a file or buffer (b"" when it cannot be read), to name its kind."""
    if isinstance(fp, io.BytesIO):
        return fp.getvalue()[:n]
    try:
        with open(fp, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _other_kind(fp) -> str | None:
    """The formats people send by mistake that Pillow cannot read at all, named so the refusal says what
    the file is: an iPhone's HEIC photo, a PDF, an SVG drawing. None for anything else."""
    head = _head(fp)
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
        return "HEIC/HEIF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if head.startswith(b"%PDF"):
        return "PDF"
    return "SVG" if b"<svg" in head.lower() else None


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as it is displayed, i.e. after its EXIF orientation, read
    from the header before any decode (a phone's portrait photo is often stored landscape + a tag)."""
    w, h = img.size
    try:
        turned = img.getexif().get(ORIENTATION) in (5, 6, 7, 8)  # the orientations that swap the sides
    except Exception:  # a damaged EXIF block must not cost the image; load_rgb decides on it
        turned = False
    return (h, w) if turned else (w, h)


def load_rgb(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS,
             background: tuple[int, int, int] = (0, 0, 0), at_least: int | None = None) -> Image.Image:
    """Decode to an 8-bit RGB PIL image.

    First frame of animations; EXIF orientation applied; 16-bit, 32-bit and float images scaled to
    8 bits (each integer depth from its own range, see _to_rgb); CMYK, palette and grayscale converted; transparency composited over `background`.

    `at_least`: the caller only needs both sides >= this many pixels, so a JPEG file may be
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) as long as both sides stay at least
    that large: a 12-megapixel dermoscope JPEG preprocesses about 7x faster (`make bench` prints
    both). HAM10000's 200x150 frames are never reduced, so the training pixels do not change.
    """
    img = open_image(source, max_pixels=max_pixels, at_least=at_least)
    try:
        if at_least:
            # A no-op for other formats, small images and images already decoded; a lazily opened
            # JPEG passed in (the API's upload) is decoded reduced, so read its size before.
            img.draft(None, (at_least, at_least))
            if img.width * img.height > max_pixels:  # decoded_size mirrors draft's rule; never decode past the limit
                raise _too_large(None, f"{img.width}x{img.height} = {img.width * img.height:,}", max_pixels)
        # The first frame of an animation or a multi-page file; a HEIF opens at its primary image, which open_image
        # checked and which need not be image 0. Not n_frames: it walks every page, and a damaged one would cost all.
        if img.tell() != 0 and img.format != "HEIF":
            img.seek(0)
        img.load()
        depth = _integer_depth(img)  # from the file's header, which the turned copy below no longer has
        if img.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies every upright image too
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img, background, depth)
    except ImageError:
        raise
    except DECODE_ERRORS as e:
        # Truncated or corrupt data only shows when the pixels are decoded.
        raise ImageError(f"cannot decode image ({e})") from None


def _integer_depth(img: Image.Image) -> tuple[int, bool] | None:
    """(bits per sample, signed) of a greyscale integer image (mode I) as its file states them; None when the
    image is not mode I or nothing says (an image made in memory)."""
    if img.mode != "I":
        return None
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})

        def first(v):
            return v[0] if isinstance(v, tuple) and v else v
        bits, sample_format = first(tags.get(258)), first(tags.get(339, 1))  # BitsPerSample, SampleFormat
        if isinstance(bits, int) and 0 < bits <= 32:
            return bits, sample_format == 2
    if img.format == "PNG":  # PNG samples have at most 16 bits; older Pillow opened 16-bit grey PNGs as mode I
        return 16, False
    return None


def _to_rgb(img: Image.Image, background: tuple[int, int, int], depth: tuple[int, bool] | None = None) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Integer grayscale (PNG/TIFF). 16-bit files (and a mode I image of unknown depth whose values fit
        # 16 bits) are read as 0..65535, as always. A 32-bit TIFF (mode I; `depth` from its header) is
        # read over its own bit depth, 0..2**32-1 unsigned or 0..2**31-1 signed (Pillow hands an unsigned
        # one over as signed, wrapped); a mode I image of unknown depth with values beyond 16 bits, over
        # its own lowest to highest value.
        a = np.asarray(img)
        bits, signed = depth if mode == "I" and depth else (None, False)
        if bits is not None and bits > 16:
            if bits == 32 and not signed:
                a = a.view(np.uint32)
            a = a.astype(np.float64) * (255.0 / (2 ** (bits - 1 if signed else bits) - 1))
        elif bits is None and a.size and (a.min() < 0 or a.max() > 65535) and a.max() > a.min():
            lo, hi = float(a.min()), float(a.max())
            a = (a.astype(np.float64) - lo) * (255.0 / (hi - lo))
        else:
            a = a.astype(np.float64) / 257.0
        img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if np.nanmax(a) <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(np.nan_to_num(a) + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, tuple(background))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def shades_of_gray(arr: np.ndarray, power: int = 6) -> np.ndarray:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004), as used for ISIC images.

    Estimates the illuminant as the Minkowski p-norm of each channel and rescales the
    channels so that illuminant becomes neutral grey.
    """
    x = arr.astype(np.float64)
    illum = np.power(np.mean(np.power(x, power), axis=(0, 1)), 1.0 / power)
    illum = illum / max(np.sqrt(np.sum(illum**2)), 1e-12)
    gain = 1.0 / np.maximum(illum * np.sqrt(3.0), 1e-12)
    return np.clip(x * gain + 0.5, 0, 255).astype(np.uint8)
