// Training batch norm fused with the multi-step IF/LIF neuron (the CUDA twin of the CPU op
// `BnLifFwd` / `BnLifBwd`, src/ops/bn_lif.rs). Compile-tested only (NVRTC + ptxas in CI); its
// agreement with the plain-candle twin is checked on a device by examples/gpu_check.rs.
//
// Input x: [R, C, S] (R = T·B rows, C channels, S = H·W), seen by the neuron as [T, n] with
// n = B·C·S; neuron i is in channel (i / S) % C. Statistics, coefficients and gradient sums are
// f32 (f64 inside the finishing kernels); x, the spikes and dL/ds are elem_t (dtype.cuh).
//
// Two modules are compiled from this file (src/cuda_variants.rs):
//   NMOCO_BN_PART 0: the per-channel reductions and elementwise maps (dtype.cuh + this file,
//                   specialised by NMOCO_DTYPE only);
//   NMOCO_BN_PART 1: the neuron kernels (dtype.cuh + neuron_common.cuh + this file, specialised
//                   by the neuron defines documented in neuron_common.cuh; IF/LIF, no PLIF).
//
// Reductions are two-stage and deterministic (no atomics): a grid of (chunk, channel) blocks
// writes one partial per block, then one block per channel merges the partials in f64.
// Statistics use shifted sums per thread (shift = the channel's first value) turned into
// (count, mean, M2) and merged with Chan et al.'s pairwise formula, never E[x²] − E[x]².

#ifndef NMOCO_BN_PART
#error "NMOCO_BN_PART must be defined (0 = reductions, 1 = neuron kernels)"
#endif

#define NMOCO_BN_THREADS 256

#if NMOCO_BN_PART == 0

// Chan's merge of (count, mean, M2) statistics, b into a.
template <typename F>
__device__ __forceinline__ void nmoco_chan_merge(F& na, F& ma, F& m2a, F nb, F mb, F m2b) {
  if (nb == (F)0) return;
  if (na == (F)0) {
    na = nb;
    ma = mb;
    m2a = m2b;
    return;
  }
  const F n = na + nb;
  const F delta = mb - ma;
  const F fb = nb / n;
  ma += delta * fb;
  m2a += m2b + delta * delta * na * fb;
  na = n;
}

// Element q (0 <= q < R·S) of channel c: row q / S, position q % S.
__device__ __forceinline__ unsigned long long nmoco_bn_addr(unsigned long long row,
                                                          unsigned long long s, unsigned int c,
                                                          unsigned int c_len,
                                                          unsigned long long sdim) {
  return (row * c_len + c) * sdim + s;
}

// Stage 1 of the batch statistics. Block (j, c) covers the values q in [j·len, (j+1)·len) of
// channel c (m = R·S values per channel) and writes part[(c·chunks + j)·3 + {0,1,2}] =
// (count, mean, M2). blockDim.x == NMOCO_BN_THREADS.
extern "C" __global__ void nmoco_bn_stats_partial(const elem_t* x, float* part,
                                                  unsigned long long rows, unsigned int c_len,
                                                  unsigned long long sdim,
                                                  unsigned long long len, unsigned int chunks) {
  const unsigned int c = blockIdx.y;
  const unsigned int j = blockIdx.x;
  const unsigned long long m = rows * sdim;
  const unsigned long long q0 = (unsigned long long)j * len;
  const unsigned long long q1 = q0 + len < m ? q0 + len : m;
  const float shift = nmoco_ld(x[nmoco_bn_addr(0, 0, c, c_len, sdim)]);
  float cnt = 0.0f, s1 = 0.0f, s2 = 0.0f;
  unsigned long long q = q0 + threadIdx.x;
  if (q < q1) {
    // Walk (row, s) incrementally: one division per thread, none per element.
    unsigned long long row = q / sdim, s = q % sdim;
    const unsigned long long step_rows = NMOCO_BN_THREADS / sdim;
    const unsigned long long step_s = NMOCO_BN_THREADS % sdim;
    for (; q < q1; q += NMOCO_BN_THREADS) {
      const float v = nmoco_ld(x[nmoco_bn_addr(row, s, c, c_len, sdim)]) - shift;
      cnt += 1.0f;
      s1 += v;
      s2 += v * v;
      row += step_rows;
      s += step_s;
      if (s >= sdim) {
        s -= sdim;
        ++row;
      }
    }
  }
  float mean = 0.0f, m2 = 0.0f;
  if (cnt > 0.0f) {
    const float d = s1 / cnt;
    mean = shift + d;
    m2 = fmaxf(s2 - s1 * d, 0.0f);
  }
  __shared__ float sn[NMOCO_BN_THREADS], sm[NMOCO_BN_THREADS], sq[NMOCO_BN_THREADS];
  sn[threadIdx.x] = cnt;
  sm[threadIdx.x] = mean;
  sq[threadIdx.x] = m2;
  __syncthreads();
  for (unsigned int h = NMOCO_BN_THREADS / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) {
      float na = sn[threadIdx.x], ma = sm[threadIdx.x], qa = sq[threadIdx.x];
      nmoco_chan_merge<float>(na, ma, qa, sn[threadIdx.x + h], sm[threadIdx.x + h],
                              sq[threadIdx.x + h]);
      sn[threadIdx.x] = na;
      sm[threadIdx.x] = ma;
      sq[threadIdx.x] = qa;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float* p = part + ((unsigned long long)c * chunks + j) * 3;
    p[0] = sn[0];
    p[1] = sm[0];
    p[2] = sq[0];
  }
}

