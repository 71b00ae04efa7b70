// Shared by every neuron kernel: element loads/stores, the charge equation, firing, the reset
// and the surrogate gradient. Specialised by NVRTC defines (see src/kernels.rs):
//   NMOCO_DTYPE   0 = f32, 1 = f16, 2 = bf16 (storage type; arithmetic is always f32)
//   NMOCO_CHARGE  0 = IF (h = v + x), 1 = LIF decay_input (h = v + (x - (v - vr)) * k),
//                 2 = LIF without decay_input (h = v - (v - vr) * k + x)
//   NMOCO_HARD    1 = hard reset to vr, 0 = soft reset (subtract vth; vr is 0)
//   NMOCO_DETACH  1 = the reset's spike is a constant in the backward pass
//   NMOCO_PLIF    1 = k = sigmoid(w) read from device memory, and dL/dw is accumulated
//   NMOCO_SG      0 = atan, 1 = sigmoid, 2 = piecewise quadratic, 3 = rectangle
//   NMOCO_TSTATIC 0 = T is a kernel argument; 1..=16 = T fixed at compile time (the backward
//                 keeps the membrane trace in registers)
// NVRTC sees no file system: src/kernels.rs prepends kernels/dtype.cuh (elem_t, nmoco_ld,
// nmoco_st) and this file to the kernel source, and no CUDA header is included.

#ifndef NMOCO_TSTATIC
#define NMOCO_TSTATIC 0
#endif
#if NMOCO_TSTATIC < 0 || NMOCO_TSTATIC > 32
#error "NMOCO_TSTATIC must be 0..32"
#endif

__device__ __forceinline__ float nmoco_charge(float v, float x, float k, float vr) {
#if NMOCO_CHARGE == 0
  return v + x;
#elif NMOCO_CHARGE == 1
  return v + (x - (v - vr)) * k;
#elif NMOCO_CHARGE == 2
  return v - (v - vr) * k + x;
#else
#error "NMOCO_CHARGE must be 0, 1 or 2"
#endif
}

// dh_t / dv_{t-1}
__device__ __forceinline__ float nmoco_dh_dv(float k) {
#if NMOCO_CHARGE == 0
  return 1.0f;
#else
  return 1.0f - k;
#endif
}

// dh_t / dx_t
__device__ __forceinline__ float nmoco_dh_dx(float k) {
#if NMOCO_CHARGE == 1
  return k;
#else
  return 1.0f;
#endif
}

// dh_t / dk given x_t and v_{t-1} (PLIF only)
__device__ __forceinline__ float nmoco_dh_dk(float x, float v_prev, float vr) {
#if NMOCO_CHARGE == 1
  return x - (v_prev - vr);
#else
  return -(v_prev - vr);
#endif
}

__device__ __forceinline__ float nmoco_reset(float h, bool fire, float vth, float vr) {
#if NMOCO_HARD
  return fire ? vr : h;
#else
  return fire ? h - vth : h;
#endif
}

// dv_t / dh_t, through the reset (and through the spike unless NMOCO_DETACH)
__device__ __forceinline__ float nmoco_dv_dh(float h, bool fire, float sg, float vth, float vr) {
#if NMOCO_HARD
  float base = fire ? 0.0f : 1.0f;
#if NMOCO_DETACH
  return base;
#else
  return base + (vr - h) * sg;
#endif
#else
#if NMOCO_DETACH
  return 1.0f;
#else
  return 1.0f - vth * sg;
#endif
#endif
}

// The surrogate's derivative at d = h - vth; `a` is alpha (or the rectangle's width).
__device__ __forceinline__ float nmoco_sg_grad(float d, float a) {
#if NMOCO_SG == 0
  const float u = d * (1.57079632679489661923f * a);
  return (a * 0.5f) / (1.0f + u * u);
#elif NMOCO_SG == 1
  const float s = 1.0f / (1.0f + expf(-a * d));
  return a * s * (1.0f - s);
#elif NMOCO_SG == 2
  return fmaxf(a - a * a * fabsf(d), 0.0f);
#elif NMOCO_SG == 3
  return fabsf(d) < a * 0.5f ? 1.0f / a : 0.0f;
#else
#error "NMOCO_SG must be 0..3"
#endif
}

__device__ __forceinline__ float nmoco_k(float k, const elem_t* w) {
#if NMOCO_PLIF
  return 1.0f / (1.0f + expf(-nmoco_ld(w[0])));
#else
  return k;
#endif
}
