"""Print every training run tried so far as one Markdown table, from the committed record only.

    .venv/bin/python experiments/runs_table.py

Rows: `checkpoints/explore/validation.jsonl` (validation figures as `python -m dermalens.evaluate.compare`
printed them when each choice was made; two schemas, an older and the current one). Training minutes:
the `seconds` column of the run's history.csv (`checkpoints/explore/NAME.history.csv` or
`checkpoints/NAME/history.csv`), every epoch the run trained, not only up to its best. Validation only:
the test split was read for shipped bundles alone, and their cards hold those figures. `compare` prints accuracy
and ECE from session 8 on. In session 9 every earlier row whose weights still existed was re-run with `compare`
(same checkpoint, same tested size); its other figures matched the record to the fourth decimal, and only
then were its accuracy and ECE added. The GPU exploration runs' weights were not kept, so those rows say n/a.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "checkpoints" / "explore" / "validation.jsonl"


def _row(r: dict) -> dict:
    if "checkpoint" in r:  # the current schema, one line per checkpoint and tested size
        name = Path(r["checkpoint"]).parent.name
        return {"run": name, "trained": "x".join(map(str, r["input_size"])),
                "tested": "x".join(map(str, r["tested_at"])), "epoch": r["best_epoch"],
                "bacc": r["balanced_accuracy"], "macro": r["macro_auroc"], "mal": r["malignant_auroc"],
                "sens": r["sensitivity"], "spec": r["specificity"], "T": r["temperature"],
                "acc": r.get("accuracy"), "ece": r.get("ece")}
    name = r["run"].split(" ")[0]  # the older schema: "lite2_224x300 (shipped)"
    size = next((p for p in name.split("_") if "x" in p), "?")
    return {"run": r["run"], "trained": size, "tested": size, "epoch": r["epoch"], "bacc": r["bacc_raw"],
            "macro": r["macro_auroc"], "mal": r["mal_auroc"], "sens": r["sens"], "spec": r["spec"], "T": r["T"],
            "acc": r.get("accuracy"), "ece": r.get("ece")}


def _maybe(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def training_minutes(run: str) -> str:
    name = run.split(" ")[0]
    for path in (REPO / "checkpoints" / "explore" / f"{name}.history.csv",
                 REPO / "checkpoints" / name / "history.csv"):
        if path.is_file():
            with open(path) as f:
                rows = list(csv.DictReader(f))
            return f"{sum(float(r['seconds']) for r in rows) / 60:.0f} ({len(rows)} ep.)"
    if "bnrecal" in name:
        return "0 (batch-norm statistics only)"
    return "0 (weight average)" if "soup" in name else "n/a (history not kept)"


def main():
    rows = [_row(json.loads(line)) for line in RECORD.read_text().splitlines() if line.strip()]
    print("| run | trained at | tested at | best epoch | temperature | argmax bal. acc. | accuracy | macro AUROC | "
          "malignant AUROC | sens / spec | ECE | training minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['trained']} | {r['tested']} | {r['epoch']} | {r['T']} | {r['bacc']:.3f} | "
              f"{_maybe(r['acc'])} | {r['macro']:.4f} | {r['mal']:.4f} | {r['sens']:.3f} / {r['spec']:.3f} | "
              f"{_maybe(r['ece'])} | {training_minutes(r['run'])} |")


if __name__ == "__main__":
    main()
