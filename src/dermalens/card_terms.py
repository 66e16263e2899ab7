"""The card's preprocessing in timm's words, and back to PreprocessSpec's fields.

timm describes a model's evaluation transform with `input_size` (C, H, W: the size it was trained at),
`test_input_size` (the size to evaluate and serve at, when it differs), `crop_pct` (the central share of
the image kept) and `crop_mode` ("squash": both sides resized, aspect ratio not kept; "center": short side
resized, centre cut). dermalens' PreprocessSpec says the same with `input_size` (H, W as served),
`resize` ("stretch" / "center_crop") and `center_fraction`. Cards written before bundle 2.3.x use
PreprocessSpec's words; both load.
"""
from __future__ import annotations

CROP_MODE = {"stretch": "squash", "center_crop": "center"}  # PreprocessSpec.resize -> timm crop_mode
RESIZE = {v: k for k, v in CROP_MODE.items()}
TIMM_KEYS = ("test_input_size", "crop_pct", "crop_mode")


def is_timm_form(d: dict) -> bool:
    return any(k in d for k in TIMM_KEYS) or len(d.get("input_size", ())) == 3


def to_card(spec_dict: dict, trained_size=None) -> dict:
    """PreprocessSpec.to_dict() -> the card's preprocessing (timm terms). `trained_size` (H, W) is the
    size the network was trained at; the served size is spec_dict["input_size"]."""
    d = dict(spec_dict)
    served = list(d.pop("input_size"))
    trained = list(trained_size or served)
    out = {"input_size": [3, *trained], "test_input_size": [3, *served],
           "crop_pct": float(d.pop("center_fraction", 1.0)), "crop_mode": CROP_MODE[d.pop("resize", "stretch")]}
    return {**out, **d}


def from_card(d: dict) -> dict:
    """The card's preprocessing (either form) -> PreprocessSpec.from_dict's fields."""
    if not is_timm_form(d):
        return dict(d)
    d = dict(d)
    trained = d.pop("input_size", None)
    served = d.pop("test_input_size", None) or trained
    if served is None:
        raise ValueError("preprocessing has neither input_size nor test_input_size")
    served = list(served)
    if len(served) == 3:
        if served[0] != 3:
            raise ValueError(f"input size {served} must have 3 (RGB) channels first")
        served = served[1:]
    out = {"input_size": served}
    if "crop_pct" in d:
        out["center_fraction"] = d.pop("crop_pct")
    if "crop_mode" in d:
        mode = d.pop("crop_mode")
        if mode not in RESIZE:
            raise ValueError(f"crop_mode must be one of {sorted(RESIZE)}, got {mode!r}")
        out["resize"] = RESIZE[mode]
    return {**out, **d}
