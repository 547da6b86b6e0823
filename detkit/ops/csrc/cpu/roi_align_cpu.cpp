// Multi-level RoIAlign on the CPU: every RoI pooled from its own pyramid level in one call.
//
// For RoI r = (b, x1, y1, x2, y2) on level l (scale s, map H x W), output size S, and
// o = 0.5 when aligned (else 0):
//   start = (x1 s - o, y1 s - o), extent = (x2 s - o, y2 s - o) - start, each side clamped to
//   >= 1 when not aligned; a bin is extent / S; the sampling grid of a bin is g_h x g_w points
//   (sampling_ratio when > 0, else ceil(extent / S) per axis), point (iy, ix) of bin (ph, pw) at
//   y = start_y + ph bin_h + (iy + 1/2) bin_h / g_h   (x alike).
// A point with y outside [-1, H] or x outside [-1, W] adds nothing; otherwise y < 0 reads as 0,
// y >= H - 1 reads row H - 1 alone, and the value is the bilinear blend of the four pixels
// around (y, x). The output of a bin is the sum over its points divided by max(g_h g_w, 1).
// These are torchvision's RoIAlign semantics. The floating-point operations are also the same
// ones in the same order (no contraction into FMA: see the pragma below), so every output and
// gradient element carries the same bits as torchvision.ops.roi_align on the CPU for finite
// inputs.
//
// Layout: the kernels read (forward) and write (backward) the maps channels-last, (B, H, W, C),
// so that a sampling point touches four contiguous channel vectors and the channel loop is a
// plain vector loop. A map given channels-last (the --amp fast path's layout) is read and written
// in place; of a map given NCHW-contiguous, each (level, image) plane that some RoI reads is
// transposed once per call, into a temporary as large as those planes.
// The sampling points of a RoI are separable: one table per axis (bin, point) -> (pixel offsets,
// weights) is computed once per RoI and shared by every channel.
//
// Threads: the forward splits RoIs x channel chunks (each output element is written by one
// thread); the backward gives each thread a range of channels for all RoIs in their order, so no
// two threads add into the same element and every sum is taken in the same order whatever the
// thread count: no atomics, the same bits for 1 and N threads.
//
// Types: the forward reads maps and writes its output in a storage type D and computes in T:
// D = T for float32 and float64; D = bfloat16 with T = float32 (the --amp inference path, no
// gradient). A bfloat16 element widens to float32 exactly and the float32 operations are the
// ones above, so each output element is the float32 result rounded to bfloat16 (to nearest,
// ties to even, as c10::BFloat16(float) and Tensor.to(torch.bfloat16) round): the bits of
// casting the maps to float32, pooling and casting the result back, without those copies. The
// backward is float32 and float64 only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "../checks.h"
#include "vec_math.h"

#if DETKIT_X86_DISPATCH
#include <immintrin.h>
#endif

