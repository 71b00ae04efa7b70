#!/usr/bin/env bash
# The GPU check, run in one device session (see docs/benchmarks.md, "GPU"):
#   1. gpu_check: fused CUDA neuron kernels vs the reference twin, vs the CPU kernels, f16/bf16 vs
#      f32, any-T vs fixed-T kernels, the two-neurons-per-thread kernels (`_v2`, 2-element
#      loads/stores) vs the one-neuron kernels and the twin (every variant, f32/f16/bf16, even, odd
#      and misaligned N, with the launch counters confirming which kernel ran); the max-pool; the
#      fused training batch norm + IF/LIF op vs the batch-norm op chain + reference neuron
#      (statistics, spikes, dx/dgamma/dbeta; f32 and bf16); then the kernel benchmark at T = 16,
#      N = 16 Mi against a device-to-device copy (one- and two-neuron kernels, f32 and bf16);
#   1b. gpu_conv_check: cuDNN convolutions (forward, backward-data, backward-filter; f32, f32 + TF32,
#      bf16) vs the CPU twin, plan/algorithm caching, no input gradient for an untracked input;
#      then per-op timings at the SEW-ResNet-18 layer shapes (T = 16, B = 32, 2x128x128);
#   2. SpikingJelly's LIFNode on the same shape (2.0: its own CUDA choice; 0.0.0.0.14: CuPy);
#   3. the real job on the GPU: `nmoco pretrain --cuda` (the synthetic default) and
#      `nmoco linear-probe --cuda`;
#   4. 20 pre-training steps on CUDA and on the CPU from identical weights, queue and batches
#      (`gpu_step --compare-cpu 20`, SEW-ResNet-18 and Spikformer-2-256 at T = 4, B = 8, 64x64,
#      f32, TF32 off): per-step losses within 1e-3 relative;
#   5. the per-phase CUDA-event profile of gpu_step on a small shape (`--phases 3`): the JSON line
#      must report `phase_clock` "cuda-events" and a positive time for every phase.
# Inputs (built on a machine without a GPU, see `cargo xtask gpu-build`; the examples: source
# tools/cuda-env.sh; cargo build --release --features cuda -p nmoco-snn --example gpu_check
# -p nmoco-conv --example gpu_conv_check -p nmoco-train --example gpu_step):
# gpubin/{nmoco,gpu_check,gpu_conv_check,gpu_step}.xz and the wheels in .whl/ (spikingjelly 2.0.0,
# loguru, spikingjelly 0.0.0.0.14). Writes under $OUT.
set -u
source "$(dirname "$0")/env.sh" nmoco gpu_check gpu_conv_check gpu_step
log() { echo "== $(date +%T) $*"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader

log "gpu_check"
timeout 260 /tmp/bin/gpu_check --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
echo "gpu_check exit: ${PIPESTATUS[0]}"

log "gpu_conv_check (cuDNN)"
timeout 150 /tmp/bin/gpu_conv_check --time --candle --reps 5 --json "$OUT/gpu_conv_check.json" 2>&1 | tee "$OUT/gpu_conv_check.log"
echo "gpu_conv_check exit: ${PIPESTATUS[0]}"

log "spikingjelly 2.0.0 (auto)"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sj2 .whl/spikingjelly-2.0.0-*.whl .whl/loguru-*.whl 2>&1 | tail -2
PYTHONPATH=/tmp/sj2 PYTHONUNBUFFERED=1 timeout 100 python3 scripts/gpu/sj_lif_gpu.py --label sj2.0-auto 2>&1 | tail -5 | tee -a "$OUT/sj.log"
log "spikingjelly 0.0.0.0.14 (cupy)"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sj14 .whl/spikingjelly-0.0.0.0.14-*.whl 2>&1 | tail -2
PYTHONPATH=/tmp/sj14 PYTHONUNBUFFERED=1 timeout 70 python3 scripts/gpu/sj_lif_gpu.py --label sj0.14-cupy --backend cupy 2>&1 | tail -5 | tee -a "$OUT/sj.log"

log "pretrain --cuda"
export NMOCO_LOG=${NMOCO_LOG:-info}
timeout 120 /tmp/bin/nmoco pretrain --cuda --name gpu > "$OUT/pretrain.log" 2>&1
echo "pretrain exit: $?"; tail -c 2500 "$OUT/pretrain.log"
cp runs/gpu/metrics.jsonl "$OUT/" 2>/dev/null
log "linear-probe --cuda"
timeout 50 /tmp/bin/nmoco linear-probe --cuda --checkpoint runs/gpu > "$OUT/probe.log" 2>&1
echo "probe exit: $?"; tail -c 1500 "$OUT/probe.log"
find runs/gpu -name report.json -exec cp {} "$OUT/probe_report.json" \; 2>/dev/null
for model in sew18 spikformer; do
  log "cuda vs cpu, 20 steps, $model"
  NMOCO_CONV_TF32=0 timeout 150 /tmp/bin/gpu_step --compare-cpu 20 --model $model > "$OUT/cuda_vs_cpu_$model.log" 2>&1
  echo "cuda_vs_cpu $model exit: $?"; grep '^CHECK' "$OUT/cuda_vs_cpu_$model.log" || tail -3 "$OUT/cuda_vs_cpu_$model.log"
done
log "gpu_step phase profile (CUDA events), small shape"
timeout 90 /tmp/bin/gpu_step --t 4 --size 64 --batch 8 --k 256 --warmup 1 --steps 2 --phases 3 \
  > "$OUT/gpu_step_phases.json" 2> "$OUT/gpu_step_phases.err"
echo "gpu_step phases exit: $?"
(python3 - "$OUT/gpu_step_phases.json" <<'PY'
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
    ev = r.get("phases_event_ms", {})
    want = ["data_to_device", "query_forward", "key_forward", "loss", "backward", "optimizer", "momentum", "enqueue"]
    ok = r.get("phase_clock") == "cuda-events" and all(ev.get(k, 0) > 0 for k in want)
    print(f'CHECK gpu_step event phases: clock {r.get("phase_clock")}, total {sum(ev.values()):.2f} ms '
          f'(step_ms {r.get("step_ms")}), {ev} {"PASS" if ok else "FAIL"}')
except Exception as e:
    print(f"CHECK gpu_step event phases: FAIL ({e})")
PY
) | tee "$OUT/gpu_step_phases.check"
log "done"
grep -E "^(CHECK|\|)|copy bandwidth" "$OUT/gpu_check.log"
grep -E "^(CHECK|TIME)" "$OUT/gpu_conv_check.log"
grep '^SJ ' "$OUT/sj.log"
grep -h '^CHECK' "$OUT"/cuda_vs_cpu_*.log
cat "$OUT/gpu_step_phases.check"
