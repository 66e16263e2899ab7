"""The modality gate: is this a dermoscopic image at all, or an ordinary (clinical, phone) photo?

A small ImageNet-only network (`gate.onnx`, EfficientNet-Lite0) turns the pixels the classifier
would read into channel statistics; a linear classifier on them (`gate.npz`: standardisation and
weights, plain arrays, no pickle; further layers W1, b1, ... would be read as a ReLU network) gives
the probability that the image is dermoscopic. Below the card's threshold the image is not assessed.
Since bundle 3.1.1 `gate.npz` also holds `margins_W`, `margins_b`: each check's own logit less its threshold's
logit (column 0 the image-type check, column 1 the composite check), which say which check refused an image.
Numpy, Pillow and the serving runtime only (inference.runtime).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..preprocess import PreprocessSpec
import dermalens.inference.runtime as rt
from .members import NPZ_ERRORS, card_number

GATE_GRAPH = "gate.onnx"
GATE_WEIGHTS = "gate.npz"


@dataclass
class GateScores:
    dermoscopic: np.ndarray  # probability that each image is dermoscopic
    composite: np.ndarray | None  # True where the composite check is the one that refuses (None: no such check)


@dataclass
class ModalityGate:
    model: "rt.CompiledModel"
    spec: PreprocessSpec  # how the classifier's pixels are resized and normalised for gate.onnx
    weights: dict  # mean, scale, then W0, b0, W1, b1, ... (ReLU between layers, sigmoid at the end)
    threshold: float  # images whose probability of being dermoscopic is below this are not assessed

    def _input(self, pixels: np.ndarray) -> dict:
        # uint8: the graph is compiled to normalise its input itself (compile_gate)
        return {"image": np.stack([self.spec.to_uint8(Image.fromarray(p)) for p in pixels])}

    def features(self, pixels: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """uint8 NxHxWx3 (the classifier's view) -> N x D channel statistics."""
        out = [self.model.run(self._input(pixels[i:i + batch_size]))["features"]
               for i in range(0, len(pixels), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def start(self, pixels: np.ndarray, batch_size: int = 16) -> Callable[[], GateScores]:
        """Queue the check on `pixels` and return at once; calling the result waits for its GateScores.
        The predictor starts it just after the classifier's networks, so the graphs of an image run side by side."""
        if not len(pixels):
            return lambda: GateScores(np.zeros(0), None if "margins_W" not in self.weights else np.zeros(0, bool))
        running = [self.model.submit(pixels[i:i + batch_size], prepare=self._input)
                   for i in range(0, len(pixels), batch_size)]
        return lambda: self.scores_from_features(np.concatenate([f.result()["features"] for f in running]))

    def _standardised(self, feats: np.ndarray) -> np.ndarray:
        return (feats.astype(np.float32) - self.weights["mean"]) / self.weights["scale"]

    def _probability(self, h: np.ndarray) -> np.ndarray:
        w = self.weights
        n_layers = sum(k.startswith("W") for k in w)  # W0, W1, ...: margins_W is not a layer
        for k in range(n_layers):
            h = h @ w[f"W{k}"] + w[f"b{k}"]
            if k < n_layers - 1:
                h = np.maximum(h, 0)
        return 1.0 / (1.0 + np.exp(-h[:, 0].astype(np.float64)))

    def probability_from_features(self, feats: np.ndarray) -> np.ndarray:
        return self._probability(self._standardised(feats))

    def scores_from_features(self, feats: np.ndarray) -> GateScores:
        """The probability, and which check refuses: the composite check where its margin is the lower one, so an
        image is told it looks like a screenshot, a page or a collage only when that check is the surer of the two."""
        h = self._standardised(feats)
        composite = None
        if "margins_W" in self.weights:
            m = h @ self.weights["margins_W"] + self.weights["margins_b"]
            composite = (m[:, 1] < 0) & (m[:, 1] < m[:, 0])
        return GateScores(self._probability(h), composite)

    def scores(self, pixels: np.ndarray) -> GateScores:
        return self.scores_from_features(self.features(pixels))

    def probability(self, pixels: np.ndarray) -> np.ndarray:
        """Probability that each image is dermoscopic."""
        return self.probability_from_features(self.features(pixels))


def load_gate(bundle_dir: Path, section: dict, threads: int | None = None, **compile_options) -> ModalityGate:
    """The gate a card's `modality` section describes; ValueError naming the file when it is unusable.
    `compile_options`: mode, runtime, precision, as for the classifier (inference.runtime.compile)."""
    bundle_dir = Path(bundle_dir)
    graph, weights = bundle_dir / section.get("graph", GATE_GRAPH), bundle_dir / section.get("weights", GATE_WEIGHTS)
    for p in (graph, weights):
        if not p.is_file():
            raise ValueError(f"{p}: missing (the card's modality section names it)")
    threshold = section.get("threshold")
    if math.isnan(card_number(threshold)):
        raise ValueError(f"{bundle_dir / 'card.json'}: modality.threshold must be a number, got {threshold!r}")
    spec = PreprocessSpec.from_dict(section["preprocessing"])
    try:
        with np.load(weights, allow_pickle=False) as z:
            w = {k: z[k].astype(np.float32) for k in z.files}
    except NPZ_ERRORS as e:
        raise ValueError(f"{weights}: unreadable ({e or type(e).__name__})") from None
    if not {"mean", "scale", "W0", "b0"} <= set(w):
        raise ValueError(f"{weights}: expected arrays mean, scale, W0, b0, ...; found {sorted(w)}")
    if ("margins_W" in w) != ("margins_b" in w) or ("margins_W" in w and (
            w["margins_W"].shape != (len(w["mean"]), 2) or w["margins_b"].shape != (2,))):
        raise ValueError(f"{weights}: margins_W must be {len(w['mean'])} x 2 and margins_b 2 numbers, both or neither")
    try:
        model = compile_gate(graph, spec, threads=threads, **compile_options)
    except rt.RuntimeUnavailable:
        raise
    except Exception as e:  # each runtime raises its own exception types for a damaged graph
        raise ValueError(f"{graph}: cannot load ONNX model ({rt.short_reason(e)})") from None
    return ModalityGate(model, spec, w, float(threshold))


def compile_gate(graph: Path, spec: PreprocessSpec, **compile_options) -> "rt.CompiledModel":
    """gate.onnx compiled to take the uint8 views ModalityGate gives it (normalised as `spec` says)."""
    return rt.compile(graph, views=(spec.mean, spec.std), **compile_options)
