#!/bin/bash
# One GPU session (after experiments/gpu/pack.sh): train configs/explore/$RUNS side by side,
# bring back best.pt (split in 15 MB parts) and the logs.
cd "$(dirname "$0")/../.." || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
DATA=../shared/data/ham10000
mkdir -p $DATA && tar -xzf .gpu/images.tar.gz -C $DATA && cp .gpu/ham/HAM10000_metadata.csv $DATA/ || exit 1
ls $DATA/images | wc -l
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc
python3 -c "import torch,timm,torchvision;print(torch.__version__,timm.__version__,torchvision.__version__)"
RUNS="${RUNS:-lite2_256x341_r1 lite2_256x341_distill lite2_288x384_r1}"
T=${TRAIN_SECONDS:-540}
pids=()
for c in $RUNS; do
  timeout $T python3 -c "from dermalens.cli import main; main()" train --config configs/explore/$c.json > /tmp/$c.log 2>&1 &
  pids+=($!)
done
(while sleep 45; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; uptime; done) > /tmp/gpu_util.log 2>&1 &
MON=$!
wait "${pids[@]}"
kill $MON
for c in $RUNS; do
  echo "== $c"; grep -h '^{' /tmp/$c.log; tail -c 600 /tmp/$c.log | tr '\r' '\n' | tail -3
  [ -f runs/$c/best.pt ] && split -b 15M runs/$c/best.pt $OUT/$c.best.pt.part-
done
cp /tmp/*.log runs/ 2>/dev/null
tar -czf $OUT/runs.tgz --exclude='*.pt' runs
cat /tmp/gpu_util.log | tail -20
ls -la $OUT
