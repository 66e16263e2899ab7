"""The README's headline-figures table, written from a bundle's card.json (never typed by hand).

    python -m dermalens.export.readme [--model models/dermalens-lite2] [--readme README.md] [--check]

Replaces what stands between the two marker comments in README.md; `--check` exits 1 when the README's
table differs from what the card says (a test runs it), and writes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..defaults import DEFAULT_MODEL, repo_root

START = "<!-- headline-figures: written by python -m dermalens.export.readme from card.json -->"
END = "<!-- /headline-figures -->"


def _ci(m: dict, figure: str) -> str:
    ci = (m.get("intervals") or {}).get(figure)
    return f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


def headline_table(card: dict) -> str:
    m = card["metrics"]["test"]
    mal = m["malignant"]
    ood = (card.get("ood") or {}).get("evaluation") or {}
    rows = [
        ("macro AUROC (7 classes)", f"{m['macro_auroc']:.3f}{_ci(m, 'macro_auroc')}"),
        ("malignant vs benign AUROC", f"{mal['auroc']:.3f}{_ci(m, 'malignant_auroc')}"),
        ("malignant sensitivity at the validation threshold",
         f"{mal['sensitivity']:.3f}{_ci(m, 'malignant_sensitivity')}, {mal['tp']} of {mal['tp'] + mal['fn']}"),
        ("malignant specificity at the same threshold", f"{mal['specificity']:.3f}{_ci(m, 'malignant_specificity')}"),
        ("balanced accuracy", f"{m['balanced_accuracy']:.3f}{_ci(m, 'balanced_accuracy')}"),
        ("accuracy", f"{m['accuracy']:.3f}{_ci(m, 'accuracy')}"),
        ("expected calibration error", f"{m['ece']:.3f}{_ci(m, 'ece')}"),
    ]
    if ood:
        rows.append(("non-dermoscopic test images turned away", f"{ood['flagged']} of {ood['total']}"))
    lines = [f"Bundle **{card['name']} {card['version']}**, test split ({m['n']} images, read once), "
             "95 % lesion-bootstrap intervals:", "", "| figure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def render(readme: str, card: dict) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README has no headline-figures markers ({START} ... {END})")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{headline_table(card)}\n{END}{after}"


def main(argv=None) -> int:
    root = repo_root() or Path.cwd()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="bundle folder holding card.json")
    ap.add_argument("--readme", default=str(root / "README.md"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's table differs from the card")
    a = ap.parse_args(argv)
    card = json.loads((Path(a.model) / "card.json").read_text())
    path = Path(a.readme)
    text = path.read_text()
    new = render(text, card)
    if a.check:
        print(f"{path}: {'matches' if new == text else 'differs from'} {Path(a.model) / 'card.json'}")
        return 0 if new == text else 1
    path.write_text(new)
    print(f"{path}: headline figures {'unchanged' if new == text else 'rewritten'} from {Path(a.model) / 'card.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
