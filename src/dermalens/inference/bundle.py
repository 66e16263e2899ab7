"""A model bundle is a folder: `model.onnx`, `card.json`, `head.npz`, `ood.npz` (+ MODEL_CARD.md).
An ensemble bundle (3.0 on) lists its networks in card["members"], each with its own graph and head
(inference.members), and may carry `metadata.npz`, the optional patient-metadata model (inference.metadata).

`card.json` fully describes inputs and outputs (after MONAI bundles): classes in index
order, the preprocessing spec, temperature, operating thresholds, and the metrics the
model earned on a named split. Loading checks the card against the ONNX graph, so a card
that does not match its model is an error rather than silently wrong probabilities.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..classes import CLASSES
from ..preprocess import PreprocessSpec
import dermalens.inference.runtime as rt
from .members import (NPZ_ERRORS, Member, MemberError, card_number, combine, features_member, member_entries,
                      open_member)
from .metadata import MetadataError, MetadataModel
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
    members: list[Member] = field(default_factory=list)  # all networks; the features member among them
    metadata: MetadataModel | None = None
    gate: ModalityGate | None = None  # the image-type check (card["modality"]); None in bundles before 2.4.0

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

    def run(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC views (the card's preprocessing) -> (logits, last feature maps) of the features member."""
        return self.features_member.run(views)

    def submit(self, views: np.ndarray):
        """Asynchronous `run`: a Future of the features member's {"logits", "features"} dict."""
        return self.features_member.submit(views)

    @property
    def features_member(self) -> Member:
        name = features_member(self.card)
        return next(m for m in self.members if m.name == name)

    def probabilities(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC views (the card's preprocessing) -> (calibrated probabilities of the whole bundle,
        feature maps of the features member)."""
        return self.start(views)()

    def start(self, views: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Queue every member on `views` and return at once; calling the result waits for `probabilities`."""
        # every member at once, the costliest first: the graphs of one image share the cores (load_bundle)
        running = [(m, m.submit(views)) for m in sorted(self.members, key=lambda m: -m.cost)]

        def collect():
            probs, feats = {}, None
            for m, fut in running:
                out = fut.result()
                probs[m.name] = m.calibrated(out["logits"])
                if m is self.features_member:
                    feats = out["features"]
            return combine([probs[m.name] for m in self.members], self.temperature), feats
        return collect

    def operating_point(self, with_metadata: bool) -> tuple[dict, np.ndarray]:
        """(thresholds, decision_bias) for a result with or without patient metadata: each mode has its
        own, fitted on validation by the same rules (export.calibrate)."""
        if with_metadata and self.metadata is not None:
            meta = self.card["metadata"]
            return meta["thresholds"], np.asarray(meta["decision_bias"], np.float32)
        return self.thresholds, self.decision_bias

    def fuse_metadata(self, probs: np.ndarray, metas) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, used flags): the metadata fusion where a row has metadata and the bundle a model."""
        metas = list(metas) if metas is not None else [None] * len(probs)
        if self.metadata is None or not any(m is not None and m.present for m in metas):
            return probs, np.zeros(len(probs), bool)
        return self.metadata.fuse(probs, metas)


def read_card(path: Path) -> dict:
    card_path = Path(path) / "card.json"
    if not card_path.is_file():
        if (Path(path) / "best.pt").is_file() or (Path(path) / "last.pt").is_file():  # what `train` writes
            raise BundleError(f"{path}: a training run, not a model bundle; export it first: "
                              f"dermalens export {path} --out BUNDLE_FOLDER (docs/training.md)")
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
    if not isinstance(card["classes"], list) or not card["classes"]:
        raise BundleError(f"{card_path}: classes must be a list of the classes")
    for c in card["classes"]:
        if not isinstance(c, dict) or not {"code", "name", "malignant"} <= set(c):
            raise BundleError(f"{card_path}: each class needs code, name and malignant; got {c}")
    if not card_number(card["temperature"]) > 0:
        raise BundleError(f"{card_path}: temperature must be a number > 0, got {card['temperature']!r}")
    if not isinstance(card["thresholds"], dict) or any(math.isnan(card_number(v)) for v in card["thresholds"].values()):
        raise BundleError(f"{card_path}: thresholds must map names to numbers, got {card['thresholds']!r}")
    bias = card.get("decision_bias", [])
    if not isinstance(bias, list) or any(math.isnan(card_number(v)) for v in bias):
        raise BundleError(f"{card_path}: decision_bias must be numbers, got {card['decision_bias']!r}")
    members = card.get("members", [{}])
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise BundleError(f"{card_path}: members must be a non-empty list of member entries, got {members!r}")
    if "logit_bias" in card:
        raise BundleError(f"{card_path}: 'logit_bias' (probabilities shifted by a prior correction) is no longer "
                          "read; re-export the run with this dermalens (it writes 'decision_bias')")
    if len(card.get("decision_bias", card["classes"])) != len(card["classes"]):
        raise BundleError(f"{card_path}: decision_bias needs one value per class")
    if "malignant" not in card["thresholds"]:
        raise BundleError(f"{card_path}: thresholds.malignant missing")
    return card


def _read_ood(file: Path) -> dict | None:
    """The feature-distance model's arrays, read on the calling thread: np.load parses each array's header with
    Python's ast, which CPython 3.11 cannot do in two threads at once (SystemError: AST constructor recursion
    depth mismatch), and the graphs' loading reads .npz files meanwhile."""
    if not file.is_file():
        return None
    try:
        with np.load(file) as z:
            return {k: z[k] for k in z.files}
    except NPZ_ERRORS as e:
        raise BundleError(f"{file}: unreadable feature-distance model ({e or type(e).__name__})") from None


