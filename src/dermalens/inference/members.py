"""The networks of a bundle ("members"): each an ONNX graph with its own input size, normalisation,
temperature and classifier head.

A bundle's probabilities are the plain mean of its members' calibrated probabilities, then one
temperature for the whole (card["temperature"]): softmax(log(mean_m softmax(logits_m / T_m)) / T).
A card without "members" (every bundle before 3.0) is one member, `model.onnx` with T_m = 1, for
which this is the old softmax(logits / T) exactly.

Every member sees the bundle's one preprocessed view (card["preprocessing"]), resized to its own
input size (preprocess.resize_views) and normalised by the runtime with its own mean and std; the
member named by card["ensemble"]["features_member"] supplies the feature maps for the out-of-distribution
check and Grad-CAM.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..preprocess import PreprocessSpec, normalize_views, resize_views
import dermalens.inference.runtime as rt
from .softmax import softmax


# what np.load raises for a cut-off, empty or foreign .npz file
NPZ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile)


def card_number(v) -> float:
    """A card's number as a float; NaN (which fails every comparison) for anything else, booleans included."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")


class MemberError(ValueError):
    """A member graph that cannot be opened or does not match its card entry."""


def _open_graph(path: Path, threads: int | None = None, **compile_options) -> "rt.CompiledModel":
    """The one place a member's ONNX graph becomes something that runs (inference.runtime: OpenVINO or
    onnxruntime; `compile_options`: mode, runtime, precision)."""
    try:
        return rt.compile(path, threads=threads, **compile_options)
    except rt.RuntimeUnavailable as e:
        raise MemberError(str(e)) from None
    except Exception as e:  # each runtime raises its own exception types
        raise MemberError(f"{path}: cannot load ONNX model ({rt.short_reason(e)})") from None


@dataclass
class Member:
    name: str
    model: "rt.CompiledModel"
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    temperature: float
    head_weight: np.ndarray  # (classes, channels): Grad-CAM's linear head
    head_bias: np.ndarray
    interpolation: str = "bilinear"

    def run(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bundle's uint8 NHWC views -> (logits, last feature maps)."""
        out = self.model.run({"image": self.resized(views)})
        return out["logits"], out["features"]

    def submit(self, views: np.ndarray):
        """As `run`, but a Future of {"logits", "features"}: the graph runs while the caller goes on."""
        return self.model.submit(views, prepare=lambda v: {"image": self.resized(v)})

    @property
    def cost(self) -> int:
        """Pixels per view, a stand-in for the graph's cost: the costliest member is started first."""
        return self.input_size[0] * self.input_size[1]

    def resized(self, views: np.ndarray) -> np.ndarray:
        """The bundle's uint8 NHWC views at this member's input size (the runtime normalises them)."""
        return resize_views(views, self.input_size, self.interpolation)

    def normalize(self, views: np.ndarray) -> np.ndarray:
        """The bundle's uint8 NHWC views -> this member's float32 NCHW input, as its graph computes it
        (for the export's comparison with PyTorch)."""
        return normalize_views(self.resized(views), self.mean, self.std)

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)


def combine(member_probs: list[np.ndarray], temperature: float) -> np.ndarray:
    """Plain mean of the members' calibrated probabilities, then the bundle's temperature."""
    mean = np.mean(member_probs, axis=0) if len(member_probs) > 1 else member_probs[0]
    return softmax(np.log(np.maximum(mean, 1e-12)), temperature)


def member_entries(card: dict) -> list[dict]:
    """card["members"], or the one implicit member of a single-network card."""
    if "members" in card:
        return card["members"]
    spec = PreprocessSpec.from_dict(card["preprocessing"])  # the served size, in either card form (timm's or older)
    return [{"name": card.get("backbone", {}).get("name") or "model", "graph": "model.onnx", "head": "head.npz",
             "input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std), "temperature": 1.0}]


def features_member(card: dict) -> str:
    entries = member_entries(card)
    return card.get("ensemble", {}).get("features_member", entries[0]["name"])


def open_member(folder: Path, entry: dict, threads: int | None = None, interpolation: str = "bilinear",
                **compile_options) -> Member:
    for key in ("name", "graph", "input_size", "temperature"):
        if key not in entry:
            raise MemberError(f"{folder / 'card.json'}: member {entry.get('name', '?')!r} lacks {key!r}")
    graph = folder / entry["graph"]
    if not graph.is_file():
        raise MemberError(f"{graph}: missing")
    if not card_number(entry["temperature"]) > 0:
        raise MemberError(f"{folder / 'card.json'}: member {entry['name']!r}: temperature must be > 0")
    head_path = folder / entry.get("head", "head.npz")
    if not head_path.is_file():
        raise MemberError(f"{head_path}: missing (Grad-CAM needs the classifier head)")
    try:
        with np.load(head_path, allow_pickle=False) as z:
            head = {k: z[k].astype(np.float32) for k in ("weight", "bias")}
    except NPZ_ERRORS + (KeyError,) as e:
        raise MemberError(f"{head_path}: unreadable classifier head ({e or type(e).__name__})") from None
    mean, std = tuple(entry.get("mean", (0.5,) * 3)), tuple(entry.get("std", (0.5,) * 3))
    return Member(entry["name"], _open_graph(graph, threads, views=(mean, std), **compile_options),
                  tuple(int(v) for v in entry["input_size"]), mean, std,
                  float(entry["temperature"]), head["weight"], head["bias"],
                  interpolation)
