// Branch-free float math that compilers auto-vectorise, plus the CPU instruction-set dispatch.
//
// libm's expf/log1pf are opaque calls that stop a loop from vectorising (without -ffast-math and a
// vector math library). The functions here are plain arithmetic and selects, so a loop that calls
// them becomes SIMD code for whatever instruction set the enclosing function is compiled for.
// Accuracy: exp_f32 and log1p_unit_f32 are within about 2e-7 relative of the exact value (checked
// against float64 in tests/test_ops_*.py through the kernels that use them).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__) || defined(__clang__)
#define DETKIT_ALWAYS_INLINE inline __attribute__((always_inline))
#define DETKIT_RESTRICT __restrict__
#else
#define DETKIT_ALWAYS_INLINE inline
#define DETKIT_RESTRICT
#endif

// One x86-64 binary carries three copies of each hot loop (baseline SSE2, AVX2+FMA, AVX-512) and
// picks one at run time, so the build needs no -march flag and the library runs on any x86-64 CPU.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DETKIT_X86_DISPATCH 1
#define DETKIT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define DETKIT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")))
#else
#define DETKIT_X86_DISPATCH 0
#define DETKIT_TARGET_AVX2
#define DETKIT_TARGET_AVX512
#endif

// `#pragma omp simd` needs -fopenmp-simd (no OpenMP runtime); it lets float reductions vectorise
// without -ffast-math.
#define DETKIT_PRAGMA(x) _Pragma(#x)
#define DETKIT_SIMD_REDUCE(op, var) DETKIT_PRAGMA(omp simd reduction(op : var))
#define DETKIT_SIMD DETKIT_PRAGMA(omp simd)

namespace detkit {
namespace cpu {

enum class CpuIsa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The best instruction set this CPU supports.
CpuIsa detect_cpu_isa();
// The instruction set the kernels use now (the detected one unless lowered by set_cpu_isa).
CpuIsa active_cpu_isa();
// Use `requested` (capped at what the CPU supports) from now on; returns the level now in use.
CpuIsa set_cpu_isa(CpuIsa requested);
const char* cpu_isa_name(CpuIsa isa);

// Kernel::run(job, begin, end) in the copy compiled for the active instruction set. Each copy is
// a wrapper with its own target attribute; Kernel::run must be DETKIT_ALWAYS_INLINE so that every
// wrapper inlines (and vectorises) it for that target.
template <typename Kernel, typename Job>
auto run_baseline(const Job& job, int64_t begin, int64_t end) {
  return Kernel::run(job, begin, end);
}
#if DETKIT_X86_DISPATCH
template <typename Kernel, typename Job>
DETKIT_TARGET_AVX2 auto run_avx2(const Job& job, int64_t begin, int64_t end) {
  return Kernel::run(job, begin, end);
}
template <typename Kernel, typename Job>
DETKIT_TARGET_AVX512 auto run_avx512(const Job& job, int64_t begin, int64_t end) {
  return Kernel::run(job, begin, end);
}
#endif

template <typename Kernel, typename Job>
auto run_for_active_isa(const Job& job, int64_t begin, int64_t end) {
#if DETKIT_X86_DISPATCH
  switch (active_cpu_isa()) {
    case CpuIsa::kAvx512:
      return run_avx512<Kernel>(job, begin, end);
    case CpuIsa::kAvx2:
      return run_avx2<Kernel>(job, begin, end);
    default:
      break;
  }
#endif
  return run_baseline<Kernel>(job, begin, end);
}

DETKIT_ALWAYS_INLINE float bits_to_float(int32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

DETKIT_ALWAYS_INLINE float select(bool condition, float if_true, float if_false) {
  return condition ? if_true : if_false;
}

// e^x for float. Inputs below -87.3 give 0 (the exact value is under FLT_MIN), above 88.3 +inf;
// NaN propagates.
DETKIT_ALWAYS_INLINE float exp_f32(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693359375f;  // ln 2 split so that n * kLn2Hi is exact
  const float kLn2Lo = -2.12194440e-4f;
  const float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float clamped = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  float shifted = clamped * kLog2e + kRoundMagic;
  float n = shifted - kRoundMagic;  // round(x / ln 2) in [-126, 127]
  float r = clamped - n * kLn2Hi;
  r = r - n * kLn2Lo;  // |r| <= ln(2) / 2
  // Taylor polynomial of e^r to degree 7: truncation error below 5e-9 relative.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  float scale = bits_to_float((static_cast<int32_t>(n) + 127) << 23);  // 2^n
  float result = p * scale;
  result = x < -87.3f ? 0.0f : result;
  result = x > 88.3f ? std::numeric_limits<float>::infinity() : result;
  return x != x ? x : result;
}

// log(1 + e) for e in [0, 1], accurate also for tiny e (it is log1p, not log(1 + e)).
// Uses log(1 + e) = 2 atanh(u) with u = e / (2 + e) in [0, 1/3] and the odd series of atanh.
DETKIT_ALWAYS_INLINE float log1p_unit_f32(float e) {
  float u = e / (2.0f + e);
  float u2 = u * u;
  float p = 1.0f / 15.0f;
  p = p * u2 + 1.0f / 13.0f;
  p = p * u2 + 1.0f / 11.0f;
  p = p * u2 + 1.0f / 9.0f;
  p = p * u2 + 1.0f / 7.0f;
  p = p * u2 + 1.0f / 5.0f;
  p = p * u2 + 1.0f / 3.0f;
  p = p * u2 + 1.0f;
  return 2.0f * u * p;
}

}  // namespace cpu
}  // namespace detkit
