// Device helpers shared by detkit's CUDA kernels: dtype conversion, aligned packs, reductions.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace detkit {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Arithmetic type of a storage type: float for float/half/bfloat16, double for double.
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(typename Acc<T>::type v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log1p_acc(float x) { return log1pf(x); }
__device__ __forceinline__ double log1p_acc(double x) { return log1p(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

template <typename T>
__device__ __forceinline__ T quiet_nan() {
  return T(__int_as_float(0x7fc00000));
}
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000LL);
}

// kSize consecutive elements moved with one load/store instruction (up to 16 bytes).
template <typename T, int kSize>
struct alignas(sizeof(T) * kSize) Pack {
  T v[kSize];
};

// Whether `ptr` is aligned for a Pack<T, kSize>.
template <typename T, int kSize>
__host__ __device__ __forceinline__ bool pack_aligned(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % (sizeof(T) * kSize) == 0;
}

struct SumOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
struct MaxOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a > b ? a : b; }
};

// Reduce within groups of kWidth lanes (a power of two <= 32); every lane gets the result.
// All 32 lanes of the warp must call it.
template <int kWidth, typename Op, typename A>
__device__ __forceinline__ A group_allreduce(A value, Op op) {
#pragma unroll
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    value = op(value, __shfl_xor_sync(kFullMask, value, offset, kWidth));
  }
  return value;
}

// Reduce kCount values over the whole block; every thread gets the results. All threads of the
// block must call it. `shared` holds 32 * kCount elements.
template <int kCount, typename Op, typename A>
__device__ __forceinline__ void block_allreduce(A (&values)[kCount], Op op, A* shared) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int num_warps = (blockDim.x + 31) / 32;
#pragma unroll
  for (int k = 0; k < kCount; ++k) values[k] = group_allreduce<32>(values[k], op);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < kCount; ++k) shared[warp * kCount + k] = values[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < kCount; ++k) {
    A v = shared[k];
    for (int w = 1; w < num_warps; ++w) v = op(v, shared[w * kCount + k]);
    values[k] = v;
  }
}

}  // namespace cuda
}  // namespace detkit
