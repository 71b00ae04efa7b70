// Multi-step IF / LIF / PLIF: one thread per neuron, the time loop inside, layout [T, N].
// Specialised by the defines documented in neuron_common.cuh (prepended by src/kernels.rs).

// NMOCO_TSTATIC > 0: T is fixed when the module is compiled and the time loops are unrolled.
#if NMOCO_TSTATIC > 0
#define NMOCO_TLEN NMOCO_TSTATIC
#define NMOCO_UNROLL _Pragma("unroll")
#define NMOCO_H_ST(t, o, h) hs[t] = (h)
#define NMOCO_H_LD(t, o) hs[t]
// At most 128 registers per thread, so that two 256-thread blocks fit on a multiprocessor.
#define NMOCO_BWD_BOUNDS __launch_bounds__(256, 2)
#else
#define NMOCO_BWD_BOUNDS
#define NMOCO_TLEN t_len
#define NMOCO_UNROLL
#define NMOCO_H_ST(t, o, h) hbuf[o] = (h)
#define NMOCO_H_LD(t, o) hbuf[o]
#endif

// Forward: spikes s = H(h - vth) for every step.
extern "C" __global__ void nmoco_neuron_fwd(const elem_t* x, elem_t* s, const elem_t* w,
                                            unsigned int t_len, unsigned long long n, float k,
                                            float vth, float vr) {
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  k = nmoco_k(k, w);
  float v = vr;
  (void)t_len;
  NMOCO_UNROLL
  for (unsigned int t = 0; t < NMOCO_TLEN; ++t) {
    const unsigned long long o = (unsigned long long)t * n + i;
    const float h = nmoco_charge(v, nmoco_ld(x[o]), k, vr);
    const bool fire = h - vth >= 0.0f;
    s[o] = nmoco_st(fire ? 1.0f : 0.0f);
    v = nmoco_reset(h, fire, vth, vr);
  }
}

// Backward (BPTT). Pass 1 recomputes the membrane trace h, pass 2 walks back in time.
// NMOCO_TSTATIC > 0 (T known when the module is compiled, T <= 16): the trace lives in registers
// (fully unrolled loops), so the backward moves only x, dL/ds and dL/dx (12 B per f32 element).
// NMOCO_TSTATIC == 0 (any T): the trace goes to `hbuf` (an f32 [T, N] buffer; for f32 it is `gx`
// itself, overwritten at gx[t] after hbuf[t] is read, which only this thread touches).
// PLIF: dL/dk is reduced per block in shared memory, then one atomicAdd per block into gk_acc[0]
// (zeroed by the caller).
extern "C" __global__ void NMOCO_BWD_BOUNDS nmoco_neuron_bwd(const elem_t* x, const elem_t* gs, elem_t* gx,
                                            float* hbuf, const elem_t* w, float* gk_acc,
                                            unsigned int t_len, unsigned long long n, float k,
                                            float vth, float vr, float sg_a) {
  const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  float gk = 0.0f;
  k = nmoco_k(k, w);
#if NMOCO_TSTATIC > 0
  float hs[NMOCO_TSTATIC];
  (void)hbuf;
  (void)t_len;
#endif
  if (i < n) {
    float v = vr;
    NMOCO_UNROLL
    for (unsigned int t = 0; t < NMOCO_TLEN; ++t) {
      const unsigned long long o = (unsigned long long)t * n + i;
      const float h = nmoco_charge(v, nmoco_ld(x[o]), k, vr);
      NMOCO_H_ST(t, o, h);
      v = nmoco_reset(h, h - vth >= 0.0f, vth, vr);
    }
    const float a = nmoco_dh_dv(k);
    const float b = nmoco_dh_dx(k);
    float gv = 0.0f;
    NMOCO_UNROLL
    for (int t = (int)NMOCO_TLEN - 1; t >= 0; --t) {
      const unsigned long long o = (unsigned long long)t * n + i;
      const float h = NMOCO_H_LD(t, o);
      const float d = h - vth;
      const bool fire = d >= 0.0f;
      const float sg = nmoco_sg_grad(d, sg_a);
      const float gh = nmoco_ld(gs[o]) * sg + gv * nmoco_dv_dh(h, fire, sg, vth, vr);
#if NMOCO_PLIF
      float v_prev = vr;
      if (t > 0) {
        const float hp = NMOCO_H_LD(t - 1, o - n);
        v_prev = nmoco_reset(hp, hp - vth >= 0.0f, vth, vr);
      }
      gk += gh * nmoco_dh_dk(nmoco_ld(x[o]), v_prev, vr);
#endif
      gx[o] = nmoco_st(gh * b);
      gv = gh * a;
    }
  }
#if NMOCO_PLIF
  // Block reduction of gk (blockDim.x is a power of two, at most 1024).
  __shared__ float red[1024];
  red[threadIdx.x] = gk;
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

// PLIF: dL/dw = dL/dk * k * (1 - k), written after dL/dx at out[0] (one thread).
extern "C" __global__ void nmoco_plif_finish(const float* gk_acc, const elem_t* w, elem_t* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const float k = 1.0f / (1.0f + expf(-nmoco_ld(w[0])));
    out[0] = nmoco_st(gk_acc[0] * k * (1.0f - k));
  }
}