// Stage 2 of the batch statistics: block c merges the chunks' partials of channel c in f64 and
// writes stats[c] = mean, stats[c_len + c] = biased variance. blockDim.x == NMOCO_BN_THREADS.
extern "C" __global__ void nmoco_bn_stats_finish(const float* part, float* stats,
                                                 unsigned int c_len, unsigned int chunks) {
  const unsigned int c = blockIdx.x;
  double n = 0.0, mean = 0.0, m2 = 0.0;
  for (unsigned int j = threadIdx.x; j < chunks; j += NMOCO_BN_THREADS) {
    const float* p = part + ((unsigned long long)c * chunks + j) * 3;
    nmoco_chan_merge<double>(n, mean, m2, (double)p[0], (double)p[1], (double)p[2]);
  }
  __shared__ double sn[NMOCO_BN_THREADS], sm[NMOCO_BN_THREADS], sq[NMOCO_BN_THREADS];
  sn[threadIdx.x] = n;
  sm[threadIdx.x] = mean;
  sq[threadIdx.x] = m2;
  __syncthreads();
  for (unsigned int h = NMOCO_BN_THREADS / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) {
      double na = sn[threadIdx.x], ma = sm[threadIdx.x], qa = sq[threadIdx.x];
      nmoco_chan_merge<double>(na, ma, qa, sn[threadIdx.x + h], sm[threadIdx.x + h],
                               sq[threadIdx.x + h]);
      sn[threadIdx.x] = na;
      sm[threadIdx.x] = ma;
      sq[threadIdx.x] = qa;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[c] = (float)sm[0];
    stats[c_len + c] = sn[0] > 0.0 ? (float)(sq[0] / sn[0]) : 0.0f;
  }
}

// The forward's per-channel affine map y = a·x + d (nmoco_conv::batch_norm_coef, in the same
// f64 operations): coef[c] = a = γ·invstd, coef[c_len + c] = d = β − μ·γ·invstd.
extern "C" __global__ void nmoco_bn_coef(const float* mean, const float* var, const float* gamma,
                                         const float* beta, float* coef, unsigned int c_len,
                                         double eps) {
  const unsigned int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= c_len) return;
  const double invstd = 1.0 / sqrt((double)var[c] + eps);
  const double scale = (double)gamma[c] * invstd;
  coef[c] = (float)scale;
  coef[c_len + c] = (float)((double)beta[c] - (double)mean[c] * scale);
}