// `a * b + c` stays a multiply and an add: the results are meant to equal the reference bit for
// bit, and an FMA rounds once where the reference rounds twice.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace detkit {
namespace cpu {
namespace {

constexpr const char* kForwardOp = "detkit_cpu::multi_level_roi_align_forward";
constexpr const char* kBackwardOp = "detkit_cpu::multi_level_roi_align_backward";
// Largest number of sampling points per bin along one axis (a sampling_ratio, or the adaptive
// ceil(extent / S) of one RoI): well past any real RoI, small enough for the per-RoI tables.
constexpr int64_t kMaxGrid = int64_t(1) << 16;
constexpr int64_t kForwardChannelChunk = 256;  // channels of one forward work item
constexpr int64_t kBackwardChannelBlock = 16;  // channel granularity of the backward split
constexpr int64_t kTransposeTile = 64;  // pixels (or channels) per transpose tile

// One level of the pyramid as the kernels see it: channels-last, (B, H, W, C), elements of type
// D (the storage type), geometry in T (the compute type).
template <typename T, typename D = T>
struct Level {
  D* data;  // null when no RoI reads this level
  int64_t height;
  int64_t width;
  T scale;
  bool channels_last;  // the caller's map is (B, H, W, C) in memory: no transposed copy
};

template <typename T, typename D = T>
struct Pyramid {
  std::vector<Level<T, D>> levels;
  int64_t batch;
  int64_t channels;
  int64_t output_size;
  int64_t sampling_ratio;
  bool aligned;
};

// One sampling coordinate along one axis: the two pixels it blends and their weights, the pixel
// indices already multiplied by the axis stride of the channels-last plane.
template <typename T>
struct AxisPoint {
  int64_t low;
  int64_t high;
  T low_weight;   // 1 - frac
  T high_weight;  // frac
  bool valid;
};

// The sampling points of one RoI: (S * grid_h) rows and (S * grid_w) columns.
template <typename T>
struct RoiSamples {
  int64_t batch = 0;
  int64_t level = 0;
  int64_t grid_h = 0;
  int64_t grid_w = 0;
  T count = 1;         // max(grid_h * grid_w, 1)
  bool finite = true;  // false: a coordinate of the RoI is NaN or infinite
  std::vector<AxisPoint<T>> rows;
  std::vector<AxisPoint<T>> cols;
};

// How one coordinate reads a map of `size` pixels along its axis (`stride` elements apart).
template <typename T>
AxisPoint<T> axis_point(T coord, int64_t size, int64_t stride) {
  // Written so that NaN counts as outside.
  if (!(coord >= T(-1) && coord <= static_cast<T>(size)) || size <= 0) {
    return {0, 0, T(0), T(0), false};
  }
  if (coord <= T(0)) coord = T(0);
  int64_t low = static_cast<int64_t>(coord);
  int64_t high = low + 1;
  if (low >= size - 1) {
    low = high = size - 1;
    coord = static_cast<T>(low);
  }
  const T frac = coord - static_cast<T>(low);
  return {low * stride, high * stride, T(1) - frac, frac, true};
}

template <typename T>
bool roi_is_finite(const T* roi) {
  for (int k = 0; k < 5; ++k) {
    if (!std::isfinite(roi[k])) return false;
  }
  return true;
}

// The number of sampling points per bin along an axis of extent `extent` (level pixels), before
// the clamp to >= 0; NaN or above kMaxGrid when the RoI is absurdly large.
template <typename T>
T grid_points(T extent, int64_t output_size, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return static_cast<T>(sampling_ratio);
  return std::ceil(extent / static_cast<T>(output_size));
}

// The corner of a RoI and the size of one bin, in level pixels, and its grid.
template <typename T>
struct RoiFrame {
  T start_h, start_w, bin_h, bin_w, grid_h, grid_w;
};

template <typename T, typename D>
RoiFrame<T> roi_frame(const T* roi, const Pyramid<T, D>& p, int64_t level) {
  const T scale = p.levels[level].scale;
  const T offset = p.aligned ? T(0.5) : T(0);
  const T start_w = roi[1] * scale - offset;
  const T start_h = roi[2] * scale - offset;
  const T end_w = roi[3] * scale - offset;
  const T end_h = roi[4] * scale - offset;
  T extent_w = end_w - start_w;
  T extent_h = end_h - start_h;
  if (!p.aligned) {  // the original RoIAlign: a RoI is at least one pixel on each side
    extent_w = std::max(extent_w, T(1));
    extent_h = std::max(extent_h, T(1));
  }
  const T size = static_cast<T>(p.output_size);
  return {start_h,
          start_w,
          extent_h / size,
          extent_w / size,
          grid_points(extent_h, p.output_size, p.sampling_ratio),
          grid_points(extent_w, p.output_size, p.sampling_ratio)};
}

// Fills `s` with the sampling tables of RoI `roi` on `level` (checked beforehand: level and
// batch index in range, grid at most kMaxGrid).
template <typename T, typename D>
void sample_roi(const T* roi, int64_t level, const Pyramid<T, D>& p, RoiSamples<T>& s) {
  s.level = level;
  s.finite = roi_is_finite(roi);
  if (!s.finite) return;
  s.batch = static_cast<int64_t>(roi[0]);
  const RoiFrame<T> f = roi_frame(roi, p, level);
  s.grid_h = std::max<int64_t>(static_cast<int64_t>(f.grid_h), 0);
  s.grid_w = std::max<int64_t>(static_cast<int64_t>(f.grid_w), 0);
  s.count = static_cast<T>(std::max<int64_t>(s.grid_h * s.grid_w, 1));
  const int64_t size = p.output_size;
  const Level<T, D>& map = p.levels[level];
  s.rows.resize(size * s.grid_h);
  s.cols.resize(size * s.grid_w);
  const T grid_h = static_cast<T>(s.grid_h);
  const T grid_w = static_cast<T>(s.grid_w);
  for (int64_t ph = 0; ph < size; ++ph) {
    for (int64_t iy = 0; iy < s.grid_h; ++iy) {
      const T y = f.start_h + static_cast<T>(ph) * f.bin_h +
                  static_cast<T>(iy + .5f) * f.bin_h / grid_h;
      s.rows[ph * s.grid_h + iy] = axis_point(y, map.height, map.width * p.channels);
    }
  }
  for (int64_t pw = 0; pw < size; ++pw) {
    for (int64_t ix = 0; ix < s.grid_w; ++ix) {
      const T x = f.start_w + static_cast<T>(pw) * f.bin_w +
                  static_cast<T>(ix + .5f) * f.bin_w / grid_w;
      s.cols[pw * s.grid_w + ix] = axis_point(x, map.width, p.channels);
    }
  }
}

// ---- forward ------------------------------------------------------------------------------------

// Maps and output of storage type D, computed in T (see "Types" above).
template <typename T, typename D>
struct ForwardJob {
  const Pyramid<T, D>* pyramid;
  const T* rois;           // (R, 5)
  const int64_t* levels;   // (R,)
  D* out;                  // (R, C, S, S)
  int64_t num_chunks;      // channel chunks per RoI
};

// acc[c] += w1 p1[c] + w2 p2[c] + w3 p3[c] + w4 p4[c], summed left to right, each p widened
// to T (exact; nothing at all when D is T).
template <typename T, typename D>
DETKIT_ALWAYS_INLINE void blend_into(T* DETKIT_RESTRICT acc, const D* p1, const D* p2,
                                     const D* p3, const D* p4, T w1, T w2, T w3, T w4,
                                     int64_t n) {
  DETKIT_SIMD
  for (int64_t c = 0; c < n; ++c) {
    acc[c] += w1 * static_cast<T>(p1[c]) + w2 * static_cast<T>(p2[c]) +
              w3 * static_cast<T>(p3[c]) + w4 * static_cast<T>(p4[c]);
  }
}

// Work items [begin, end) of RoIs x channel chunks.
template <typename T, typename D>
DETKIT_ALWAYS_INLINE void forward_items_impl(const ForwardJob<T, D>& job, int64_t begin,
                                             int64_t end) {
  const Pyramid<T, D>& p = *job.pyramid;
  const int64_t channels = p.channels;
  const int64_t size = p.output_size;
  const int64_t bins = size * size;
  RoiSamples<T> s;
  int64_t sampled_roi = -1;
  std::vector<T> acc(kForwardChannelChunk);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t r = item / job.num_chunks;
    const int64_t c0 = (item % job.num_chunks) * kForwardChannelChunk;
    const int64_t n = std::min(kForwardChannelChunk, channels - c0);
    if (r != sampled_roi) {
      sample_roi(job.rois + r * 5, job.levels[r], p, s);
      sampled_roi = r;
    }
    D* out = job.out + (r * channels + c0) * bins;  // (n, S, S)
    if (!s.finite) {
      std::fill(out, out + n * bins, std::numeric_limits<D>::quiet_NaN());
      continue;
    }
    const Level<T, D>& map = p.levels[s.level];
    const D* plane = map.data + s.batch * map.height * map.width * channels + c0;
    for (int64_t ph = 0; ph < size; ++ph) {
      for (int64_t pw = 0; pw < size; ++pw) {
        std::fill(acc.begin(), acc.begin() + n, T(0));
        for (int64_t iy = 0; iy < s.grid_h; ++iy) {
          const AxisPoint<T>& row = s.rows[ph * s.grid_h + iy];
          if (!row.valid) continue;
          for (int64_t ix = 0; ix < s.grid_w; ++ix) {
            const AxisPoint<T>& col = s.cols[pw * s.grid_w + ix];
            if (!col.valid) continue;
            blend_into(acc.data(), plane + row.low + col.low, plane + row.low + col.high,
                       plane + row.high + col.low, plane + row.high + col.high,
                       row.low_weight * col.low_weight, row.low_weight * col.high_weight,
                       row.high_weight * col.low_weight, row.high_weight * col.high_weight, n);
          }
        }
        D* bin_out = out + ph * size + pw;
        for (int64_t c = 0; c < n; ++c) bin_out[c * bins] = static_cast<D>(acc[c] / s.count);
      }
    }
  }
}

// Per-ISA copies written out here rather than through vec_math.h's run_for_active_isa: GCC
// applies this file's fp-contract=off pragma to the functions defined below it, and the header's
// wrappers, defined above it, would inline the kernels with contraction into FMA (tested: the
// bits then differ from torchvision's).
template <typename T, typename D>
void forward_items_baseline(const ForwardJob<T, D>& job, int64_t begin, int64_t end) {
  forward_items_impl(job, begin, end);
}
#if DETKIT_X86_DISPATCH
template <typename T, typename D>
DETKIT_TARGET_AVX2 void forward_items_avx2(const ForwardJob<T, D>& job, int64_t begin,
                                           int64_t end) {
  forward_items_impl(job, begin, end);
}
template <typename T, typename D>
DETKIT_TARGET_AVX512 void forward_items_avx512(const ForwardJob<T, D>& job, int64_t begin,
                                               int64_t end) {
  forward_items_impl(job, begin, end);
}
#endif

template <typename T, typename D>
void forward_items(const ForwardJob<T, D>& job, int64_t begin, int64_t end) {
#if DETKIT_X86_DISPATCH
  switch (active_cpu_isa()) {
    case CpuIsa::kAvx512:
      return forward_items_avx512(job, begin, end);
    case CpuIsa::kAvx2:
      return forward_items_avx2(job, begin, end);
    default:
      break;
  }
#endif
  forward_items_baseline(job, begin, end);
}

// ---- backward -----------------------------------------------------------------------------------

template <typename T>
struct BackwardJob {
  const Pyramid<T>* pyramid;  // levels[l].data: the channels-last gradient, zeroed
  const T* rois;
  const int64_t* levels;
  const T* grad_output;  // (R, C, S, S)
  int64_t num_rois;
};

// q[c] += g[c] w / count: the gradient of one of the four pixels a point blends.
template <typename T>
DETKIT_ALWAYS_INLINE void scatter_into(T* DETKIT_RESTRICT q, const T* DETKIT_RESTRICT g, T w,
                                       T count, int64_t n) {
  DETKIT_SIMD
  for (int64_t c = 0; c < n; ++c) q[c] += g[c] * w / count;
}

// The gradient of output bin (ph, pw), g[0 .. n), into the four pixels of each of its points.
template <typename T>
DETKIT_ALWAYS_INLINE void scatter_bin(T* plane, const T* g, const RoiSamples<T>& s, int64_t ph,
                                      int64_t pw, int64_t n) {
  for (int64_t iy = 0; iy < s.grid_h; ++iy) {
    const AxisPoint<T>& row = s.rows[ph * s.grid_h + iy];
    if (!row.valid) continue;
    for (int64_t ix = 0; ix < s.grid_w; ++ix) {
      const AxisPoint<T>& col = s.cols[pw * s.grid_w + ix];
      if (!col.valid) continue;
      // Four separate loops: at the last row or column two of the pixels coincide and receive
      // their two additions one after the other.
      scatter_into(plane + row.low + col.low, g, row.low_weight * col.low_weight, s.count, n);
      scatter_into(plane + row.low + col.high, g, row.low_weight * col.high_weight, s.count, n);
      scatter_into(plane + row.high + col.low, g, row.high_weight * col.low_weight, s.count, n);
      scatter_into(plane + row.high + col.high, g, row.high_weight * col.high_weight, s.count,
                   n);
    }
  }
}

// Channels [c0, c1) of every RoI, RoIs in order.
template <typename T>
DETKIT_ALWAYS_INLINE void backward_channels_impl(const BackwardJob<T>& job, int64_t c0,
                                                 int64_t c1) {
  const Pyramid<T>& p = *job.pyramid;
  const int64_t channels = p.channels;
  const int64_t size = p.output_size;
  const int64_t bins = size * size;
  const int64_t n = c1 - c0;
  RoiSamples<T> s;
  std::vector<T> g(n);
  for (int64_t r = 0; r < job.num_rois; ++r) {
    sample_roi(job.rois + r * 5, job.levels[r], p, s);
    if (!s.finite || s.grid_h == 0 || s.grid_w == 0) continue;
    const Level<T>& map = p.levels[s.level];
    T* plane = map.data + s.batch * map.height * map.width * channels + c0;
    const T* grad_roi = job.grad_output + (r * channels + c0) * bins;
    for (int64_t ph = 0; ph < size; ++ph) {
      for (int64_t pw = 0; pw < size; ++pw) {
        for (int64_t c = 0; c < n; ++c) g[c] = grad_roi[c * bins + ph * size + pw];
        scatter_bin(plane, g.data(), s, ph, pw, n);
      }
    }
  }
}

template <typename T>
void backward_channels_baseline(const BackwardJob<T>& job, int64_t c0, int64_t c1) {
  backward_channels_impl(job, c0, c1);
}
#if DETKIT_X86_DISPATCH
template <typename T>
DETKIT_TARGET_AVX2 void backward_channels_avx2(const BackwardJob<T>& job, int64_t c0,
                                               int64_t c1) {
  backward_channels_impl(job, c0, c1);
}
template <typename T>
DETKIT_TARGET_AVX512 void backward_channels_avx512(const BackwardJob<T>& job, int64_t c0,
                                                   int64_t c1) {
  backward_channels_impl(job, c0, c1);
}
#endif

template <typename T>
void backward_channels(const BackwardJob<T>& job, int64_t c0, int64_t c1) {
#if DETKIT_X86_DISPATCH
  switch (active_cpu_isa()) {
    case CpuIsa::kAvx512:
      return backward_channels_avx512(job, c0, c1);
    case CpuIsa::kAvx2:
      return backward_channels_avx2(job, c0, c1);
    default:
      break;
  }
#endif
  backward_channels_baseline(job, c0, c1);
}

// ---- layout -------------------------------------------------------------------------------------

// dst[c * rows + r] = src[r * cols + c] for r in [r0, r1), c in [c0, c1).
template <typename T>
DETKIT_ALWAYS_INLINE void transpose_scalar(const T* src, T* dst, int64_t rows, int64_t cols,
                                           int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
  }
}

