"""Figures of one bundle at each inference precision, kept in its card next to the headline ones.

`dermalens evaluate --split val --precision bf16 --record-in-card` (and --split test) writes
card["metrics_by_precision"]["bf16"]["validation" | "test"]: the same metrics as the headline figures,
computed by the same predictor with the network run in bf16 (OpenVINO; natively on AMX / AVX512-BF16,
emulated elsewhere with the same bf16 rounding, only slower; summation order may differ). Nothing is chosen on these figures.
"""
from __future__ import annotations

import json
from pathlib import Path

SPLIT_KEYS = {"val": "validation", "test": "test"}
KEPT = ("n", "accuracy", "balanced_accuracy", "macro_auroc", "macro_f1", "ece", "tta")


def summary(metrics: dict) -> dict:
    out = {k: metrics[k] for k in KEPT if k in metrics}
    mal = metrics.get("malignant", {})
    out["malignant"] = {k: mal[k] for k in ("threshold", "sensitivity", "specificity", "auroc") if k in mal}
    return out


def record_in_card(bundle: str | Path, split: str, metrics: dict, runtime_info: dict) -> dict:
    """Write one split's figures at one precision into the bundle's card.json; returns the card."""
    if split not in SPLIT_KEYS:
        raise ValueError(f"--record-in-card is for the model's own val or test split, not {split!r}")
    path = Path(bundle) / "card.json"
    card = json.loads(path.read_text())
    by = card.setdefault("metrics_by_precision", {})
    entry = by.setdefault(runtime_info["precision"], {})
    entry[SPLIT_KEYS[split]] = summary(metrics)
    entry["runtime"] = runtime_info["runtime"]
    entry["command"] = (f"dermalens evaluate --model {bundle} --split {split} --runtime {runtime_info['runtime']} "
                        f"--precision {runtime_info['precision']} --record-in-card")
    from ..export.model_card import save_card
    save_card(bundle, card)  # MODEL_CARD.md quotes these figures too
    return card
