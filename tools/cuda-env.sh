#!/usr/bin/env bash
# Build environment for candle's `cuda` feature on a machine with no GPU and no CUDA toolkit.
# Usage:  source tools/cuda-env.sh   then   cargo build --release --features cuda  (or: cargo xtask gpu-build)
# It installs CUDA 13.0 (matching the lent H200's driver) from PyPI wheels into a cache folder,
# builds a link-time stub of the driver library (libcuda.so) from cudarc's symbol list, and exports
# PATH, CUDA_ROOT, CUDA_COMPUTE_CAP, CUDARC_CUDA_VERSION and RUSTFLAGS (-L to the stub folder).
# The binary then runs on a real GPU machine, where the driver's libcuda.so.1 and the CUDA 13 libraries
# are found at run time (there: export LD_LIBRARY_PATH=<python site-packages>/nvidia/cu13/lib).
_nmoco_cuda() {
  local root=${NMOCO_CUDA_HOME:-$HOME/.cache/nmoco-cuda13}
  [ -x "$root/venv/bin/pip" ] || python3 -m venv "$root/venv" || return 1
  if [ ! -x "$root/venv/lib/python3"*/site-packages/nvidia/cu13/bin/nvcc ]; then
    "$root/venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
      "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.88" \
      "nvidia-cublas==13.0.*" "nvidia-curand" || return 1
  fi
  local cu; cu=$(echo "$root"/venv/lib/python3*/site-packages/nvidia/cu13)
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
  export PATH="$cu/bin:$PATH" CUDA_ROOT="$cu" CUDA_PATH="$cu" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} \
    CUDARC_CUDA_VERSION=13000 NVRTC_LIB_DIR="$cu/lib" RUSTFLAGS="${RUSTFLAGS:-} -L $stub"
  echo "cuda-env: nvcc $(nvcc --version | grep -o 'release [0-9.]*'), stub driver in $stub"
}
_nmoco_cuda