template <typename T>
void transpose_baseline(const T* src, T* dst, int64_t rows, int64_t cols, int64_t r0,
                        int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t cc = c0; cc < c1; cc += kTransposeTile) {
    for (int64_t rr = r0; rr < r1; rr += kTransposeTile) {
      transpose_scalar(src, dst, rows, cols, rr, std::min(r1, rr + kTransposeTile), cc,
                       std::min(c1, cc + kTransposeTile));
    }
  }
}

#if DETKIT_X86_DISPATCH
// An 8 x 8 float block (4 x 4 double) through AVX registers: rows of `src` (ld_src apart) become
// rows of `dst` (ld_dst apart).
DETKIT_TARGET_AVX2 DETKIT_ALWAYS_INLINE void transpose_registers(const float* src,
                                                                 int64_t ld_src, float* dst,
                                                                 int64_t ld_dst) {
  __m256 row[8];
  for (int i = 0; i < 8; ++i) row[i] = _mm256_loadu_ps(src + i * ld_src);
  __m256 pair[8];  // interleaved pairs of rows
  for (int i = 0; i < 4; ++i) {
    pair[2 * i] = _mm256_unpacklo_ps(row[2 * i], row[2 * i + 1]);
    pair[2 * i + 1] = _mm256_unpackhi_ps(row[2 * i], row[2 * i + 1]);
  }
  __m256 quad[8];  // four rows' worth of each column, per 128-bit half
  for (int i = 0; i < 2; ++i) {
    quad[4 * i + 0] = _mm256_shuffle_ps(pair[4 * i], pair[4 * i + 2], 0x44);
    quad[4 * i + 1] = _mm256_shuffle_ps(pair[4 * i], pair[4 * i + 2], 0xEE);
    quad[4 * i + 2] = _mm256_shuffle_ps(pair[4 * i + 1], pair[4 * i + 3], 0x44);
    quad[4 * i + 3] = _mm256_shuffle_ps(pair[4 * i + 1], pair[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ld_dst, _mm256_permute2f128_ps(quad[j], quad[4 + j], 0x20));
    _mm256_storeu_ps(dst + (4 + j) * ld_dst, _mm256_permute2f128_ps(quad[j], quad[4 + j], 0x31));
  }
}

DETKIT_TARGET_AVX2 DETKIT_ALWAYS_INLINE void transpose_registers(const double* src,
                                                                 int64_t ld_src, double* dst,
                                                                 int64_t ld_dst) {
  __m256d row[4];
  for (int i = 0; i < 4; ++i) row[i] = _mm256_loadu_pd(src + i * ld_src);
  const __m256d low01 = _mm256_unpacklo_pd(row[0], row[1]);
  const __m256d high01 = _mm256_unpackhi_pd(row[0], row[1]);
  const __m256d low23 = _mm256_unpacklo_pd(row[2], row[3]);
  const __m256d high23 = _mm256_unpackhi_pd(row[2], row[3]);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(low01, low23, 0x20));
  _mm256_storeu_pd(dst + ld_dst, _mm256_permute2f128_pd(high01, high23, 0x20));
  _mm256_storeu_pd(dst + 2 * ld_dst, _mm256_permute2f128_pd(low01, low23, 0x31));
  _mm256_storeu_pd(dst + 3 * ld_dst, _mm256_permute2f128_pd(high01, high23, 0x31));
}

