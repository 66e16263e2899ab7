"""The seven HAM10000 diagnoses, defined once.

Index order here IS the model's output order; a model bundle's card repeats it so
that serving never has to trust this file to match an old model.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    code: str
    name: str
    malignant: bool


CLASSES: tuple[LesionClass, ...] = (
    LesionClass("akiec", "Actinic keratosis / intraepithelial carcinoma", True),
    LesionClass("bcc", "Basal cell carcinoma", True),
    LesionClass("bkl", "Benign keratosis-like lesion", False),
    LesionClass("df", "Dermatofibroma", False),
    LesionClass("mel", "Melanoma", True),
    LesionClass("nv", "Melanocytic nevus", False),
    LesionClass("vasc", "Vascular lesion", False),
)

CODES: tuple[str, ...] = tuple(c.code for c in CLASSES)
NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
MALIGNANT_CODES: frozenset[str] = frozenset(c.code for c in CLASSES if c.malignant)
CODE_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CODES)}


def index_of(code: str) -> int:
    """Class index for a diagnosis code, with an error that lists the valid codes."""
    try:
        return CODE_TO_INDEX[code.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown diagnosis {code!r}; expected one of {', '.join(CODES)}") from None


def malignant_mask(codes=CODES) -> list[bool]:
    """Per-index malignant flags for a list of class codes (a card's classes, by default ours)."""
    return [c in MALIGNANT_CODES for c in codes]