def _whiten_ood(arrays: dict | None, file: Path) -> dict | None:
    if arrays is None:
        return None
    try:
        return whiten(arrays)
    except (KeyError, ValueError, np.linalg.LinAlgError) as e:
        raise BundleError(f"{file}: unreadable feature-distance model ({e or type(e).__name__})") from None


def load_bundle(path: str | Path, threads: int | None = None, mode: str = "latency", runtime: str | None = None,
                precision: str | None = None, share_cores: bool = True) -> Bundle:
    """`mode`, `runtime`, `precision`: see inference.runtime.compile (defaults: fastest available here).
    `threads`: the cores to use (default: all this process may use). `share_cores`: the graphs of an image run
    side by side, so each gets an equal part of them (prediction); False gives each graph all of them, for jobs
    that run the graphs one after another (evaluation: the classifiers over a split, then the check)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: model bundle folder not found")
    card = read_card(path)
    try:
        spec = PreprocessSpec.from_dict(card["preprocessing"])
    except (TypeError, ValueError) as e:
        raise BundleError(f"{path / 'card.json'}: bad preprocessing spec ({e})") from None
    compile_options = {"mode": mode, "runtime": runtime, "precision": precision}
    if share_cores:
        threads = threads_per_graph(threads, len(member_entries(card)) + ("modality" in card))
    # its eigendecomposition overlaps the compiling; a pool per load, so a forked process has its own thread
    background = ThreadPoolExecutor(1, thread_name_prefix="dermalens-load")
    ood_job = background.submit(_whiten_ood, _read_ood(path / "ood.npz"), path / "ood.npz")
    background.shutdown(wait=False)
    try:
        members = [open_member(path, e, threads, spec.interpolation, **compile_options) for e in member_entries(card)]
    except MemberError as e:
        raise BundleError(str(e)) from None
    names = [m.name for m in members]
    if len(set(names)) != len(names) or features_member(card) not in names:
        raise BundleError(f"{path / 'card.json'}: member names {names} must be distinct and include the "
                          f"features member {features_member(card)!r}")
    for m, e in zip(members, member_entries(card)):
        _check_io(m.model, m.input_size, len(card["classes"]), path / e["graph"])
    main = next(m for m in members if m.name == features_member(card))
    ood = ood_job.result()
    if ood is None and "ood" in card["thresholds"]:  # else the feature-distance check would quietly be off
        raise BundleError(f"{path / 'ood.npz'}: missing (the card's thresholds.ood needs it)")
    metadata = None
    if "metadata" in card:
        meta_path = path / card["metadata"].get("file", "metadata.npz")
        if not meta_path.is_file():
            raise BundleError(f"{meta_path}: missing (the card describes a metadata model)")
        try:
            metadata = MetadataModel.load(meta_path, card["metadata"]["weight"])
        except NPZ_ERRORS + (MetadataError, KeyError, TypeError) as e:
            raise BundleError(f"{meta_path}: unusable metadata model ({e})") from None
        for key in ("thresholds", "decision_bias"):
            if key not in card["metadata"]:
                raise BundleError(f"{path / 'card.json'}: metadata.{key} missing")
    gate = None
    if "modality" in card:
        try:
            gate = load_gate(path, card["modality"], threads=threads, **compile_options)
        except KeyError as e:
            raise BundleError(f"{path / 'card.json'}: the modality section lacks {e}") from None
        except NPZ_ERRORS + (TypeError, rt.RuntimeUnavailable) as e:
            raise BundleError(f"unusable image-type check: {e or type(e).__name__}") from None
    return Bundle(path, card, spec, main.model, main.head_weight, main.head_bias, ood, members, metadata, gate)


def threads_per_graph(threads: int | None, graphs: int) -> int:
    """The cores (`threads`, default all this process may use) shared evenly by the graphs of one image, which
    run side by side: each on its own share rather than all on every core, where they would wait on each other's
    threads (docs/benchmarks.md). Cores left over by the division (4 cores, 3 graphs) serve the next request's
    decoding and graphs."""
    return max(1, rt.cores(threads) // max(1, graphs))


def _check_io(model: "rt.CompiledModel", input_size, n_classes: int, onnx_path: Path):
    inputs, outputs = model.inputs, model.outputs
    if "image" not in inputs or not {"logits", "features"} <= set(outputs):
        raise BundleError(f"{onnx_path}: expected input 'image' and outputs 'logits', 'features'; "
                          f"found {list(inputs)} -> {list(outputs)}")
    shape = inputs["image"]
    want = [3, *input_size]
    if len(shape) != 4 or list(shape[1:]) != want:
        raise BundleError(f"{onnx_path}: input shape {shape} does not match the card's preprocessing "
                          f"(N, {want[0]}, {want[1]}, {want[2]})")
    out_shape = outputs["logits"]
    if out_shape[-1] != n_classes:
        raise BundleError(f"{onnx_path}: {out_shape[-1]} outputs but the card lists {n_classes} classes")


def default_classes_for_card() -> list[dict]:
    return [{"code": c.code, "name": c.name, "malignant": c.malignant} for c in CLASSES]
