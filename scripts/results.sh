#!/usr/bin/env bash
# Reproduces docs/results.md: NeuroMoCo (MixInfoNCE) vs plain InfoNCE (lambda = 1) at the same
# budget, the random-init linear probe and supervised training from scratch, over 3 seeds, on the
# synthetic default. Usage: scripts/results.sh [NMOCO_BINARY]   (default: builds and uses target/release/nmoco)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then cargo build --release -q -p nmoco-cli; bin=target/release/nmoco; fi
out=${RESULTS_DIR:-runs/results}
mkdir -p "$out"
for seed in 0 1 2; do
  for loss in mix infonce; do
    name=results-$loss-s$seed
    [ -f runs/$name/final/encoder.safetensors ] || \
      "$bin" pretrain --name "$name" --set run.seed=$seed --set "moco.loss=\"$loss\"" > "$out/$name.pretrain.txt" 2>&1
    "$bin" linear-probe --checkpoint runs/$name --set seed=$seed > "$out/$name.probe.txt" 2>&1
  done
  # Fine-tuning and supervised-from-scratch with the pre-training's budget (its 16 epochs), then
  # both again with a longer budget (60 epochs) as the converged supervised reference.
  "$bin" finetune --checkpoint runs/results-mix-s$seed --set seed=$seed --set finetune.seed=$seed > "$out/results-mix-s$seed.finetune.txt" 2>&1
  "$bin" finetune --checkpoint runs/results-mix-s$seed --tag e60 --set finetune.epochs=60 --set seed=$seed --set finetune.seed=$seed > "$out/results-mix-s$seed.finetune-e60.txt" 2>&1
done
echo "results in $out"
