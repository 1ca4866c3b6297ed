#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md in one go (a lent GPU is held by the minute, so one call does all).
#   OUT=/tmp/gpu bash benchmarks/gpu_suite.sh
# Each step has its own time limit and writes its table to $OUT/<step>.log as it goes, so a step that runs
# long costs only itself. Data is generated on the machine (not carried).
set -uo pipefail
OUT=${OUT:-/tmp/renderocc-gpu}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src PYTHONUNBUFFERED=1
DATA=/tmp/renderocc-synth
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S))" | tee -a "$OUT/suite.log"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 25
  echo "=== $name rc=${PIPESTATUS[0]}" | tee -a "$OUT/suite.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"

step render 150 python3 benchmarks/render.py --check --sweep --repeats 20 --json "$OUT/render.json"
step synth_speed 90 python3 benchmarks/synth.py --device cuda --image-size 450 800 --scenes 4 --frames 25 --repeats 1
step synth_data 60 python3 -m renderocc.cli synth --out $DATA --scenes 4 --frames 12 --image-size 450 800 \
  --device cuda --overwrite
step prepare 45 python3 -m renderocc.cli prepare --dataroot $DATA --version v1.0-synthetic --workers 16
[ "${LOADER:-1}" = 1 ] && step loader 70 python3 benchmarks/loader.py --dataroot $DATA --version v1.0-synthetic --workers 2 16 \
  --sizes 256x704 512x1408
[ -n "${WITH_MODEL:-}" ] && step model 400 python3 benchmarks/model.py --preset r50-256x704 --device cuda --batch 1 2 \
  --compile --json "$OUT/model_r50.json"
step train 200 python3 benchmarks/train.py --dataroot $DATA --version v1.0-synthetic \
  --preset r50-256x704 swinb-512x1408 --batch-size 1 2 --num-workers 8
step stages 150 python3 benchmarks/train.py --dataroot $DATA --version v1.0-synthetic \
  --preset r50-256x704 swinb-512x1408 --batch-size 2 --num-workers 8 --stages
step inference 120 python3 benchmarks/inference.py --dataroot $DATA --version v1.0-synthetic \
  --preset r50-256x704 swinb-512x1408 --num-workers 8
tail -n 40 "$OUT/suite.log"
