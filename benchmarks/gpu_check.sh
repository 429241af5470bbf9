#!/usr/bin/env bash
# GPU check (issue 15): MILK on TikTok FTMT to early stopping on one GPU -> s/epoch, s/evaluation, peak GPU memory;
# with more than one GPU visible, also a 2-process nccl run. Under 8 minutes on one GPU; fails at once without one.
#   DATA_PATH=/work/data bash benchmarks/gpu_check.sh        # figures in $OUT/gpu_check-1.json (and -2.json)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-/work/data}
SHARED=${SHARED:-/work/shared/data/tiktok}
OUT=${OUT:-benchmarks/out/gpu_check}
LIMIT_S=${LIMIT_S:-420}   # per run; a run over it is a failure of the check, not a figure
ARGS=(--data_path="$DATA_PATH" --cold_item_file="$SHARED/reference_split.json"
      --missing_file="$SHARED/reference_missing.json" --out="$OUT")

GPUS=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" -eq 0 ]; then
    echo "error: gpu_check needs a CUDA GPU and torch sees none (torch.cuda.is_available() is False); nothing was run." >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$OUT"
echo "== 1 process, 1 GPU"
timeout "$LIMIT_S" python -m benchmarks.gpu_check "${ARGS[@]}" --nproc=1
if [ "$GPUS" -gt 1 ]; then
    echo "== 2 processes, nccl, 2 GPUs"
    timeout "$LIMIT_S" python -m benchmarks.gpu_check "${ARGS[@]}" --nproc=2
else
    echo "== one GPU visible: the 2-process nccl run is skipped"
fi
echo "figures: $OUT/gpu_check-*.json"
