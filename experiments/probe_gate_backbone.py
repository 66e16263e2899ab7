"""Fit the image-type check on another ImageNet network's features, into a copy of the bundle, and print its
figures beside the shipped check's (docs/decisions/modality-check.md, "a larger ImageNet network").

The shipped bundle is not touched; the copy is left in --out for a look.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE
from dermalens.export import gate_graph, modality_bundle
from dermalens.train.models import BACKBONES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True, choices=[b for b in BACKBONES if b.startswith("efficientnet")])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=str(Path(DEFAULT_DATA).parent), help="the five collections")
    ap.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    ap.add_argument("--out", type=Path, default=Path("/tmp/gate-backbone-candidate"))
    ap.add_argument("--cache", type=Path, default=Path("cache/gate"))
    a = ap.parse_args()

    shipped = json.loads((Path(a.model) / "card.json").read_text())["modality"]
    shutil.rmtree(a.out, ignore_errors=True)
    shutil.copytree(a.model, a.out)
    # the feature graph and the cache key read the backbone from these two modules
    gate_graph.BACKBONE = modality_bundle.BACKBONE = a.backbone
    card = modality_bundle.fit_gate_into(a.out, Path(a.data), a.split_file, "9.9.9", a.cache)
    cand = card["modality"]
    print(f"\n| part | shipped ({shipped['backbone']['name']}) | candidate ({a.backbone}) |\n|---|---|---|")
    for old, new in zip(shipped["figures"], cand["figures"]):
        assert (old["set"], old["part"], old["stratum"]) == (new["set"], new["part"], new["stratum"])
        key = "passed" if new["dermoscopic"] else "flagged"
        name = f"{new['part']}: {new['set']} {new['stratum'] or ''}{key} (n={new['n']})"
        print(f"| {name} | {old[key]:.1%} | {new[key]:.1%} |")
    print(f"| check composites flagged | {shipped['composites']['flagged']:.1%} | {cand['composites']['flagged']:.1%} |")
    print(f"| check overlaid dermoscopy passed | {shipped['composite_check']['overlaid']['passed']:.1%} | "
          f"{cand['composite_check']['overlaid']['passed']:.1%} |")


if __name__ == "__main__":
    main()
