// Max-pool 3x3, stride 2, padding 1 on [P, H, W] planes (P = N*C) with the argmax saved, as
// PyTorch's max_pool2d(kernel 3, stride 2, padding 1): the padding never wins, the gradient of
// a window goes to its first maximal element in row-major window order (a NaN wins).
// Specialised by NVRTC defines (see src/kernels.rs):
//   NMOCO_DTYPE   0 = f32, 1 = f16, 2 = bf16 (storage type; arithmetic is f32)
// The forward writes one buffer of 2 * P*Ho*Wo elements: the maxima, then the argmax (0..8 as a
// float of the storage type, exact in every one), so that candle hands the argmax to the
// backward as part of the op's result. The backward gathers, for each input element, the
// gradients of the (at most four) windows whose argmax it is, in a fixed order: deterministic,
// no atomics. NVRTC sees no file system: src/kernels.rs prepends kernels/dtype.cuh (elem_t,
// nmoco_ld, nmoco_st).


// One thread per output element.
extern "C" __global__ void nmoco_maxpool_fwd(const elem_t* __restrict__ x, elem_t* __restrict__ out,
                                             unsigned long long planes, unsigned int h,
                                             unsigned int w, unsigned int ho, unsigned int wo) {
  const unsigned long long total = planes * ho * wo;
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const unsigned int ox = (unsigned int)(i % wo);
  const unsigned long long r = i / wo;
  const unsigned int oy = (unsigned int)(r % ho);
  const unsigned long long p = r / ho;
  const elem_t* plane = x + p * h * w;
  float best = 0.0f;
  int arg = -1;
#pragma unroll
  for (int dy = 0; dy < 3; ++dy) {
    const int y = 2 * (int)oy - 1 + dy;
    if (y < 0 || y >= (int)h) continue;
#pragma unroll
    for (int dx = 0; dx < 3; ++dx) {
      const int xx = 2 * (int)ox - 1 + dx;
      if (xx < 0 || xx >= (int)w) continue;
      const float v = nmoco_ld(plane[(unsigned long long)y * w + xx]);
      if (arg < 0 || v > best || v != v) {
        best = v;
        arg = dy * 3 + dx;
      }
    }
  }
  out[i] = nmoco_st(best);
  out[total + i] = nmoco_st((float)arg);
}

// One thread per input element: dx = sum of g over the windows whose argmax it is.
extern "C" __global__ void nmoco_maxpool_bwd(const elem_t* __restrict__ g,
                                             const elem_t* __restrict__ arg,
                                             elem_t* __restrict__ dx, unsigned long long planes,
                                             unsigned int h, unsigned int w, unsigned int ho,
                                             unsigned int wo) {
  const unsigned long long total = planes * h * w;
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int x = (int)(i % w);
  const unsigned long long r = i / w;
  const int y = (int)(r % h);
  const unsigned long long p = r / h;
  const int oy0 = y / 2, ox0 = x / 2;
  const int oy1 = min((y + 1) / 2, (int)ho - 1), ox1 = min((x + 1) / 2, (int)wo - 1);
  float acc = 0.0f;
  for (int oy = oy0; oy <= oy1; ++oy) {
    const int dy = y - (2 * oy - 1);
    for (int ox = ox0; ox <= ox1; ++ox) {
      const int dxx = x - (2 * ox - 1);
      const unsigned long long o = (p * ho + oy) * wo + ox;
      if ((int)nmoco_ld(arg[o]) == dy * 3 + dxx) acc += nmoco_ld(g[o]);
    }
  }
  dx[i] = nmoco_st(acc);
}