// An 8 x 8 block of bfloat16 through SSE registers (the bits are moved, not converted).
DETKIT_TARGET_AVX2 DETKIT_ALWAYS_INLINE void transpose_registers(const c10::BFloat16* src,
                                                                 int64_t ld_src,
                                                                 c10::BFloat16* dst,
                                                                 int64_t ld_dst) {
  __m128i row[8];
  for (int i = 0; i < 8; ++i) {
    row[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * ld_src));
  }
  __m128i pair[8];  // columns 0-3 (even index) and 4-7 (odd) of two rows, interleaved
  for (int i = 0; i < 4; ++i) {
    pair[2 * i] = _mm_unpacklo_epi16(row[2 * i], row[2 * i + 1]);
    pair[2 * i + 1] = _mm_unpackhi_epi16(row[2 * i], row[2 * i + 1]);
  }
  __m128i quad[8];  // quad[4 i + j]: columns 2 j and 2 j + 1 of rows 4 i .. 4 i + 3
  for (int i = 0; i < 2; ++i) {
    quad[4 * i + 0] = _mm_unpacklo_epi32(pair[4 * i], pair[4 * i + 2]);
    quad[4 * i + 1] = _mm_unpackhi_epi32(pair[4 * i], pair[4 * i + 2]);
    quad[4 * i + 2] = _mm_unpacklo_epi32(pair[4 * i + 1], pair[4 * i + 3]);
    quad[4 * i + 3] = _mm_unpackhi_epi32(pair[4 * i + 1], pair[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * j * ld_dst),
                     _mm_unpacklo_epi64(quad[j], quad[4 + j]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * j + 1) * ld_dst),
                     _mm_unpackhi_epi64(quad[j], quad[4 + j]));
  }
}

