#!/usr/bin/env bash
# 2 GPUs against 1 on one machine (issue 22), then evaluation and resume across process counts on GPUs.
#   OUT=/tmp/multi bash benchmarks/multi_gpu.sh          # on a machine with 2 GPUs; EXTRA="--compile" adds flags
#   PARTS=bench ... then PARTS=checks ...                  # the two halves in two calls (about 6 min each)
# Throughput: benchmarks/train.py at the same per-GPU batch on GPU 0 alone and under torchrun on both (NCCL),
# then the scaling table (goal: at least 1.85x). Checks: a short 2-GPU training resumed on 1 GPU with
# --keep-global-batch, and `renderocc eval` of it on 1 GPU (twice: is one GPU deterministic?) and on 2.
set -uo pipefail
OUT=${OUT:-/tmp/renderocc-multi}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-}:$PWD/src PYTHONUNBUFFERED=1
DATA=/tmp/renderocc-synth
RUN=/tmp/renderocc-run  # checkpoints stay out of $OUT
EXTRA=${EXTRA:-}
PARTS=${PARTS:-bench checks}
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo "=== $name ($(date -u +%H:%M:%S))" | tee -a "$OUT/suite.log"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tail -n 25
  echo "=== $name rc=${PIPESTATUS[0]}" | tee -a "$OUT/suite.log"
}
ONE=(env CUDA_VISIBLE_DEVICES=0 python3)  # GPU 0 alone
TWO=(python3 -m torch.distributed.run --standalone --nproc-per-node 2)  # both GPUs, NCCL
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
nvidia-smi topo -m | tee -a "$OUT/device.txt"

if [ ! -d $DATA/renderocc/v1.0-synthetic ]; then  # kept from an earlier call on the same machine
  step synth_data 90 python3 -m renderocc.cli synth --out $DATA --scenes 4 --frames 12 --image-size 450 800 \
    --device cuda --overwrite
  step prepare 60 python3 -m renderocc.cli prepare --dataroot $DATA --version v1.0-synthetic --workers 16
fi
if [[ $PARTS == *bench* ]]; then
BENCH=(benchmarks/train.py --dataroot $DATA --version v1.0-synthetic --batch-size 2 --num-workers 8 --steps 20)
for preset in r50-256x704 swinb-512x1408; do
  step "train1_$preset" 240 "${ONE[@]}" "${BENCH[@]}" --preset $preset --json "$OUT/train1_$preset.json" $EXTRA
  step "train2_$preset" 300 "${TWO[@]}" "${BENCH[@]}" --preset $preset --json "$OUT/train2_$preset.json" $EXTRA
done
python3 - "$OUT" <<'EOF' | tee "$OUT/scaling.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'preset':<16}{'batch/GPU':>10}{'1 GPU samples/s':>17}{'2 GPUs samples/s':>18}{'scaling':>9}")
for preset in ("r50-256x704", "swinb-512x1408"):
    try:
        one, two = (json.loads((out / f"train{n}_{preset}.json").read_text())[0] for n in (1, 2))
    except (FileNotFoundError, IndexError):
        print(f"{preset:<16} missing (see train1_{preset}.log / train2_{preset}.log)")
        continue
    ratio = two["samples_s"] / one["samples_s"]
    print(f"{preset:<16}{one['batch']:>10}{one['samples_s']:>17.2f}{two['samples_s']:>18.2f}{ratio:>8.2f}x")
EOF
fi

if [[ $PARTS == *checks* ]]; then
TRAIN=(-m renderocc.cli train --preset r50-256x704 --dataroot $DATA --out $RUN --no-progress)
rm -rf $RUN
step train_2gpu 240 "${TWO[@]}" "${TRAIN[@]}" --max-iters 20
step resume_1gpu 240 "${ONE[@]}" "${TRAIN[@]}" --max-iters 40 --resume                     # refused: says what to pass
step resume_1gpu_keep 240 "${ONE[@]}" "${TRAIN[@]}" --max-iters 40 --resume --keep-global-batch
EVAL=(-m renderocc.cli eval --checkpoint $RUN --dataroot $DATA --max-samples 11)  # an odd frame count
step eval_1gpu 240 "${ONE[@]}" "${EVAL[@]}" --json "$OUT/eval1.json"
step eval_1gpu_again 240 "${ONE[@]}" "${EVAL[@]}" --json "$OUT/eval1_again.json"
step eval_2gpu 240 "${TWO[@]}" "${EVAL[@]}" --json "$OUT/eval2.json"
python3 - "$OUT" <<'EOF' | tee "$OUT/eval_compare.txt"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
load = lambda name: json.loads((out / name).read_text())
one, again, two = load("eval1.json"), load("eval1_again.json"), load("eval2.json")
keys = ("frames", "miou", "rayiou")
for name, r in (("1 GPU", one), ("1 GPU again", again), ("2 GPUs", two)):
    print(f"{name:<12}" + "  ".join(f"{k} {r[k]}" for k in keys))
print("2 GPUs equal 1 GPU exactly:", two == one, "| 1 GPU repeatable:", again == one)
EOF
fi
tail -n 40 "$OUT/suite.log"
