#!/usr/bin/env bash
# The few-labels regime of docs/results.md: pre-train on the whole train split of a larger
# synthetic pool without labels, then linear probe and fine-tune with a stratified, seeded
# fraction of the train labels, next to supervised training from scratch with the same labels
# and budget; for each seed, loss and shuffled-BN setting. Writes one report.json per
# evaluation (under runs/fewlabels-*/final/eval/) and the table via scripts/fewlabels_table.py.
#
# Usage: scripts/fewlabels.sh [NMOCO_BINARY]   (default: builds and uses target/release/nmoco)
# Settings (environment; defaults = the full regime, hours on 2 cores):
#   SEEDS="0 1 2"  LOSSES="mix infonce mix_mean_key"  SHUFFLE="split off"
#   FRACTIONS="0.01 0.1 1.0"  FINETUNE_FRACTIONS=$FRACTIONS (those fine-tuned, and trained from
#   scratch; a subset saves the long 100 % runs)  PER_CLASS=20
#   EPOCHS=10 (pre-training; fine-tuning and training from scratch get the same)
#   POOL=datasets/synthetic/pool  OUT=runs/fewlabels  PREFIX=fewlabels
#   FIRST_VARIANT="mix split" (the variant whose runs also hold the baselines; default: the first
#   of LOSSES and SHUFFLE; set it when a rerun covers other variants, so baselines are not redone)
# A smoke run: SEEDS=0 LOSSES=mix SHUFFLE=split FRACTIONS="0.1 1.0" PER_CLASS=2 EPOCHS=1 \
#   POOL=/tmp/pool-smoke PREFIX=smoke scripts/fewlabels.sh target/debug/nmoco
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then cargo build --release -q -p nmoco-cli; bin=target/release/nmoco; fi
SEEDS=${SEEDS:-"0 1 2"}
LOSSES=${LOSSES:-"mix infonce mix_mean_key"}
SHUFFLE=${SHUFFLE:-"split off"}
FRACTIONS=${FRACTIONS:-"0.01 0.1 1.0"}
FINETUNE_FRACTIONS=${FINETUNE_FRACTIONS:-$FRACTIONS}
PER_CLASS=${PER_CLASS:-20}
EPOCHS=${EPOCHS:-10}
POOL=${POOL:-datasets/synthetic/pool}
OUT=${OUT:-runs/fewlabels}
PREFIX=${PREFIX:-fewlabels}
mkdir -p "$OUT"
if [ ! -f "$POOL/trials_to_test.txt" ]; then
  "$bin" make-synthetic --out "$POOL" --per-class "$PER_CLASS" > "$OUT/make-synthetic.txt" 2>&1
fi
cat "$OUT/make-synthetic.txt" 2>/dev/null || true
# Variant-major order (all seeds of the first variant first), so that a partial run already
# gives complete rows; finished steps leave a .done marker and are skipped on a rerun.
first_variant=${FIRST_VARIANT:-"$(echo $LOSSES | cut -d' ' -f1) $(echo $SHUFFLE | cut -d' ' -f1)"}
for loss in $LOSSES; do
  for sb in $SHUFFLE; do
    for seed in $SEEDS; do
      name=$PREFIX-$loss-$sb-s$seed
      if [ ! -f "runs/$name/final/encoder.safetensors" ]; then
        /usr/bin/time -f "pretrain wall %e s" "$bin" pretrain --config configs/synthetic_pool.toml --name "$name" \
          --set "data.root=\"$POOL\"" --set run.epochs="$EPOCHS" --set run.seed="$seed" \
          --set "moco.loss=\"$loss\"" --set "moco.shuffle_bn=\"$sb\"" > "$OUT/$name.pretrain.txt" 2>&1
      fi
      # The baselines (random-init probe, supervised from scratch) do not depend on the
      # pre-training variant: once per seed.
      base=--no-baseline
      if [ "$loss $sb" = "$first_variant" ]; then base=; fi
      for f in $FRACTIONS; do
        for proto in linear-probe finetune; do
          if [ $proto = finetune ] && [[ " $FINETUNE_FRACTIONS " != *" $f "* ]]; then continue; fi
          log="$OUT/$name.$proto-$f.txt"
          [ -f "$log.done" ] && continue
          set -- --checkpoint "runs/$name" $base --label-fraction "$f" --set seed="$seed"
          if [ $proto = linear-probe ]; then set -- "$@" --set probe.seed="$seed"; else set -- "$@" --set finetune.seed="$seed"; fi
          /usr/bin/time -f "$proto wall %e s" "$bin" $proto "$@" > "$log" 2>&1
          touch "$log.done"
        done
      done
    done
  done
done
python3 scripts/fewlabels_table.py "$PREFIX" | tee "$OUT/table.md"
