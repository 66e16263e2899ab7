"""Should the image-type check look a second time, at the centre of the view, where its first look refuses?

    .venv/bin/python experiments/decide_second_look.py --heldout-out heldout.json     # check parts + OOD set
    .venv/bin/python experiments/decide_second_look.py --show heldout.json            # after the decision

Scores every check and held-out image of the check's five collections (not the fit part) with the shipped
check, at fp32, once as shipped and once with `second_look` (docs/decisions/modality-check.md gives the rule,
written before this ran). Prints the check parts and the out-of-distribution set; the held-out parts go to a
file, to be read once the decision is taken.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from dermalens.data import load_ham10000, select_split
from dermalens.data.modality_sets import gate_images
from dermalens.defaults import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_SPLIT_FILE
from dermalens.evaluate.gate_figures import print_rates, rates
from dermalens.evaluate.ood_eval import evaluate_gate
from dermalens.inference import Predictor

CENTRE = 0.75  # the view's central 192x256: the check's own input size, nothing resampled


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--shared", default=str(Path(DEFAULT_DATA).parent), help="the folder of the five collections")
    ap.add_argument("--split-file", default=str(DEFAULT_SPLIT_FILE))
    ap.add_argument("--heldout-out", help="where the held-out rows go (not printed)")
    ap.add_argument("--show", help="print the held-out rows written by an earlier run")
    a = ap.parse_args(argv)
    if a.show:
        for name, table in json.loads(Path(a.show).read_text()).items():
            print(name)
            print_rates(table)
        return
    predictor = Predictor(a.model, precision="fp32", share_cores=False)
    shipped = predictor.bundle.gate
    candidate = replace(shipped, second_look=CENTRE)
    spec = predictor.bundle.spec
    items = [it for it in gate_images(Path(a.shared), Path(a.split_file)) if it.part != "fit"]
    first, second = [], []
    with ThreadPoolExecutor(2) as pool:
        for i in range(0, len(items), 64):
            views = np.stack(list(pool.map(lambda it: spec.to_uint8(it.path), items[i:i + 64])))
            p = shipped.probability(views)
            first.append(p)
            second.append(candidate._look_again(views, p))
    tables = {"shipped": rates(np.concatenate(first), items, shipped.threshold),
              "second look": rates(np.concatenate(second), items, shipped.threshold)}
    for name, table in tables.items():
        print(f"{name}: check parts")
        print_rates([r for r in table if r["part"] == "check"])
    test = select_split(load_ham10000(Path(a.shared) / "ham10000"), "test", Path(a.split_file))[:10]
    lesions = np.stack([predictor.load(r.path) for r in test])
    predictor.bundle.gate = candidate
    ood = evaluate_gate(predictor, lesion_pixels=lesions)
    print(f"out-of-distribution set with the second look: {ood['flagged']}/{ood['total']} not assessed; "
          f"missed: {ood['missed'] or 'none'}")
    if a.heldout_out:
        Path(a.heldout_out).write_text(json.dumps(
            {k: [r for r in t if r["part"] == "heldout"] for k, t in tables.items()}, indent=1))
        print(f"held-out rows written to {a.heldout_out} (read them with --show once the decision is taken)")


if __name__ == "__main__":
    main()
