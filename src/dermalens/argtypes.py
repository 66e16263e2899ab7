"""Argument types shared by `dermalens` and the modules it runs as commands of their own (`python -m
dermalens.bench`): one wording for a number a user got wrong."""
from __future__ import annotations

import argparse


def whole(text: str, least: int, most: int | None = None, what: str = "expected") -> int:
    if not text.strip().isdigit() or int(text) < least or (most is not None and int(text) > most):
        bounds = f"from {least} to {most}" if most is not None else f"of at least {least}"
        raise argparse.ArgumentTypeError(f"{what} a whole number {bounds}, got {text!r}")
    return int(text)


def positive(text: str) -> int:
    return whole(text, 1)
