"""A model bundle is a folder: `model.onnx`, `card.json`, `head.npz`, `ood.npz` (+ MODEL_CARD.md).

`card.json` fully describes inputs and outputs (after MONAI bundles): classes in index
order, the preprocessing spec, temperature, operating thresholds, and the metrics the
model earned on a named split. Loading checks the card against the ONNX graph, so a card
that does not match its model is an error rather than silently wrong probabilities.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classes import CLASSES
from ..preprocess import PreprocessSpec
from . import runtime as rt
from .modality import ModalityGate, load_gate
from .ood import whiten
from .softmax import decide, softmax

CARD_FORMAT = "dermalens-bundle/1"
REQUIRED_CARD_KEYS = ("format", "name", "version", "classes", "preprocessing", "temperature", "thresholds")


class BundleError(ValueError):
    """A model bundle that cannot be used; the message says which file and why."""


@dataclass
class Bundle:
    path: Path
    card: dict
    spec: PreprocessSpec
    model: rt.CompiledModel  # model.onnx compiled for this CPU (OpenVINO or onnxruntime)
    head_weight: np.ndarray  # (classes, channels): Grad-CAM's linear head
    head_bias: np.ndarray
    ood: dict | None
    gate: ModalityGate | None = None  # the modality check (card["modality"]); None in bundles before 2.4.0

    @property
    def codes(self) -> list[str]:
        return [c["code"] for c in self.card["classes"]]

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.card["classes"]]

    @property
    def malignant(self) -> np.ndarray:
        return np.array([bool(c["malignant"]) for c in self.card["classes"]])

    @property
    def temperature(self) -> float:
        return float(self.card["temperature"])

    @property
    def decision_bias(self) -> np.ndarray:
        """Per-class offset added to the log-probabilities when picking the predicted class."""
        return np.asarray(self.card.get("decision_bias", [0.0] * len(self.card["classes"])), np.float32)

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return decide(probs, self.decision_bias)

    @property
    def thresholds(self) -> dict:
        return self.card["thresholds"]

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised NCHW float32 -> (logits, last feature maps)."""
        out = self.model.run({"image": x})
        return out["logits"], out["features"]

    def submit(self, x: np.ndarray):
        """Asynchronous `run`: a Future of the runtime's {"logits", "features"} dict."""
        return self.model.submit({"image": x})


def read_card(path: Path) -> dict:
    card_path = Path(path) / "card.json"
    if not card_path.is_file():
        raise BundleError(f"{card_path}: missing (a bundle needs model.onnx and card.json)")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{card_path}: not valid JSON ({e})") from None
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise BundleError(f"{card_path}: missing key(s) {missing}")
    if card["format"] != CARD_FORMAT:
        raise BundleError(f"{card_path}: format {card['format']!r}, this dermalens reads {CARD_FORMAT!r}")
    for c in card["classes"]:
        if not {"code", "name", "malignant"} <= set(c):
            raise BundleError(f"{card_path}: each class needs code, name and malignant; got {c}")
    if not float(card["temperature"]) > 0:
        raise BundleError(f"{card_path}: temperature must be > 0")
    if "logit_bias" in card:
        raise BundleError(f"{card_path}: 'logit_bias' (probabilities shifted by a prior correction) is no longer "
                          "read; re-export the run with this dermalens (it writes 'decision_bias')")
    if len(card.get("decision_bias", card["classes"])) != len(card["classes"]):
        raise BundleError(f"{card_path}: decision_bias needs one value per class")
    if "malignant" not in card["thresholds"]:
        raise BundleError(f"{card_path}: thresholds.malignant missing")
    return card


def load_bundle(path: str | Path, threads: int | None = None, mode: str = "latency", runtime: str | None = None,
                precision: str | None = None) -> Bundle:
    """`mode`, `runtime`, `precision`: see inference.runtime.compile (defaults: fastest available here)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: model bundle folder not found")
    card = read_card(path)
    try:
        spec = PreprocessSpec.from_dict(card["preprocessing"])
    except (TypeError, ValueError) as e:
        raise BundleError(f"{path / 'card.json'}: bad preprocessing spec ({e})") from None
    onnx_path = path / "model.onnx"
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing")
    try:
        model = rt.compile(onnx_path, mode=mode, threads=threads, runtime=runtime, precision=precision)
    except rt.RuntimeUnavailable as e:
        raise BundleError(str(e)) from None
    except Exception as e:  # each runtime raises its own exception types
        raise BundleError(f"{onnx_path}: cannot load ONNX model ({e})") from None
    _check_io(model, spec, len(card["classes"]), onnx_path)
    head_path = path / "head.npz"
    if not head_path.is_file():
        raise BundleError(f"{head_path}: missing (Grad-CAM needs the classifier head)")
    head = np.load(head_path)
    ood = whiten(dict(np.load(path / "ood.npz"))) if (path / "ood.npz").is_file() else None
    gate = None
    if "modality" in card:
        try:
            gate = load_gate(path, card["modality"], threads=threads, mode=mode, runtime=runtime, precision=precision)
        except (KeyError, TypeError, ValueError, rt.RuntimeUnavailable) as e:
            raise BundleError(f"{path / 'card.json'}: unusable modality check ({e})") from None
    return Bundle(path, card, spec, model, head["weight"].astype(np.float32),
                  head["bias"].astype(np.float32), ood, gate)


def _check_io(model: rt.CompiledModel, spec: PreprocessSpec, n_classes: int, onnx_path: Path):
    inputs, outputs = model.inputs, model.outputs
    if "image" not in inputs or not {"logits", "features"} <= set(outputs):
        raise BundleError(f"{onnx_path}: expected input 'image' and outputs 'logits', 'features'; "
                          f"found {list(inputs)} -> {list(outputs)}")
    shape = inputs["image"]
    want = [3, *spec.input_size]
    if len(shape) != 4 or list(shape[1:]) != want:
        raise BundleError(f"{onnx_path}: input shape {shape} does not match the card's preprocessing "
                          f"(N, {want[0]}, {want[1]}, {want[2]})")
    out_shape = outputs["logits"]
    if out_shape[-1] != n_classes:
        raise BundleError(f"{onnx_path}: {out_shape[-1]} outputs but the card lists {n_classes} classes")


def default_classes_for_card() -> list[dict]:
    return [{"code": c.code, "name": c.name, "malignant": c.malignant} for c in CLASSES]