// Stage 1 of the backward's sums: block (j, c) sums dL/dy and dL/dy·(x − μ) over its chunk of
// channel c (as nmoco_bn_stats_partial) into part[(c·chunks + j)·2 + {0,1}].
extern "C" __global__ void nmoco_bn_grad_partial(const elem_t* x, const float* gy,
                                                 const float* mean, float* part,
                                                 unsigned long long rows, unsigned int c_len,
                                                 unsigned long long sdim,
                                                 unsigned long long len, unsigned int chunks) {
  const unsigned int c = blockIdx.y;
  const unsigned int j = blockIdx.x;
  const unsigned long long m = rows * sdim;
  const unsigned long long q0 = (unsigned long long)j * len;
  const unsigned long long q1 = q0 + len < m ? q0 + len : m;
  const float mu = mean[c];
  float sg = 0.0f, sgx = 0.0f;
  unsigned long long q = q0 + threadIdx.x;
  if (q < q1) {
    unsigned long long row = q / sdim, s = q % sdim;
    const unsigned long long step_rows = NMOCO_BN_THREADS / sdim;
    const unsigned long long step_s = NMOCO_BN_THREADS % sdim;
    for (; q < q1; q += NMOCO_BN_THREADS) {
      const unsigned long long o = nmoco_bn_addr(row, s, c, c_len, sdim);
      const float g = gy[o];
      sg += g;
      sgx += g * (nmoco_ld(x[o]) - mu);
      row += step_rows;
      s += step_s;
      if (s >= sdim) {
        s -= sdim;
        ++row;
      }
    }
  }
  __shared__ float a[NMOCO_BN_THREADS], b[NMOCO_BN_THREADS];
  a[threadIdx.x] = sg;
  b[threadIdx.x] = sgx;
  __syncthreads();
  for (unsigned int h = NMOCO_BN_THREADS / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) {
      a[threadIdx.x] += a[threadIdx.x + h];
      b[threadIdx.x] += b[threadIdx.x + h];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float* p = part + ((unsigned long long)c * chunks + j) * 2;
    p[0] = a[0];
    p[1] = b[0];
  }
}

// Stage 2 of the backward's sums, block c: Σ dL/dy and Σ dL/dy·(x − μ) in f64, then
// dL/dγ = Σ dL/dy·(x − μ)·invstd, dL/dβ = Σ dL/dy (tail[c], tail[c_len + c]) and batch norm's
// input-gradient map dL/dx = ka·dL/dy + kb·x + kd (kcoef[c], kcoef[c_len + c],
// kcoef[2·c_len + c]; nmoco_conv::batch_norm_input_grad_coef in the same f64 operations),
// with m values per channel.
extern "C" __global__ void nmoco_bn_grad_finish(const float* part, const float* mean,
                                                const float* var, const float* gamma,
                                                float* tail, float* kcoef, unsigned int c_len,
                                                unsigned int chunks, double m, double eps) {
  const unsigned int c = blockIdx.x;
  double sg = 0.0, sgx = 0.0;
  for (unsigned int j = threadIdx.x; j < chunks; j += NMOCO_BN_THREADS) {
    const float* p = part + ((unsigned long long)c * chunks + j) * 2;
    sg += (double)p[0];
    sgx += (double)p[1];
  }
  __shared__ double a[NMOCO_BN_THREADS], b[NMOCO_BN_THREADS];
  a[threadIdx.x] = sg;
  b[threadIdx.x] = sgx;
  __syncthreads();
  for (unsigned int h = NMOCO_BN_THREADS / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) {
      a[threadIdx.x] += a[threadIdx.x + h];
      b[threadIdx.x] += b[threadIdx.x + h];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double invstd = 1.0 / sqrt((double)var[c] + eps);
    const double dgamma = b[0] * invstd;
    const double k = (double)gamma[c] * invstd;
    const double bx = -k * invstd * dgamma / m;
    tail[c] = (float)dgamma;
    tail[c_len + c] = (float)a[0];
    kcoef[c] = (float)k;
    kcoef[c_len + c] = (float)bx;
    kcoef[2 * c_len + c] = (float)(-k * a[0] / m - bx * (double)mean[c]);
  }
}

// Batch norm's input gradient in place over g (f32, [R, C, S] flattened, `total` values):
// g = ka·g + kb·x + kd, in the CPU op's f32 operations (no contraction into FMAs).
extern "C" __global__ void nmoco_bn_input_grad(const elem_t* x, float* g, const float* kcoef,
                                               unsigned long long total, unsigned int c_len,
                                               unsigned long long sdim) {
  const unsigned long long e = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const unsigned int c = (unsigned int)((e / sdim) % c_len);
  const float ka = kcoef[c], kb = kcoef[c_len + c], kd = kcoef[2 * c_len + c];
  g[e] = __fadd_rn(__fadd_rn(__fmul_rn(ka, g[e]), __fmul_rn(kb, nmoco_ld(x[e]))), kd);
}

#elif NMOCO_BN_PART == 1

#if NMOCO_PLIF
#error "the fused batch norm supports IF and LIF only"
#endif