// Register blocks inside column tiles of kTransposeTile; the ragged edges element by element.
// Also serves the AVX-512 level: the transpose is bound by memory, not by the vector width.
template <typename T>
DETKIT_TARGET_AVX2 void transpose_avx2(const T* src, T* dst, int64_t rows, int64_t cols,
                                       int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  // The block of transpose_registers: 8 x 8 floats (or bfloat16), 4 x 4 doubles.
  constexpr int64_t kBlock = sizeof(T) == 2 ? 8 : 32 / sizeof(T);
  for (int64_t cc = c0; cc < c1; cc += kTransposeTile) {
    const int64_t c_end = std::min(c1, cc + kTransposeTile);
    const int64_t c_blocks = cc + (c_end - cc) / kBlock * kBlock;
    int64_t r = r0;
    for (; r + kBlock <= r1; r += kBlock) {
      for (int64_t c = cc; c < c_blocks; c += kBlock) {
        transpose_registers(src + r * cols + c, cols, dst + c * rows + r, rows);
      }
      transpose_scalar(src, dst, rows, cols, r, r + kBlock, c_blocks, c_end);
    }
    transpose_scalar(src, dst, rows, cols, r, r1, cc, c_end);
  }
}
#endif

// The (rows, cols) matrix `src` into the (cols, rows) matrix `dst`, split over threads along the
// pixel axis: the columns when `pixels_are_columns`, else the rows.
template <typename T>
void transpose(const T* src, T* dst, int64_t rows, int64_t cols, bool pixels_are_columns) {
  const int64_t pixels = pixels_are_columns ? cols : rows;
  const int64_t other = pixels_are_columns ? rows : cols;
  const int64_t tiles = (pixels + kTransposeTile - 1) / kTransposeTile;
  const int64_t grain = std::max<int64_t>(1, 32768 / (kTransposeTile * other + 1));
  at::parallel_for(0, tiles, grain, [&](int64_t begin, int64_t end) {
    const int64_t p0 = begin * kTransposeTile;
    const int64_t p1 = std::min(pixels, end * kTransposeTile);
    const int64_t r0 = pixels_are_columns ? 0 : p0;
    const int64_t r1 = pixels_are_columns ? rows : p1;
    const int64_t c0 = pixels_are_columns ? p0 : 0;
    const int64_t c1 = pixels_are_columns ? p1 : cols;
#if DETKIT_X86_DISPATCH
    if (active_cpu_isa() != CpuIsa::kBaseline) {
      transpose_avx2(src, dst, rows, cols, r0, r1, c0, c1);
      return;
    }
#endif
    transpose_baseline(src, dst, rows, cols, r0, r1, c0, c1);
  });
}

