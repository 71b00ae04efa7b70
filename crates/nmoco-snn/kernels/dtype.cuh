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

// L adjacent elements p[0..L) as f32, in one access when L = 2 (p must then be aligned to two
// elements: 8 B for f32, 4 B for f16/bf16, the width of a float2 / __nv_bfloat162). Element 0 is
// the low half of the word (little-endian), as in memory.
template <int L>
struct nmoco_vec;

template <>
struct nmoco_vec<1> {
  static __device__ __forceinline__ void ld(const elem_t* p, float* v) { v[0] = nmoco_ld(p[0]); }
  static __device__ __forceinline__ void st(elem_t* p, const float* v) { p[0] = nmoco_st(v[0]); }
};

#if NMOCO_DTYPE == 0
template <>
struct nmoco_vec<2> {
  static __device__ __forceinline__ void ld(const elem_t* p, float* v) {
    const unsigned long long w = *reinterpret_cast<const unsigned long long*>(p);
    v[0] = __uint_as_float((unsigned int)w);
    v[1] = __uint_as_float((unsigned int)(w >> 32));
  }
  static __device__ __forceinline__ void st(elem_t* p, const float* v) {
    *reinterpret_cast<unsigned long long*>(p) =
        ((unsigned long long)__float_as_uint(v[1]) << 32) | __float_as_uint(v[0]);
  }
};
#else
template <>
struct nmoco_vec<2> {
  static __device__ __forceinline__ void ld(const elem_t* p, float* v) {
    const unsigned int w = *reinterpret_cast<const unsigned int*>(p);
    v[0] = nmoco_ld((elem_t)(w & 0xffffu));
    v[1] = nmoco_ld((elem_t)(w >> 16));
  }
  static __device__ __forceinline__ void st(elem_t* p, const float* v) {
    *reinterpret_cast<unsigned int*>(p) =
        (unsigned int)nmoco_st(v[0]) | ((unsigned int)nmoco_st(v[1]) << 16);
  }
};
#endif
