# Sourced by the scripts in scripts/gpu/: $OUT, the CUDA 13 and cuDNN 9 libraries of the device
# machine's Python packages (nvidia/cu13/lib, nvidia/cudnn/lib) on LD_LIBRARY_PATH, and the carried
# binaries unpacked into /tmp/bin.
# Usage: source scripts/gpu/env.sh nmoco [gpu_check]
OUT=${OUT:-/tmp/nmoco-gpu-out}
mkdir -p "$OUT" /tmp/bin
_site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
export LD_LIBRARY_PATH="$_site/nvidia/cu13/lib:$_site/nvidia/cudnn/lib:${LD_LIBRARY_PATH:-}"
for _b in "$@"; do
  xz -dc "gpubin/$_b.xz" > "/tmp/bin/$_b" && chmod +x "/tmp/bin/$_b" || { echo "cannot unpack gpubin/$_b.xz"; exit 1; }
done