// (C, H W) -> (H W, C): one image of one level, channels last.
template <typename T>
void planar_to_interleaved(const T* src, T* dst, int64_t channels, int64_t pixels) {
  transpose(src, dst, channels, pixels, /*pixels_are_columns=*/true);
}

// (H W, C) -> (C, H W).
template <typename T>
void interleaved_to_planar(const T* src, T* dst, int64_t channels, int64_t pixels) {
  transpose(src, dst, pixels, channels, /*pixels_are_columns=*/false);
}

// ---- argument checks ----------------------------------------------------------------------------

void check_scales(c10::ArrayRef<double> spatial_scales, int64_t num_levels, const char* op) {
  TORCH_CHECK(static_cast<int64_t>(spatial_scales.size()) == num_levels, op,
              ": spatial_scales has ", spatial_scales.size(), " entries for ", num_levels,
              " feature levels; expected one scale per level");
  for (size_t l = 0; l < spatial_scales.size(); ++l) {
    TORCH_CHECK(std::isfinite(spatial_scales[l]) && spatial_scales[l] > 0, op,
                ": spatial_scales[", l, "] must be a finite number > 0, got ", spatial_scales[l]);
  }
}

// rois (R, 5) of `dtype` and levels (R,) int64 on the CPU; returns R.
int64_t check_rois(const at::Tensor& rois, const at::Tensor& levels, at::ScalarType dtype,
                   const char* op) {
  const c10::Device cpu(c10::kCPU);
  check_tensor(rois, op, "rois", 2, cpu);
  TORCH_CHECK(rois.size(1) == 5, op, ": rois must have shape (R, 5) (batch_index, x1, y1, x2, y2)",
              ", got ", rois.sizes());
  check_dtype(rois, op, "rois", dtype);
  check_rows(levels, op, "levels", rois.size(0), cpu);
  check_dtype(levels, op, "levels", at::kLong);
  return rois.size(0);
}

// A list of (B, C, H_l, W_l) maps of one float dtype, each NCHW-contiguous or channels-last;
// returns the pyramid without data pointers.
template <typename T, typename D = T>
Pyramid<T, D> pyramid_of(at::TensorList maps, const char* name,
                         c10::ArrayRef<double> spatial_scales, const char* op) {
  TORCH_CHECK(!maps.empty(), op, ": ", name, " is empty; expected one map per level");
  const c10::Device cpu(c10::kCPU);
  Pyramid<T, D> p;
  for (size_t l = 0; l < maps.size(); ++l) {
    const at::Tensor& map = maps[l];
    const std::string label = std::string(name) + "[" + std::to_string(l) + "]";
    TORCH_CHECK(map.defined(), op, ": ", label, " is undefined");
    TORCH_CHECK(map.dim() == 4, op, ": ", label, " must have 4 dimensions, got shape ",
                map.sizes());
    // NCHW wins where both hold (C == 1 or H W == 1), so that such a map takes one path only.
    const bool planar = map.is_contiguous();
    TORCH_CHECK(planar || map.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": ", label,
                " must be contiguous, NCHW or channels-last");
    TORCH_CHECK(map.device() == cpu, op, ": ", label, " is on ", map.device(), ", expected cpu");
    check_dtype(map, op, label.c_str(), maps[0].scalar_type());
    if (l == 0) {
      p.batch = map.size(0);
      p.channels = map.size(1);
    }
    TORCH_CHECK(map.size(0) == p.batch && map.size(1) == p.channels, op, ": ", label,
                " has shape ", map.sizes(), "; every level must have the batch size and channels "
                "of ", name, "[0], (", p.batch, ", ", p.channels, ", H, W)");
    p.levels.push_back({nullptr, map.size(2), map.size(3), T(0), !planar});
  }
  check_scales(spatial_scales, static_cast<int64_t>(maps.size()), op);
  for (size_t l = 0; l < maps.size(); ++l) p.levels[l].scale = static_cast<T>(spatial_scales[l]);
  return p;
}

