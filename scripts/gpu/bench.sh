#!/usr/bin/env bash
# The GPU benchmark of issue 12, one device session (<= 8 minutes on an H200): one NeuroMoCo step
# of nmoco (`gpu_step`, what `cargo xtask bench gpu-step` runs) beside PyTorch + SpikingJelly
# (`gpu_moco_step.py`, the "GPU anchor" of shared/anchors/README.md), SEW-ResNet-18 then
# Spikformer-2-256, T = 16, 2x128x128, batch 32, K = 1024:
#   f32  : nmoco --precision f32 --tf32 1      vs  gpu_moco_step.py --tf32 (TF32 convs and matmuls)
#   bf16 : nmoco --precision bf16              vs  gpu_moco_step.py --amp  (bf16 autocast)
# each with two per-phase profiles (`phases_ms`: synchronised after every phase; `phases_event_ms`:
# CUDA events at each phase end of an unsynchronised step), then a memory trace of the device.
#
# Inputs, prepared on a machine without a GPU:
#   gpubin/gpu_step.xz   xz -9 of target/release/examples/gpu_step from
#                        `source tools/cuda-env.sh; cargo build --release --features cuda -p nmoco-train --example gpu_step`
#   .whl/                spikingjelly-2.0.0, loguru-0.7.3 wheels (see shared/anchors/README.md)
#   shared/anchors, shared/oracles   copies of ../shared/{anchors,oracles} inside the checkout
#                        (ignored by git, carried), or set ANCHORS=<folder with gpu_moco_step.py>
# Knobs: STEPS (8), WARMUP (3), PHASES (2), PER_RUN_S (110), ROWS ("sew-f32 sew-bf16 sf-f32 sf-bf16").
# Writes $OUT/bench.jsonl (one JSON line per run, nmoco and anchor), $OUT/*.err, $OUT/gpu_mem.txt.
set -u
source "$(dirname "$0")/env.sh" gpu_step
here=$(cd "$(dirname "$0")/../.." && pwd)
ANCHORS=${ANCHORS:-}
for d in "$here/shared/anchors" "$here/../shared/anchors"; do
  [ -z "$ANCHORS" ] && [ -f "$d/gpu_moco_step.py" ] && ANCHORS=$d
done
STEPS=${STEPS:-8}; WARMUP=${WARMUP:-3}; PHASES=${PHASES:-2}; PER_RUN_S=${PER_RUN_S:-110}
ROWS=${ROWS:-"sew-f32 sew-bf16 sf-f32 sf-bf16"}
log() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$OUT/gpu_mem.txt" &
smi=$!

have_sj=0
if [ -n "$ANCHORS" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sj2 \
     .whl/spikingjelly-2.0.0-*.whl .whl/loguru-*.whl 2>/dev/null; then
  have_sj=1
else
  echo "anchor unavailable (ANCHORS=$ANCHORS, wheels in .whl/): nmoco rows only"
fi
export PYTHONUNBUFFERED=1

ours() {  # ours <row> <args...>
  local row=$1; shift
  log "nmoco $row: $*"
  timeout "$PER_RUN_S" /tmp/bin/gpu_step --steps "$STEPS" --warmup "$WARMUP" --phases "$PHASES" "$@" \
    2> "$OUT/nmoco_$row.err" | sed "s/^{/{\"row\":\"$row\",/" | tee -a "$OUT/bench.jsonl"
  local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || { echo "nmoco $row exit $rc"; tail -5 "$OUT/nmoco_$row.err"; }
}
anchor() {  # anchor <row> <args...>
  local row=$1; shift
  [ "$have_sj" = 1 ] || return 0
  log "anchor $row: $*"
  PYTHONPATH=/tmp/sj2 timeout "$PER_RUN_S" python3 "$ANCHORS/gpu_moco_step.py" --steps "$STEPS" --warmup "$WARMUP" \
    --phases "$PHASES" "$@" 2> "$OUT/anchor_$row.err" | sed "s/^{/{\"row\":\"$row\",/" | tee -a "$OUT/bench.jsonl"
  local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || { echo "anchor $row exit $rc"; tail -5 "$OUT/anchor_$row.err"; }
}
row() { [[ " $ROWS " == *" $1 "* ]]; }

row sew-f32  && { ours sew-f32 --model sew18 --precision f32 --tf32 1; anchor sew-f32 --tf32; }
row sew-bf16 && { ours sew-bf16 --model sew18 --precision bf16; anchor sew-bf16 --amp; }
row sf-f32   && { ours sf-f32 --model spikformer --precision f32 --tf32 1; anchor sf-f32 --model spikformer --tf32; }
row sf-bf16  && { ours sf-bf16 --model spikformer --precision bf16; anchor sf-bf16 --model spikformer --amp; }

kill $smi 2>/dev/null
log "done; device memory used at most $(sort -n "$OUT/gpu_mem.txt" | tail -1) MiB"
python3 - "$OUT/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in rows:
    ours = r.get("bench") == "gpu_step"
    step_ms = r["step_ms"] if ours else r.get("step_s", float("nan")) * 1e3
    mem = r.get("peak_gpu_mem_mib", {}) if ours else {"alloc": r.get("peak_alloc_mb"), "reserved": r.get("peak_reserved_mb"), "device_used": r.get("device_used_mb")}
    print(f'{r.get("row","?"):9s} {"nmoco" if ours else "pytorch+sj":11s} samples/s {r.get("samples_per_s")}  '
          f'step_ms {step_ms:.1f}  mem_mib {mem}  phases_ms {r.get("phases_ms")}')
    if ours and r.get("phases_event_ms"):
        ev = r["phases_event_ms"]
        tot = sum(ev.values()) or float("nan")
        print(f'{"":21s}phases by {r.get("phase_clock")}: ' +
              "  ".join(f'{k} {v:.1f} ms ({100 * v / tot:.0f} %)' for k, v in ev.items()))
PY
