// Element type of every nmoco CUDA kernel, chosen by an NVRTC define (see src/kernels.rs):
//   NMOCO_DTYPE   0 = f32, 1 = f16, 2 = bf16 (storage type; arithmetic is always f32)
// nmoco_ld / nmoco_st convert between the storage type and f32. NVRTC sees no file system:
// src/kernels.rs prepends this file to each kernel source, and no CUDA header is included
// (f16/bf16 conversions use PTX cvt instructions).

#if NMOCO_DTYPE == 0
typedef float elem_t;
__device__ __forceinline__ float nmoco_ld(elem_t v) { return v; }
__device__ __forceinline__ elem_t nmoco_st(float v) { return v; }
#elif NMOCO_DTYPE == 1
typedef unsigned short elem_t;
__device__ __forceinline__ float nmoco_ld(elem_t v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
  return f;
}
__device__ __forceinline__ elem_t nmoco_st(float v) {
  elem_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return h;
}
#elif NMOCO_DTYPE == 2
typedef unsigned short elem_t;
__device__ __forceinline__ float nmoco_ld(elem_t v) {
  return __uint_as_float(((unsigned int)v) << 16);
}
__device__ __forceinline__ elem_t nmoco_st(float v) {
  elem_t h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return h;
}
#else
#error "NMOCO_DTYPE must be 0, 1 or 2"
#endif
