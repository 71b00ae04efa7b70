// Multi-step IF / LIF / PLIF: one thread per neuron (or per two adjacent neurons), the time loop
// inside, layout [T, N].
// Specialised by the defines documented in neuron_common.cuh (prepended by src/kernels.rs).

// NMOCO_TSTATIC > 0: T is fixed when the module is compiled and the time loops are unrolled.
#if NMOCO_TSTATIC > 0
#define NMOCO_TLEN NMOCO_TSTATIC
#define NMOCO_UNROLL _Pragma("unroll")
// At most 128 registers per thread, so that two 256-thread blocks fit on a multiprocessor; the
// two-neuron backward gets twice that per thread (the same registers per neuron, so the same
// neurons in flight per multiprocessor, and two membrane traces without spilling).
#define NMOCO_BWD_BOUNDS __launch_bounds__(256, 2)
#define NMOCO_BWD_BOUNDS_V2 __launch_bounds__(256, 1)
#else
#define NMOCO_BWD_BOUNDS
#define NMOCO_BWD_BOUNDS_V2
#define NMOCO_TLEN t_len
#define NMOCO_UNROLL
#endif

// Each kernel body is written once for L neurons per thread (template parameter) and
// instantiated twice: L = 1 (nmoco_neuron_fwd / _bwd, any N and alignment) and L = 2
// (nmoco_neuron_fwd_v2 / _bwd_v2: neurons 2j and 2j+1 in thread j, every load and store one
// 2-element access: a float2-sized word for f32, a bfloat162/half2-sized word for bf16/f16; N even
// and every [T, N] pointer aligned to two elements, which the launcher checks). Each lane runs
// the same f32 operations in the same order as L = 1, so spikes and dL/dx are identical.

// Forward: spikes s = H(h - vth) for every step.
template <int L>
__device__ __forceinline__ void nmoco_fwd_body(const elem_t* x, elem_t* s, const elem_t* w,
                                               unsigned int t_len, unsigned long long n, float k,
                                               float vth, float vr) {
  const unsigned long long i = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) * L;
  if (i >= n) return;
  k = nmoco_k(k, w);
  float v[L];
#pragma unroll
  for (int l = 0; l < L; ++l) v[l] = vr;
  (void)t_len;
  NMOCO_UNROLL
  for (unsigned int t = 0; t < NMOCO_TLEN; ++t) {
    const unsigned long long o = (unsigned long long)t * n + i;
    float xs[L], ss[L];
    nmoco_vec<L>::ld(x + o, xs);
#pragma unroll
    for (int l = 0; l < L; ++l) {
      const float h = nmoco_charge(v[l], xs[l], k, vr);
      const bool fire = h - vth >= 0.0f;
      ss[l] = fire ? 1.0f : 0.0f;
      v[l] = nmoco_reset(h, fire, vth, vr);
    }
    nmoco_vec<L>::st(s + o, ss);
  }
}

extern "C" __global__ void nmoco_neuron_fwd(const elem_t* x, elem_t* s, const elem_t* w,
                                            unsigned int t_len, unsigned long long n, float k,
                                            float vth, float vr) {
  nmoco_fwd_body<1>(x, s, w, t_len, n, k, vth, vr);
}

extern "C" __global__ void nmoco_neuron_fwd_v2(const elem_t* x, elem_t* s, const elem_t* w,
                                               unsigned int t_len, unsigned long long n, float k,
                                               float vth, float vr) {
  nmoco_fwd_body<2>(x, s, w, t_len, n, k, vth, vr);
}