// Checks every RoI's level, batch index and grid; returns which (level, image) planes are read,
// indexed level * B + image.
template <typename T, typename D>
std::vector<char> check_roi_rows(const at::Tensor& rois, const at::Tensor& levels,
                                 const Pyramid<T, D>& p, const char* op) {
  const int64_t num_levels = static_cast<int64_t>(p.levels.size());
  const T* roi_data = rois.data_ptr<T>();
  const int64_t* level_data = levels.data_ptr<int64_t>();
  std::vector<char> planes_read(num_levels * p.batch, 0);
  for (int64_t r = 0; r < rois.size(0); ++r) {
    const int64_t level = level_data[r];
    TORCH_CHECK_VALUE(level >= 0 && level < num_levels, op, ": levels[", r, "] is ", level,
                      "; level ids must lie in [0, ", num_levels - 1, "] for the ", num_levels,
                      " feature levels");
    const T* roi = roi_data + r * 5;
    if (!roi_is_finite(roi)) continue;  // pooled as NaN
    // Truncated toward zero, as an integer cast does.
    TORCH_CHECK_VALUE(roi[0] > T(-1) && roi[0] < static_cast<T>(p.batch), op, ": rois[", r,
                      ", 0] (the batch index) is ", roi[0], "; it must lie in [0, ", p.batch - 1,
                      "] for a batch of ", p.batch, " images");
    const RoiFrame<T> f = roi_frame(roi, p, level);
    TORCH_CHECK_VALUE(f.grid_h <= T(kMaxGrid) && f.grid_w <= T(kMaxGrid), op, ": rois[", r,
                      "] = (", roi[0], ", ", roi[1], ", ", roi[2], ", ", roi[3], ", ", roi[4],
                      ") needs ", f.grid_h, " x ", f.grid_w,
                      " sampling points per bin on level ", level, "; at most ", kMaxGrid,
                      " per axis are supported (is the box in pixels of the image?)");
    planes_read[level * p.batch + static_cast<int64_t>(roi[0])] = 1;
  }
  return planes_read;
}

bool level_is_read(const std::vector<char>& planes_read, size_t level, int64_t batch) {
  const auto first = planes_read.begin() + static_cast<int64_t>(level) * batch;
  return std::any_of(first, first + batch, [](char read) { return read != 0; });
}

// ---- entry points -------------------------------------------------------------------------------

// Maps and out of storage type D, rois of compute type T (see "Types" above).
template <typename T, typename D = T>
void forward_typed(at::TensorList feats, const at::Tensor& rois, const at::Tensor& levels,
                   c10::ArrayRef<double> spatial_scales, int64_t output_size,
                   int64_t sampling_ratio, bool aligned, const at::Tensor& out) {
  Pyramid<T, D> p = pyramid_of<T, D>(feats, "feats", spatial_scales, kForwardOp);
  p.output_size = output_size;
  p.sampling_ratio = sampling_ratio;
  p.aligned = aligned;
  const int64_t num_rois = rois.size(0);
  check_tensor(out, kForwardOp, "out", 4, c10::Device(c10::kCPU));
  check_dtype(out, kForwardOp, "out", feats[0].scalar_type());
  TORCH_CHECK(out.sizes() == at::IntArrayRef({num_rois, p.channels, output_size, output_size}),
              kForwardOp, ": out must have shape (", num_rois, ", ", p.channels, ", ",
              output_size, ", ", output_size, "), got ", out.sizes());
  const std::vector<char> planes_read = check_roi_rows(rois, levels, p, kForwardOp);
  if (num_rois == 0 || p.channels == 0) return;

  // Channels-last copies of the NCHW planes that some RoI reads (the others stay unwritten); a
  // channels-last map is read where it is.
  std::vector<at::Tensor> interleaved;
  for (size_t l = 0; l < p.levels.size(); ++l) {
    Level<T, D>& level = p.levels[l];
    const int64_t pixels = level.height * level.width;
    if (!level_is_read(planes_read, l, p.batch)) continue;
    if (level.channels_last) {
      level.data = const_cast<D*>(feats[l].data_ptr<D>());  // only read
      continue;
    }
    interleaved.push_back(at::empty({p.batch, level.height, level.width, p.channels},
                                    feats[l].options()));
    level.data = interleaved.back().data_ptr<D>();
    const D* src = feats[l].data_ptr<D>();
    for (int64_t b = 0; b < p.batch; ++b) {
      if (!planes_read[l * p.batch + b]) continue;
      planar_to_interleaved(src + b * p.channels * pixels, level.data + b * pixels * p.channels,
                            p.channels, pixels);
    }
  }

  const int64_t num_chunks = (p.channels + kForwardChannelChunk - 1) / kForwardChannelChunk;
  const ForwardJob<T, D> job{&p, rois.data_ptr<T>(), levels.data_ptr<int64_t>(),
                             out.data_ptr<D>(), num_chunks};
  // About 8 items (a few hundred thousand multiply-adds) per task at the least.
  at::parallel_for(0, num_rois * num_chunks, 8,
                   [&](int64_t begin, int64_t end) { forward_items(job, begin, end); });
}

void multi_level_roi_align_forward_cpu(at::TensorList feats, const at::Tensor& rois,
                                       const at::Tensor& levels,
                                       c10::ArrayRef<double> spatial_scales, int64_t output_size,
                                       int64_t sampling_ratio, bool aligned,
                                       const at::Tensor& out) {
  TORCH_CHECK(!feats.empty(), kForwardOp, ": feats is empty; expected one map per level");
  const at::ScalarType dtype = feats[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16, kForwardOp,
              ": feats must be float32, float64 or bfloat16, got ", dtype);
  TORCH_CHECK(output_size >= 1, kForwardOp, ": output_size must be >= 1, got ", output_size);
  TORCH_CHECK(sampling_ratio <= kMaxGrid, kForwardOp, ": sampling_ratio must be <= ", kMaxGrid,
              " (or <= 0 for adaptive), got ", sampling_ratio);
  // bfloat16 maps are computed in float32: their RoIs are float32.
  check_rois(rois, levels, dtype == at::kBFloat16 ? at::kFloat : dtype, kForwardOp);
  if (dtype == at::kFloat) {
    forward_typed<float>(feats, rois, levels, spatial_scales, output_size, sampling_ratio,
                         aligned, out);
  } else if (dtype == at::kBFloat16) {
    forward_typed<float, c10::BFloat16>(feats, rois, levels, spatial_scales, output_size,
                                        sampling_ratio, aligned, out);
  } else {
    forward_typed<double>(feats, rois, levels, spatial_scales, output_size, sampling_ratio,
                          aligned, out);
  }
}