// NMOCO_TSTATIC > 0: T is fixed when the module is compiled and the time loops are unrolled
// (the backward keeps the membrane trace in registers), as in lif.cu.
#if NMOCO_TSTATIC > 0
#define NMOCO_BN_TLEN NMOCO_TSTATIC
#define NMOCO_BN_UNROLL _Pragma("unroll")
#define NMOCO_BN_H_ST(t, o, h) hs[t] = (h)
#define NMOCO_BN_H_LD(t, o) hs[t]
#define NMOCO_BN_BWD_BOUNDS __launch_bounds__(256, 2)
#else
#define NMOCO_BN_TLEN t_len
#define NMOCO_BN_UNROLL
#define NMOCO_BN_H_ST(t, o, h) gy[o] = (h)
#define NMOCO_BN_H_LD(t, o) gy[o]
#define NMOCO_BN_BWD_BOUNDS
#endif

// The normalised input a·x + d of neuron i's channel, rounded as the CPU op does (no FMA).
__device__ __forceinline__ float nmoco_bn_y(float a, float x, float d) {
  return __fadd_rn(__fmul_rn(a, x), d);
}

// Forward: spikes of the neuron driven by y = a[c]·x + d[c] (coef = a ‖ d, nmoco_bn_coef).
extern "C" __global__ void nmoco_bn_lif_fwd(const elem_t* x, elem_t* s, const float* coef,
                                            unsigned int t_len, unsigned long long n,
                                            unsigned int c_len, unsigned long long sdim,
                                            float k, float vth, float vr) {
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const unsigned int c = (unsigned int)((i / sdim) % c_len);
  const float a = coef[c], d = coef[c_len + c];
  float v = vr;
  (void)t_len;
  NMOCO_BN_UNROLL
  for (unsigned int t = 0; t < NMOCO_BN_TLEN; ++t) {
    const unsigned long long o = (unsigned long long)t * n + i;
    const float h = nmoco_charge(v, nmoco_bn_y(a, nmoco_ld(x[o]), d), k, vr);
    const bool fire = h - vth >= 0.0f;
    s[o] = nmoco_st(fire ? 1.0f : 0.0f);
    v = nmoco_reset(h, fire, vth, vr);
  }
}

// Backward (BPTT on the normalised input): writes dL/dy (f32) to gy. Pass 1 recomputes the
// membrane trace (registers with a fixed T, else gy itself, overwritten at gy[t] after it is
// read), pass 2 walks back in time. The batch-norm part follows in nmoco_bn_grad_partial,
// nmoco_bn_grad_finish and nmoco_bn_input_grad.
extern "C" __global__ void NMOCO_BN_BWD_BOUNDS nmoco_bn_lif_bwd(
    const elem_t* x, const elem_t* gs, float* gy, const float* coef, unsigned int t_len,
    unsigned long long n, unsigned int c_len, unsigned long long sdim, float k, float vth,
    float vr, float sg_a) {
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
#if NMOCO_TSTATIC > 0
  float hs[NMOCO_TSTATIC];
  (void)t_len;
#endif
  const unsigned int c = (unsigned int)((i / sdim) % c_len);
  const float ca = coef[c], cd = coef[c_len + c];
  float v = vr;
  NMOCO_BN_UNROLL
  for (unsigned int t = 0; t < NMOCO_BN_TLEN; ++t) {
    const unsigned long long o = (unsigned long long)t * n + i;
    const float h = nmoco_charge(v, nmoco_bn_y(ca, nmoco_ld(x[o]), cd), k, vr);
    NMOCO_BN_H_ST(t, o, h);
    v = nmoco_reset(h, h - vth >= 0.0f, vth, vr);
  }
  const float a = nmoco_dh_dv(k);
  const float b = nmoco_dh_dx(k);
  float gv = 0.0f;
  NMOCO_BN_UNROLL
  for (int t = (int)NMOCO_BN_TLEN - 1; t >= 0; --t) {
    const unsigned long long o = (unsigned long long)t * n + i;
    const float h = NMOCO_BN_H_LD(t, o);
    const float dd = h - vth;
    const bool fire = dd >= 0.0f;
    const float sg = nmoco_sg_grad(dd, sg_a);
    const float gh = nmoco_ld(gs[o]) * sg + gv * nmoco_dv_dh(h, fire, sg, vth, vr);
    gy[o] = gh * b;
    gv = gh * a;
  }
}

#else
#error "NMOCO_BN_PART must be 0 or 1"
#endif
