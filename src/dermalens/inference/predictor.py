"""Predictor: image -> calibrated probabilities, malignancy, risk level, OOD flag, Grad-CAM.

One forward pass gives logits and the last feature maps; everything else (temperature,
malignancy sum, OOD distance, Grad-CAM) is numpy on those two arrays.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import DISCLAIMER
from ..preprocess import ImageError, ImageSource, ReadSize, max_pixels_setting, open_image
from .bundle import Bundle, load_bundle
from .gradcam import gradcam, overlay, to_png
from .metadata import PatientMetadata
from .modality import GateScores
from .ood import COMPOSITE_IMAGE, EXPOSURE_RULES, NOT_DERMOSCOPIC, UNLIKE_TRAINING, Reason, exposure_reasons, \
    mahalanobis_score, size_reasons
from .layout import band_reasons, shape_reasons
from .risk import recommendation, risk_level
from .softmax import decide

LOW_CONFIDENCE = 0.5  # a top-class probability below this is shown as uncertain


@dataclass
class Prediction:
    codes: list[str]
    names: list[str]
    probabilities: np.ndarray
    malignancy: float
    malignant_threshold: float
    risk: str
    in_distribution: bool
    ood_score: float | None
    ood_threshold: float | None
    ood_reasons: list[Reason]
    pixels: np.ndarray  # the preprocessed uint8 image (input size), for overlays
    cam: np.ndarray | None = None
    cam_class: int | None = None
    tta: bool = False
    source: str = ""
    model: dict = field(default_factory=dict)
    decision_bias: np.ndarray | None = None  # the bundle's decision rule (see softmax.decide)
    source_size: tuple[int, int] | None = None  # (width, height) as sent, when known
    turned: bool = False  # the preprocessing turned the image 90 degrees (PreprocessSpec.turns)
    metadata: PatientMetadata | None = None  # as given (validated)
    metadata_used: bool = False  # whether the bundle's metadata model changed these probabilities
    dermoscopic: float | None = None  # the image-type check's probability that this is a dermoscopic image
    dermoscopic_threshold: float | None = None

    @property
    def top(self) -> int:
        """The predicted class: the bundle's decision rule, which may favour a rare class over a
        slightly more probable common one (then its probability is below the top bar's)."""
        return int(decide(self.probabilities[None], self.decision_bias)[0])

    @property
    def recommendation(self) -> str:
        """The advice shown with the risk level: for an image not assessed, what to send instead (risk.recommendation)."""
        return recommendation(self.risk, [r.code for r in self.ood_reasons])

    @property
    def confident(self) -> bool:
        return self.in_distribution and float(self.probabilities[self.top]) >= LOW_CONFIDENCE

    def overlay_png(self) -> bytes | None:
        """The heat-map over the network's view, turned back and reshaped to the image as sent,
        so it lies the way the user's own image does."""
        if self.cam is None:
            return None
        return to_png(as_sent(overlay(self.pixels, self.cam), self.turned, self.source_size))

    def to_dict(self, include_explanation: bool = True) -> dict:
        """The API's answer. An image that is not assessed gets no diagnosis at all: no class, no scores,
        no malignancy, only the reasons and the `indeterminate` risk level."""
        quality = {"in_distribution": self.in_distribution, "score": self.ood_score, "threshold": self.ood_threshold,
                   "reasons": [r.to_dict() for r in self.ood_reasons],
                   "dermoscopic_probability": self.dermoscopic, "dermoscopic_threshold": self.dermoscopic_threshold}
        if not self.in_distribution:
            return {"predictions": [], "prediction": None, "malignancy": None,
                    "risk": {"level": self.risk, "recommendation": self.recommendation},
                    "quality": quality, "tta": self.tta, "model": self.model,
                    "metadata": {"used": False,
                                 "given": self.metadata.to_dict() if self.metadata is not None else None},
                    "disclaimer": DISCLAIMER}
        order = np.argsort(-self.probabilities)
        probs = [float(p) for p in self.probabilities]
        d = {
            "predictions": [{"label": self.names[i], "code": self.codes[i], "prob": probs[i]} for i in order],
            "prediction": {"predicted_class": self.names[self.top], "code": self.codes[self.top],
                           "confidence": probs[self.top], "all_probabilities": probs,
                           "confident": self.confident,
                           "most_probable": self.codes[int(np.argmax(self.probabilities))]},
            "malignancy": {"probability": self.malignancy,
                           "label": "malignant" if self.malignancy >= self.malignant_threshold else "benign",
                           "threshold": self.malignant_threshold},
            "risk": {"level": self.risk, "recommendation": self.recommendation},
            "quality": quality,
            "tta": self.tta,
            "metadata": {"used": self.metadata_used,
                         "given": self.metadata.to_dict() if self.metadata is not None else None},
            "model": self.model,
            "disclaimer": DISCLAIMER,
        }
        if include_explanation and self.cam is not None:
            d["explanation"] = {"class": self.codes[self.cam_class],
                                "overlay": "data:image/png;base64," + base64.b64encode(self.overlay_png()).decode()}
        return d


def as_sent(view: np.ndarray, turned: bool, source_size: tuple[int, int] | None) -> np.ndarray:
    """HxWx3 uint8 in the network's geometry -> the orientation and aspect ratio of the image as
    sent (its longer side keeps the view's longer side)."""
    if turned:
        view = np.rot90(view, k=-1)  # undoes PIL's ROTATE_90 (counter-clockwise)
    if source_size:
        sw, sh = source_size
        long_side = max(view.shape[:2])
        size = (long_side, max(1, round(long_side * sh / sw))) if sw >= sh else \
            (max(1, round(long_side * sw / sh)), long_side)
        if size != (view.shape[1], view.shape[0]):
            view = np.asarray(Image.fromarray(np.ascontiguousarray(view)).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(view)


def _tta_views(x: np.ndarray) -> np.ndarray:
    """Dihedral views of NHWC images that keep the input shape: flips and the 180-degree
    rotation always; the 90-degree rotations too when the input is square."""
    views = [x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1]]
    if x.shape[1] == x.shape[2]:
        t = x.transpose(0, 2, 1, 3)
        views += [t, t[:, :, ::-1], t[:, ::-1, :], t[:, ::-1, ::-1]]
    return np.stack(views, axis=1)  # N x V x H x W x 3


class Predictor:
    def __init__(self, bundle: str | Path | Bundle, threads: int | None = None,
                 max_pixels: int | None = None, mode: str = "latency", runtime: str | None = None,
                 precision: str | None = None, share_cores: bool = True):
        """`mode`, `runtime`, `precision`: how the graphs are compiled (inference.runtime.compile); `threads`,
        `share_cores`: how they use the cores (load_bundle; share_cores=False for evaluation, which runs the
        graphs one after another: the classifiers over a split, then the check). `max_pixels`: pixels decoded per
        image at most; None: DERMALENS_MAX_PIXELS where set (the server's setting, for every tool), else 40 M."""
        self.max_pixels = max_pixels_setting() if max_pixels is None else max_pixels  # a bad setting before the load
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(
            bundle, threads=threads, mode=mode, runtime=runtime, precision=precision, share_cores=share_cores)
        b = self.bundle
        self.model_info = {"name": b.card["name"], "version": b.card["version"],
                           "backbone": b.card.get("backbone", {}).get("name"),
                           "members": [m.name for m in b.members], "accepts_metadata": b.metadata is not None}
        self.runtime_info = b.model.describe()  # runtime, precision, mode: for /health, /model, bench
        t = b.thresholds
        self.threshold = float(t["malignant"])
        self.high_threshold = float(t.get("high_risk", 1.0))
        self.ood_threshold = float(t["ood"]) if "ood" in t and b.ood is not None else None
        self.exposure_rules = b.card.get("ood", {}).get("exposure_rules", EXPOSURE_RULES)
        self.min_short_side = b.card.get("ood", {}).get("min_short_side")  # absent from older cards: not applied
        self.layout_rules = b.card.get("ood", {}).get("layout_rules")  # likewise

    # ---- arrays in, arrays out (used by evaluation too) ------------------------------------
    def forward(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 8, metadata=None):
        """uint8 NxHxWx3 -> (calibrated probs NxK, pooled features NxC, feature maps NxCxhxw).
        `batch_size` counts network inputs, so TTA views share it (memory stays bounded).
        `metadata`: one PatientMetadata (or None) per image, fused when the bundle has a metadata model
        (`fuse` says for which rows it was used)."""
        probs, pooled, maps = self.start_forward(pixels, tta, batch_size)()
        if metadata is not None:
            probs, _ = self.fuse(probs, metadata)
        return probs, pooled, maps

    def start_forward(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 8):
        """`forward` without the metadata, started at once: calling the result waits for it. The first
        batch's networks run while the caller goes on; each later batch is queued before the one before
        it is collected, so at most two batches are in flight."""
        if tta:
            batch_size = max(1, batch_size // (8 if pixels.shape[1] == pixels.shape[2] else 4))
        chunks = [pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)]
        first = self._start_batch(chunks[0], tta) if chunks else None

        def collect():
            probs, pooled, maps = [], [], []
            running = first
            for k in range(len(chunks)):
                following = self._start_batch(chunks[k + 1], tta) if k + 1 < len(chunks) else None
                p, feats = running()
                probs.append(p)
                pooled.append(feats.mean(axis=(2, 3)))
                maps.append(feats)
                running = following
            return np.concatenate(probs), np.concatenate(pooled), np.concatenate(maps)
        return collect

    def _start_batch(self, chunk: np.ndarray, tta: bool):
        if not tta:
            return self.bundle.start(chunk)
        views = _tta_views(chunk)
        n, v = views.shape[:2]
        running = self.bundle.start(views.reshape(n * v, *views.shape[2:]))

        def collect():
            p, feats = running()
            return p.reshape(n, v, -1).mean(axis=1), feats.reshape(n, v, *feats.shape[1:])[:, 0]
        return collect

    def fuse(self, probs: np.ndarray, metadata) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, used flags) after the bundle's metadata fusion (unchanged rows where none)."""
        return self.bundle.fuse_metadata(probs, metadata)

    @property
    def accepts_metadata(self) -> bool:
        return self.bundle.metadata is not None

    def ood_scores(self, pooled: np.ndarray) -> np.ndarray | None:
        if self.bundle.ood is None:
            return None
        return mahalanobis_score(pooled, self.bundle.ood)

    def dermoscopic(self, pixels: np.ndarray) -> np.ndarray | None:
        """The modality check's probability that each image is dermoscopic (None without the check)."""
        return None if self.bundle.gate is None else self.bundle.gate.probability(pixels)

    def reasons(self, pixels: np.ndarray, pooled: np.ndarray, source_sizes=None,
                dermoscopic: GateScores | None = None,
                exposure: list | None = None) -> tuple[list[list[Reason]], dict]:
        """Why each image is not assessed (an empty list: it is), and the scores behind it. `dermoscopic`,
        `exposure`: the image-type check's GateScores and each image's pixel_reasons when already computed
        (predict_pixels works them out while the networks run)."""
        scores = self.ood_scores(pooled)
        gate = self.bundle.gate
        if dermoscopic is None and gate is not None:
            dermoscopic = gate.scores(pixels)
        derm, composite = (None, None) if dermoscopic is None else (dermoscopic.dermoscopic, dermoscopic.composite)
        if exposure is None:
            exposure = [self.pixel_reasons(p) for p in pixels]
        out = []
        for i in range(len(pixels)):
            reasons = list(exposure[i])
            size = source_sizes[i] if source_sizes else None
            if size:
                framed = getattr(size, "trimmed", False)  # the size is of the part inside a dark frame
                reasons += size_reasons(*size, self.min_short_side, framed)
                if not _told_composite(reasons):  # one layout reason is enough
                    reasons += shape_reasons(*size, self.layout_rules, framed)
            if derm is not None and derm[i] < gate.threshold:
                if not _told_composite(reasons):  # a picture found put together is told that alone
                    reasons.append(COMPOSITE_IMAGE if composite is not None and composite[i] else NOT_DERMOSCOPIC)
            elif scores is not None and self.ood_threshold is not None and scores[i] > self.ood_threshold:
                reasons.append(UNLIKE_TRAINING)  # said only of dermoscopy: an ordinary photo gets the plainer reason
            out.append(reasons)
        return out, {"ood": scores, "dermoscopic": derm}

    def pixel_reasons(self, pixels: np.ndarray) -> list[Reason]:
        """The checks that read the view's pixels alone: exposure and colour, then the paper band."""
        return exposure_reasons(pixels, self.exposure_rules) + band_reasons(pixels, self.layout_rules)

    def malignancy(self, probs: np.ndarray) -> np.ndarray:
        return probs[:, self.bundle.malignant].sum(axis=1)

    # ---- images in, Predictions out ------------------------------------------------------
    def load(self, source: ImageSource) -> np.ndarray:
        return self.bundle.spec.to_uint8(source, max_pixels=self.max_pixels)

    def open_image(self, source: ImageSource):
        """Open an image lazily under this predictor's pixel limit, as its view will decode it (a big JPEG at
        reduced scale), refusing what is not an image or too large (preprocess.open_image)."""
        return open_image(source, max_pixels=self.max_pixels, at_least=self.bundle.spec.decode_at_least)

    def load_sized(self, img) -> tuple[np.ndarray, ReadSize]:
        """PreprocessSpec.load_sized under this predictor's pixel limit."""
        return self.bundle.spec.load_sized(img, max_pixels=self.max_pixels)

    def predict(self, source: ImageSource, tta: bool = False, explain: bool = False,
                explain_class: int | None = None, metadata: PatientMetadata | None = None) -> Prediction:
        pixels, size = self.load_sized(self.open_image(source))  # opened once, as the API does
        return self.predict_pixels(pixels[None], tta=tta, explain=explain,
                                   explain_class=explain_class, sources=[_name(source)], source_sizes=[size],
                                   metadata=None if metadata is None else [metadata])[0]

    def predict_pixels(self, pixels: np.ndarray, tta: bool = False, explain: bool = False,
                       explain_class: int | None = None, sources=None,
                       source_sizes: list[tuple[int, int] | None] | None = None,
                       metadata: list[PatientMetadata | None] | None = None) -> list[Prediction]:
        """`source_sizes`: (width, height) of each image as sent, for the size check; None skips it
        (the pixels alone no longer tell how small the image was). `metadata`: one PatientMetadata or
        None per image; each result says whether it was used (its thresholds follow)."""
        networks = self.start_forward(pixels, tta=tta)  # the members, costliest first, then the check
        gate = None if self.bundle.gate is None else self.bundle.gate.start(pixels)
        exposure = [self.pixel_reasons(p) for p in pixels]  # while the graphs run
        probs, pooled, maps = networks()
        probs, used = self.fuse(probs, metadata)
        all_reasons, checks = self.reasons(pixels, pooled, source_sizes, None if gate is None else gate(), exposure)
        scores, derm = checks["ood"], checks["dermoscopic"]
        mal = self.malignancy(probs)
        b = self.bundle
        out = []
        for i in range(len(pixels)):
            reasons = all_reasons[i]
            size = source_sizes[i] if source_sizes else None
            score = None if scores is None else float(scores[i])
            ind = not reasons
            thresholds, bias = b.operating_point(bool(used[i]))
            t_mal, t_high = float(thresholds["malignant"]), float(thresholds.get("high_risk", 1.0))
            p = Prediction(b.codes, b.names, probs[i], float(mal[i]), t_mal,
                           risk_level(float(mal[i]), t_mal, t_high, ind),
                           ind, score, self.ood_threshold, reasons, pixels[i], tta=tta,
                           source=(sources[i] if sources else ""), model=self.model_info,
                           decision_bias=bias, source_size=tuple(size) if size else None,
                           turned=bool(size) and _turned(size, b.spec),
                           metadata=metadata[i] if metadata is not None else None, metadata_used=bool(used[i]),
                           dermoscopic=None if derm is None else round(float(derm[i]), 4),
                           dermoscopic_threshold=None if b.gate is None else b.gate.threshold)
            if explain:
                c = p.top if explain_class is None else int(explain_class)
                if not 0 <= c < len(b.codes):
                    raise ValueError(f"explain_class must be in 0..{len(b.codes) - 1}")
                # from the features member (card["ensemble"]["features_member"]), for the bundle's class
                p.cam, p.cam_class = gradcam(maps[i], b.head_weight, c, b.spec.input_size), c
            out.append(p)
        return out


def _told_composite(reasons: list[Reason]) -> bool:
    return any(r.code == COMPOSITE_IMAGE.code for r in reasons)


def _turned(size, spec) -> bool:
    """Whether the view turned the image: the view's own decision where the size carries it (ReadSize)."""
    turned = getattr(size, "turned", None)
    return spec.turns(*size) if turned is None else turned


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else ""


__all__ = ["Predictor", "Prediction", "ImageError"]
