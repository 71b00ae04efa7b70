#!/usr/bin/env bash
# SEW-ResNet-18 NeuroMoCo pre-training on the GPU at DVS128 Gesture's shape (T = 16, 128x128,
# configs/dvs128gesture_sew18.toml), fed by the synthetic set (it has Gesture's layout), with K
# lowered to fit its 420 training samples. Needs gpubin/nmoco.xz (see scripts/gpu/check.sh).
set -u
source "$(dirname "$0")/env.sh" nmoco
/tmp/bin/nmoco make-synthetic > "$OUT/synth.log" 2>&1 || { tail "$OUT/synth.log"; exit 1; }
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/gpu_mem.txt" &
smi=$!
timeout ${NMOCO_GPU_TIMEOUT:-300} /tmp/bin/nmoco pretrain --cuda --config configs/dvs128gesture_sew18.toml \
  --name gesture-shape --set 'data.dataset="synthetic"' --set data.root=datasets/synthetic/generated \
  --set moco.k=256 --set optim.batch_size=${BATCH:-32} --set run.epochs=${EPOCHS:-4} --set optim.warmup_epochs=1.0 > "$OUT/pretrain.log" 2>&1
echo "pretrain exit: $?"
kill $smi 2>/dev/null
echo "peak GPU memory used: $(sort -n "$OUT/gpu_mem.txt" | tail -1) MiB"
grep -aE "samples_per_s|^(run|epochs|loss|knn|throughput|wall)" "$OUT/pretrain.log" | tail -12
cp runs/gesture-shape/metrics.jsonl "$OUT/" 2>/dev/null
