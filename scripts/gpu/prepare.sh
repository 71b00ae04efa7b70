#!/usr/bin/env bash
# Prepares, on a machine without a GPU, what scripts/gpu/check.sh and scripts/gpu/bench.sh need
# on the GPU machine, inside the checkout (all of it ignored by git through .git/info/exclude):
#   gpubin/{nmoco,gpu_check,gpu_conv_check,gpu_step}.xz   release builds with --features cuda (tools/cuda-env.sh)
#   shared/anchors, shared/oracles          the anchor scripts and the Spikformer oracle they import
#   .whl/                                   spikingjelly 2.0.0 + loguru 0.7.3 wheels (pip download)
# Usage: bash scripts/gpu/prepare.sh   (CARGO_TARGET_DIR is honoured; the CUDA build is slow the
# first time: candle's kernels compile with nvcc).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
exclude=$(git rev-parse --git-path info/exclude)
for p in /gpubin/ /shared/ /.whl/; do grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >> "$exclude"; done
source tools/cuda-env.sh
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --features cuda -p nmoco-cli
cargo build --release --features cuda -p nmoco-train --example gpu_step
cargo build --release --features cuda -p nmoco-snn --example gpu_check
cargo build --release --features cuda -p nmoco-conv --example gpu_conv_check
mkdir -p gpubin
for b in release/nmoco release/examples/gpu_step release/examples/gpu_check release/examples/gpu_conv_check; do
  xz -T0 -9 -c "$target/$b" > "gpubin/$(basename "$b").xz"
done
if [ -d ../shared/anchors ]; then
  mkdir -p shared
  rm -rf shared/anchors shared/oracles
  mkdir -p shared/anchors shared/oracles
  cp ../shared/anchors/*.py ../shared/anchors/*.sh shared/anchors/
  cp ../shared/oracles/spikformer_dvs.py shared/oracles/
fi
if ! ls .whl/spikingjelly-2.0.0-*.whl >/dev/null 2>&1; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 -d .whl spikingjelly==2.0.0 loguru==0.7.3 ||
    echo "could not fetch the SpikingJelly wheels: bench.sh then runs the nmoco rows only"
fi
du -sh gpubin shared .whl 2>/dev/null || true