// Backward (BPTT). Pass 1 recomputes the membrane trace h, pass 2 walks back in time.
// NMOCO_TSTATIC > 0 (T known when the module is compiled, T <= 16): the trace lives in registers
// (fully unrolled loops), so the backward moves only x, dL/ds and dL/dx (12 B per f32 element).
// NMOCO_TSTATIC == 0 (any T): the trace goes to `hbuf` (an f32 [T, N] buffer; for f32 it is `gx`
// itself, overwritten at gx[t] after hbuf[t] is read, which only this thread touches).
// PLIF: dL/dk is summed per thread (L = 2: per lane, then the two lanes), reduced per block in
// shared memory, then one atomicAdd per block into gk_acc[0] (zeroed by the caller).
template <int L>
__device__ __forceinline__ void nmoco_bwd_body(const elem_t* x, const elem_t* gs, elem_t* gx,
                                               float* hbuf, const elem_t* w, float* gk_acc,
                                               unsigned int t_len, unsigned long long n, float k,
                                               float vth, float vr, float sg_a) {
  const unsigned long long i = ((unsigned long long)blockIdx.x * blockDim.x + threadIdx.x) * L;
  float gk[L];
#pragma unroll
  for (int l = 0; l < L; ++l) gk[l] = 0.0f;
  k = nmoco_k(k, w);
#if NMOCO_TSTATIC > 0
  float hs[L][NMOCO_TSTATIC];
  (void)hbuf;
  (void)t_len;
#define NMOCO_H_STL(t, o, l, h) hs[l][t] = (h)
#define NMOCO_H_LDL(t, o, l) hs[l][t]
#else
#define NMOCO_H_STL(t, o, l, h) hbuf[(o) + (l)] = (h)
#define NMOCO_H_LDL(t, o, l) hbuf[(o) + (l)]
#endif
  if (i < n) {
    float v[L];
#pragma unroll
    for (int l = 0; l < L; ++l) v[l] = vr;
    NMOCO_UNROLL
    for (unsigned int t = 0; t < NMOCO_TLEN; ++t) {
      const unsigned long long o = (unsigned long long)t * n + i;
      float xs[L];
      nmoco_vec<L>::ld(x + o, xs);
#pragma unroll
      for (int l = 0; l < L; ++l) {
        const float h = nmoco_charge(v[l], xs[l], k, vr);
        NMOCO_H_STL(t, o, l, h);
        v[l] = nmoco_reset(h, h - vth >= 0.0f, vth, vr);
      }
    }
    const float a = nmoco_dh_dv(k);
    const float b = nmoco_dh_dx(k);
    float gv[L];
#pragma unroll
    for (int l = 0; l < L; ++l) gv[l] = 0.0f;
    NMOCO_UNROLL
    for (int t = (int)NMOCO_TLEN - 1; t >= 0; --t) {
      const unsigned long long o = (unsigned long long)t * n + i;
      float gsv[L], gxv[L];
      nmoco_vec<L>::ld(gs + o, gsv);
#if NMOCO_PLIF
      float xs[L];
      nmoco_vec<L>::ld(x + o, xs);
#endif
#pragma unroll
      for (int l = 0; l < L; ++l) {
        const float h = NMOCO_H_LDL(t, o, l);
        const float d = h - vth;
        const bool fire = d >= 0.0f;
        const float sg = nmoco_sg_grad(d, sg_a);
        const float gh = gsv[l] * sg + gv[l] * nmoco_dv_dh(h, fire, sg, vth, vr);
#if NMOCO_PLIF
        float v_prev = vr;
        if (t > 0) {
          const float hp = NMOCO_H_LDL(t - 1, o - n, l);
          v_prev = nmoco_reset(hp, hp - vth >= 0.0f, vth, vr);
        }
        gk[l] += gh * nmoco_dh_dk(xs[l], v_prev, vr);
#endif
        gxv[l] = gh * b;
        gv[l] = gh * a;
      }
      nmoco_vec<L>::st(gx + o, gxv);
    }
  }
#undef NMOCO_H_STL
#undef NMOCO_H_LDL
#if NMOCO_PLIF
  float gk_sum = gk[0];
#pragma unroll
  for (int l = 1; l < L; ++l) gk_sum += gk[l];
  // Block reduction of gk (blockDim.x is a power of two, at most 1024).
  __shared__ float red[1024];
  red[threadIdx.x] = gk_sum;
  __syncthreads();
  for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(gk_acc, red[0]);
#else
  (void)gk;
  (void)gk_acc;
#endif
}

extern "C" __global__ void NMOCO_BWD_BOUNDS nmoco_neuron_bwd(const elem_t* x, const elem_t* gs,
                                                             elem_t* gx, float* hbuf,
                                                             const elem_t* w, float* gk_acc,
                                                             unsigned int t_len,
                                                             unsigned long long n, float k,
                                                             float vth, float vr, float sg_a) {
  nmoco_bwd_body<1>(x, gs, gx, hbuf, w, gk_acc, t_len, n, k, vth, vr, sg_a);
}

extern "C" __global__ void NMOCO_BWD_BOUNDS_V2 nmoco_neuron_bwd_v2(const elem_t* x, const elem_t* gs,
                                                                elem_t* gx, float* hbuf,
                                                                const elem_t* w, float* gk_acc,
                                                                unsigned int t_len,
                                                                unsigned long long n, float k,
                                                                float vth, float vr, float sg_a) {
  nmoco_bwd_body<2>(x, gs, gx, hbuf, w, gk_acc, t_len, n, k, vth, vr, sg_a);
}

// PLIF: dL/dw = dL/dk * k * (1 - k), written after dL/dx at out[0] (one thread).
extern "C" __global__ void nmoco_plif_finish(const float* gk_acc, const elem_t* w, elem_t* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const float k = 1.0f / (1.0f + expf(-nmoco_ld(w[0])));
    out[0] = nmoco_st(gk_acc[0] * k * (1.0f - k));
  }
}
