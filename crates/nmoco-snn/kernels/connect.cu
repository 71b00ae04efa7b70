// The SEW-ResNet IAND connect y = a · (1 − b) (a = the block's identity path, b = the block's
// output spikes) in one pass each way: the forward reads a and b and writes y; the backward reads
// a, b and dL/dy and writes dL/da = dL/dy · (1 − b) followed by dL/db = −(dL/dy · a) into one
// [2, n] buffer. Each product is the same single f32 operation as the plain-ops twin
// (`a * b.affine(-1, 1)` and its autograd). Specialised by NVRTC defines (see
// src/cuda_variants.rs):
//   NMOCO_DTYPE   0 = f32, 1 = f16, 2 = bf16 (storage type; arithmetic is f32)
// NVRTC sees no file system: src/cuda_variants.rs prepends kernels/dtype.cuh (elem_t, nmoco_ld,
// nmoco_st). Grid-stride loops: any grid covers any n.

extern "C" __global__ void nmoco_iand_fwd(const elem_t* __restrict__ a,
                                          const elem_t* __restrict__ b, elem_t* __restrict__ y,
                                          unsigned long long n) {
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] = nmoco_st(nmoco_ld(a[i]) * (1.0f - nmoco_ld(b[i])));
  }
}

extern "C" __global__ void nmoco_iand_bwd(const elem_t* __restrict__ a,
                                          const elem_t* __restrict__ b,
                                          const elem_t* __restrict__ g, elem_t* __restrict__ out,
                                          unsigned long long n) {
  const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float gi = nmoco_ld(g[i]);
    out[i] = nmoco_st(gi * (1.0f - nmoco_ld(b[i])));
    out[n + i] = nmoco_st(-(gi * nmoco_ld(a[i])));
  }
}
