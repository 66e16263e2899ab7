"""Layout checks: signs, in the picture's shape or frame, that it is not one dermoscopic image as a camera took it.

Two checks, each told `composite_image` (docs/decisions/modality-check.md, "Layout checks"):
* elongated: the image as sent (or its part inside a dark frame, which is all the view shows) is longer, against its
  short side, than any camera's frame (21:9 is 2.33), so it is most likely several images side by side or a strip cut
  from one;
* paper band: along one edge of the classifier's view runs a flat, light, neutral band that ends in a straight line,
  as a caption bar, a page margin or a window's chrome does. A dermoscope's frame ends in skin, a dark rim or a dark
  letterbox; over-exposed skin is also light and flat but fades out instead of ending in a line.
"""
from __future__ import annotations

import numpy as np

from .ood import Reason

# Fixed from the camera fact above (max_aspect_ratio) and on the fit parts' images only (the band): see the
# decision record for what each refuses.
LAYOUT_RULES = {
    "max_aspect_ratio": 2.4,
    "band": {"min_depth": 0.03, "tolerance": 4, "min_flat_share": 0.8, "min_luminance": 190.0, "max_chroma": 12.0,
             "min_last_row_flat": 0.6, "max_flat_after": 0.25, "rows_after": 4},
}

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _edges(pixels: np.ndarray):
    """The four edges' bands, each as rows running from the edge inwards (at most half the side deep)."""
    h, w = pixels.shape[:2]
    yield pixels[: h // 2]
    yield pixels[::-1][: h // 2]
    cols = pixels.transpose(1, 0, 2)
    yield cols[: w // 2]
    yield cols[::-1][: w // 2]


def band_depth(pixels: np.ndarray, band: dict = LAYOUT_RULES["band"]) -> float:
    """Depth, as a share of the side, of the deepest flat light neutral band that ends in a straight line along an
    edge of an HxWx3 uint8 image (0 when there is none)."""
    deepest = 0.0
    after = int(band["rows_after"])
    for rows in _edges(pixels):
        colour = np.median(rows[0], axis=0)
        if float(colour @ _LUMA) < band["min_luminance"] or colour.max() - colour.min() > band["max_chroma"]:
            continue
        rows = np.ascontiguousarray(rows)  # the side edges are strided views: one copy beats three strided passes
        lo = np.clip(colour - band["tolerance"], 0, 255)
        hi = np.clip(colour + band["tolerance"], 0, 255)
        near = np.ones(rows.shape[:2], bool)
        for c in range(3):  # channel by channel: a reduction over a 3-long axis is slow
            near &= (rows[..., c] >= lo[c]) & (rows[..., c] <= hi[c])
        flat = near.mean(axis=1)
        n = len(flat)
        share_so_far = np.cumsum(flat) / np.arange(1, n + 1)
        padded = np.concatenate([flat, np.ones(after)])  # a band reaching half the side has no end seen here
        flat_after = np.lib.stride_tricks.sliding_window_view(padded[1:], after)[:n].mean(axis=1)
        ends = np.flatnonzero((share_so_far >= band["min_flat_share"]) & (flat >= band["min_last_row_flat"])
                               & (flat_after <= band["max_flat_after"]))
        if len(ends):
            deepest = max(deepest, (int(ends.max()) + 1) / (2 * n))
    return deepest


def band_reasons(pixels: np.ndarray, rules: dict | None) -> list[Reason]:
    """The paper-band check on the classifier's view (no rules: a card from before the check, not applied)."""
    if not rules or "band" not in rules:
        return []
    depth = band_depth(pixels, rules["band"])
    if depth >= rules["band"]["min_depth"]:
        return [Reason("composite_image", "This looks like a figure from a document or a screenshot: a plain band "
                                          f"runs along {100 * depth:.0f} % of one side of the picture. Send the "
                                          "dermoscopic image file itself, one lesion per picture")]
    return []


def shape_reasons(width: int, height: int, rules: dict | None, framed: bool = False) -> list[Reason]:
    """The elongated check on the size as sent, or of the part inside a dark frame (`framed`), which is all the view
    shows (no rules: not applied)."""
    limit = (rules or {}).get("max_aspect_ratio")
    ratio = max(width, height) / max(1, min(width, height))
    if limit and ratio > limit:
        what = "The image inside this picture's dark frame is" if framed else "This picture is"
        return [Reason("composite_image", f"{what} {ratio:.1f} times as long as it is wide, more than any "
                                          "camera's frame: it looks like several images put together or a strip cut "
                                          "from one. Send the dermoscopic image file itself, one lesion per picture")]
    return []
