#!/usr/bin/env bash
# Bisects the per-step GPU memory growth seen with SEW-ResNet-18 at DVS128 Gesture's shape
# (docs/benchmarks.md, "Training steps on the GPU"): a few short --cuda pre-training runs on the synthetic set,
# device memory sampled every 200 ms. Needs gpubin/nmoco.xz.
set -u
source "$(dirname "$0")/env.sh" nmoco
/tmp/bin/nmoco make-synthetic > /dev/null 2>&1
probe() {
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/mem_$name.txt" &
  local smi=$!
  timeout ${SECS:-30} /tmp/bin/nmoco pretrain --cuda --name "$name" --set 'data.dataset="synthetic"' \
    --set data.root=datasets/synthetic/generated --set moco.k=256 --set optim.batch_size=8 \
    --set run.epochs=1 --set optim.warmup_epochs=0.5 --set monitor.knn_every=0 "$@" > "$OUT/log_$name.txt" 2>&1
  local rc=$?
  kill $smi; sleep 0.3
  local steps; steps=$(grep -c '"kind":"step"' runs/$name/metrics.jsonl 2>/dev/null)
  echo "$name rc=$rc steps=${steps:-0} mem(MiB, every 1 s): $(awk 'NR%5==1' "$OUT/mem_$name.txt" | tr '\n' ' ')"
}
want() { [ -z "${PROBES:-}" ] || [[ " $PROBES " == *" $1 "* ]]; }
want r18_t16_128 && probe r18_t16_128 --config configs/dvs128gesture_sew18.toml
want r18_t16_128_infonce && probe r18_t16_128_infonce --config configs/dvs128gesture_sew18.toml --set 'moco.loss="infonce"'
want small_t16_128 && probe small_t16_128 --set data.frames.t=16 --set data.frames.height=128 --set data.frames.width=128
want r18_t4_32 && probe r18_t4_32 --set 'model.preset="sew_resnet18"'
true
