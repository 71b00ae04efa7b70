#!/usr/bin/env bash
# Build environment for candle's `cuda` feature on a machine with no GPU and no CUDA toolkit.
# Usage:  source tools/cuda-env.sh   then   cargo build --release --features cuda  (or: cargo xtask gpu-build)
# It installs CUDA 13.0 (matching the lent H200's driver) from PyPI wheels into a cache folder,
# plus cuDNN 9 (`nvidia-cudnn-cu13`, for nmoco-conv's cuDNN convolutions), builds a link-time stub of
# the driver library (libcuda.so) from cudarc's symbol list, links the CUDA and cuDNN libraries into the
# stub folder under the names the linker looks for, and exports PATH, CUDA_ROOT, CUDA_COMPUTE_CAP,
# CUDARC_CUDA_VERSION and RUSTFLAGS (-L to the stub folder).
# The binary then runs on a real GPU machine, where the driver's libcuda.so.1, the CUDA 13 libraries and
# libcudnn.so.9 are found at run time (there: scripts/gpu/env.sh puts <python site-packages>/nvidia/cu13/lib
# and <python site-packages>/nvidia/cudnn/lib on LD_LIBRARY_PATH).
_nmoco_cuda() {
  local root=${NMOCO_CUDA_HOME:-$HOME/.cache/nmoco-cuda13}
  [ -x "$root/venv/bin/pip" ] || python3 -m venv "$root/venv" || return 1
  if [ ! -x "$root/venv/lib/python3"*/site-packages/nvidia/cu13/bin/nvcc ]; then
    "$root/venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
      "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.88" \
      "nvidia-cublas==13.0.*" "nvidia-curand" || return 1
  fi
  local site; site=$(echo "$root"/venv/lib/python3*/site-packages)
  if ! ls "$site"/nvidia/cudnn/lib/libcudnn.so.9 "$site"/nvidia/cu13/lib/libcudnn.so.9 >/dev/null 2>&1; then
    "$root/venv/bin/pip" install -q "nvidia-cudnn-cu13==9.13.0.50" --no-deps || return 1
  fi
  local cudnn; cudnn=$(dirname "$(ls "$site"/nvidia/cudnn/lib/libcudnn.so.9 "$site"/nvidia/cu13/lib/libcudnn.so.9 2>/dev/null | head -1)")
  local cu="$site/nvidia/cu13"
  local stub="$root/stub"; mkdir -p "$stub"
  if [ ! -f "$stub/libcuda.so" ]; then
    local src; src=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys 2>/dev/null | tail -1)
    [ -n "$src" ] || { echo "cuda-env: run 'cargo fetch' first (cudarc sources are needed for the stub)"; return 1; }
    { grep -ohE "\bfn cu[A-Za-z0-9_]+\(" "$src"/*.rs | sed 's/fn //; s/(//'
      grep -ohE 'link_name = "[A-Za-z0-9_]+"' "$src"/*.rs | sed 's/link_name = "//; s/"//'; } | sort -u |
      awk '{print "void " $1 "(void){}"}' > "$stub/stub.c"
    gcc -shared -fPIC -o "$stub/libcuda.so" "$stub/stub.c" -Wl,-soname,libcuda.so.1 || return 1
  fi
  local l; for l in nvrtc:libnvrtc.so.13 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 cudart:libcudart.so.13; do
    ln -sf "$cu/lib/${l#*:}" "$stub/lib${l%%:*}.so"
  done
  ln -sf "$cudnn/libcudnn.so.9" "$stub/libcudnn.so"
  export PATH="$cu/bin:$PATH" CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} \
    CUDARC_CUDA_VERSION=13000 NVRTC_LIB_DIR="$cu/lib" RUSTFLAGS="${RUSTFLAGS:-} -L $stub"
  echo "cuda-env: nvcc $(nvcc --version | grep -o 'release [0-9.]*'), cuDNN in $cudnn, stub driver in $stub"
}
_nmoco_cuda
