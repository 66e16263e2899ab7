"""The image-type check's pass / flag rates per collection and part (`rates`), and at one inference precision
beside the fitted (fp32) ones (`gate_rates`).

    dermalens gate-check --model models/dermalens --precision bf16 --record-in-card

The check was fitted and its threshold chosen on fp32 features (report/gate_scores.csv); where the CPU has
AMX the runtime runs it in bf16, which moves a few images that lie at the threshold. This rescores every
check and held-out image (not the fit part) with the shipped check at the given precision and writes the same
table as card["modality"]["figures"] under card["modality"]["figures_by_precision"][precision]. Nothing is
chosen on these figures.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..data.modality_sets import GateImage, gate_images
from ..inference.bundle import BundleError, read_card
from ..inference.modality import load_gate
from ..inference.runtime import RuntimeUnavailable
from ..preprocess import PreprocessSpec


def gate_rates(bundle: Path, data: Path, split_file: Path, runtime: str, precision: str) -> tuple[list[dict], dict]:
    """(rates table of the check and held-out parts, the runtime's description)."""
    if not Path(bundle).is_dir():
        raise BundleError(f"{bundle}: model bundle folder not found")
    card = read_card(Path(bundle))
    if "modality" not in card:
        raise BundleError(f"{bundle}: this bundle has no image-type check")
    spec = PreprocessSpec.from_dict(card["preprocessing"])
    try:
        gate = load_gate(Path(bundle), card["modality"], runtime=runtime, precision=precision, mode="throughput")
    except RuntimeUnavailable as e:
        raise ValueError(str(e)) from None
    except KeyError as e:
        raise BundleError(f"{Path(bundle) / 'card.json'}: the modality section lacks {e}") from None
    except (TypeError, ValueError) as e:  # load_gate's messages name the file
        raise BundleError(f"unusable image-type check: {e}") from None
    items = [it for it in gate_images(Path(data), Path(split_file)) if it.part != "fit"]
    with ThreadPoolExecutor(2) as pool:  # a chunk of decoded views at a time, not all 5,000
        p = np.concatenate([gate.probability(np.stack(list(pool.map(lambda it: spec.to_uint8(it.path),
                                                                    items[i:i + 64]))))
                            for i in range(0, len(items), 64)])
    return rates(p, items, gate.threshold), gate.model.describe()


def record_in_card(bundle: Path, table: list[dict], runtime_info: dict) -> None:
    path = Path(bundle) / "card.json"
    card = json.loads(path.read_text())
    entry = {"runtime": runtime_info["runtime"], "figures": table,
             "command": f"dermalens gate-check --model <bundle> --runtime {runtime_info['runtime']} "
                        f"--precision {runtime_info['precision']} --record-in-card"}
    card["modality"].setdefault("figures_by_precision", {})[runtime_info["precision"]] = entry
    from ..export.model_card import save_card
    save_card(bundle, card)


def rates(p: np.ndarray, items: list[GateImage], threshold: float) -> list[dict]:
    """Per collection and part (and HAM10000 class / isic_archive source): n and the share passed."""
    keys: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        keys.setdefault((it.set, it.part, ""), []).append(i)
        if it.set in ("ham10000", "isic_archive"):
            keys.setdefault((it.set, it.part, it.stratum), []).append(i)
    out = []
    for (s, part, stratum), idx in sorted(keys.items()):
        passed = float((p[idx] >= threshold).mean())
        out.append({"set": s, "part": part, "stratum": stratum, "n": len(idx), "dermoscopic": items[idx[0]].label == 1,
                    "passed": round(passed, 4), "flagged": round(1 - passed, 4)})
    return out


def print_rates(table: list[dict]) -> None:
    print(f"{'collection':18s} {'part':8s} {'stratum':24s} {'n':>5s} {'kind':>12s} {'passed':>7s} {'flagged':>7s}")
    for r in table:
        kind = "dermoscopic" if r["dermoscopic"] else "clinical"
        print(f"{r['set']:18s} {r['part']:8s} {r['stratum']:24s} {r['n']:5d} {kind:>12s} "
              f"{r['passed']:7.1%} {r['flagged']:7.1%}")