template <typename T>
void backward_typed(const at::Tensor& grad_output, const at::Tensor& rois,
                    const at::Tensor& levels, c10::ArrayRef<double> spatial_scales,
                    int64_t sampling_ratio, bool aligned, at::TensorList grad_feats) {
  Pyramid<T> p = pyramid_of<T>(grad_feats, "grad_feats", spatial_scales, kBackwardOp);
  p.output_size = grad_output.size(2);
  p.sampling_ratio = sampling_ratio;
  p.aligned = aligned;
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK(grad_output.size(0) == num_rois && grad_output.size(1) == p.channels &&
                  grad_output.size(3) == p.output_size && p.output_size >= 1,
              kBackwardOp, ": grad_output must have shape (", num_rois, ", ", p.channels,
              ", S, S) with S >= 1, got ", grad_output.sizes());
  const std::vector<char> planes_read = check_roi_rows(rois, levels, p, kBackwardOp);

  // Channels-last gradients of the planes that some RoI reads; every other plane is zero. A
  // channels-last grad_feats map is written in place.
  std::vector<at::Tensor> interleaved;
  for (size_t l = 0; l < p.levels.size(); ++l) {
    Level<T>& level = p.levels[l];
    const int64_t plane = level.height * level.width * p.channels;
    if (level.channels_last) {
      level.data = grad_feats[l].data_ptr<T>();
    } else if (level_is_read(planes_read, l, p.batch)) {
      interleaved.push_back(at::empty({p.batch, level.height, level.width, p.channels},
                                      grad_feats[l].options()));
      level.data = interleaved.back().data_ptr<T>();
    }
    T* grad = grad_feats[l].data_ptr<T>();
    at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        T* target = planes_read[l * p.batch + b] ? level.data : grad;
        std::fill(target + b * plane, target + (b + 1) * plane, T(0));
      }
    });
  }

  if (num_rois > 0 && p.channels > 0) {
    const BackwardJob<T> job{&p, rois.data_ptr<T>(), levels.data_ptr<int64_t>(),
                             grad_output.data_ptr<T>(), num_rois};
    const int64_t blocks = (p.channels + kBackwardChannelBlock - 1) / kBackwardChannelBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      backward_channels(job, begin * kBackwardChannelBlock,
                        std::min(p.channels, end * kBackwardChannelBlock));
    });
  }

  for (size_t l = 0; l < p.levels.size(); ++l) {
    const Level<T>& level = p.levels[l];
    if (level.channels_last) continue;  // written in place
    const int64_t pixels = level.height * level.width;
    T* grad = grad_feats[l].data_ptr<T>();
    for (int64_t b = 0; b < p.batch; ++b) {
      if (!planes_read[l * p.batch + b]) continue;
      interleaved_to_planar(level.data + b * pixels * p.channels, grad + b * p.channels * pixels,
                            p.channels, pixels);
    }
  }
}

void multi_level_roi_align_backward_cpu(const at::Tensor& grad_output, const at::Tensor& rois,
                                        const at::Tensor& levels,
                                        c10::ArrayRef<double> spatial_scales,
                                        int64_t sampling_ratio, bool aligned,
                                        at::TensorList grad_feats) {
  const c10::Device cpu(c10::kCPU);
  check_tensor(grad_output, kBackwardOp, "grad_output", 4, cpu);
  const at::ScalarType dtype = grad_output.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, kBackwardOp,
              ": grad_output must be float32 or float64, got ", dtype);
  TORCH_CHECK(sampling_ratio <= kMaxGrid, kBackwardOp, ": sampling_ratio must be <= ", kMaxGrid,
              " (or <= 0 for adaptive), got ", sampling_ratio);
  check_rois(rois, levels, dtype, kBackwardOp);
  for (size_t l = 0; l < grad_feats.size(); ++l) {
    const std::string label = "grad_feats[" + std::to_string(l) + "]";
    TORCH_CHECK(grad_feats[l].defined(), kBackwardOp, ": ", label, " is undefined");
    check_dtype(grad_feats[l], kBackwardOp, label.c_str(), dtype);
  }
  if (dtype == at::kFloat) {
    backward_typed<float>(grad_output, rois, levels, spatial_scales, sampling_ratio, aligned,
                          grad_feats);
  } else {
    backward_typed<double>(grad_output, rois, levels, spatial_scales, sampling_ratio, aligned,
                           grad_feats);
  }
}

}  // namespace
}  // namespace cpu
}  // namespace detkit

TORCH_LIBRARY_IMPL(detkit_cpu, CPU, m) {
  m.impl("multi_level_roi_align_forward", &detkit::cpu::multi_level_roi_align_forward_cpu);
  m.impl("multi_level_roi_align_backward", &detkit::cpu::multi_level_roi_align_backward_cpu);
}
