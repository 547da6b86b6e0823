// GroupSoftmax cross entropy on CUDA: loss and gradient of each row in one pass.
//
// Math and numerics as in csrc/cpu/group_softmax_cpu.cpp. Two kernels:
// - rows of at most 1024 columns: a warp (or, for rows of at most 32 columns, a group of 1..32
//   lanes) per row; the row lives in registers (kColsPerThread values per lane, loaded as packs of
//   kVec elements where the row length and the buffers allow), and the maxima and sums are
//   butterfly reductions with warp shuffles. Memory is touched once: logits read, grad written.
// - longer rows (and float64): a block per row with shared-memory reductions; the row is swept
//   three times, the second and third sweeps served by the L1/L2 caches.
#include <cmath>

#include "cuda_common.cuh"
#include "kernels.h"

namespace detkit {
namespace cuda {
namespace {

constexpr int kWarpKernelThreads = 128;

template <typename A>
struct RowStats {
  A loss;
  A member_scale;  // gradient factor inside the group: -P_out / sum_G
  A inv_sum;       // gradient factor outside: 1 / sum
};

// From the maxima and the three sums of a row (see the CPU kernel for the derivation).
template <typename A>
__device__ __forceinline__ RowStats<A> row_stats(A row_max, A group_max, A sum, A group_sum,
                                                 A outside_sum, A grad_factor) {
  RowStats<A> stats;
  const A p_out = outside_sum / sum;
  stats.loss = p_out < A(0.5) ? -log1p_acc(-p_out)
                              : (row_max - group_max) + (log_acc(sum) - log_acc(group_sum));
  stats.member_scale = -p_out * grad_factor / group_sum;
  stats.inv_sum = grad_factor / sum;
  return stats;
}

template <typename T, int kVec, int kColsPerThread, int kThreadsPerRow>
__global__ void __launch_bounds__(kWarpKernelThreads)
    group_softmax_warp_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                              const int64_t* __restrict__ dataset_index,
                              const int64_t* __restrict__ group_table, int64_t num_rows,
                              int64_t num_columns, int64_t num_datasets,
                              typename Acc<T>::type* __restrict__ row_loss, T* __restrict__ grad,
                              const typename Acc<T>::type* __restrict__ grad_scale) {
  using A = typename Acc<T>::type;
  const A grad_factor = grad_scale != nullptr ? __ldg(grad_scale) : A(1);
  static_assert(kColsPerThread % kVec == 0, "a lane holds whole packs");
  static_assert(32 % kThreadsPerRow == 0, "row groups tile the warp");
  constexpr int kPacks = kColsPerThread / kVec;
  constexpr int kRowsPerWarp = 32 / kThreadsPerRow;
  const A neg_inf = -INFINITY;
  const int lane = threadIdx.x % kThreadsPerRow;
  const int group_in_warp = (threadIdx.x % 32) / kThreadsPerRow;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int64_t num_warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;

  // The loop bound is the same for the whole warp, so every lane reaches every shuffle.
  for (int64_t first_row = warp * kRowsPerWarp; first_row < num_rows;
       first_row += num_warps * kRowsPerWarp) {
    const int64_t row = first_row + group_in_warp;
    const bool in_range = row < num_rows;
    const int64_t target = in_range ? __ldg(targets + row) : -1;
    const int64_t dataset = in_range ? __ldg(dataset_index + row) : 0;
    const bool invalid = in_range && (target < -1 || target >= num_columns ||
                                      (target >= 0 && (dataset < 0 || dataset >= num_datasets)));
    const bool active = in_range && target >= 0 && !invalid;
    const int64_t* gid = group_table + (active ? dataset : 0) * num_columns;
    const int64_t target_group = active ? __ldg(gid + target) : 0;
    const T* x = logits + row * num_columns;

    A values[kColsPerThread];
    bool member[kColsPerThread];
    A row_max = neg_inf;
    A group_max = neg_inf;
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int64_t column = (static_cast<int64_t>(p) * kThreadsPerRow + lane) * kVec;
      if (active && column < num_columns) {
        const Pack<T, kVec> pack = *reinterpret_cast<const Pack<T, kVec>*>(x + column);
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const A z = to_acc(pack.v[k]);
          const bool in_group = __ldg(gid + column + k) == target_group;
          values[p * kVec + k] = z;
          member[p * kVec + k] = in_group;
          row_max = z > row_max ? z : row_max;
          group_max = in_group && z > group_max ? z : group_max;
        }
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          values[p * kVec + k] = neg_inf;
          member[p * kVec + k] = false;
        }
      }
    }
    row_max = group_allreduce<kThreadsPerRow>(row_max, MaxOp());
    group_max = group_allreduce<kThreadsPerRow>(group_max, MaxOp());
    if (!active) row_max = group_max = A(0);  // keeps the idle arithmetic free of NaN

    // One exp per element: relative to the group maximum inside G, the row maximum outside.
    const A group_to_row = exp_acc(group_max - row_max);
    A sum = 0;
    A group_sum = 0;
    A outside_sum = 0;
#pragma unroll
    for (int i = 0; i < kColsPerThread; ++i) {
      const A a = exp_acc(values[i] - (member[i] ? group_max : row_max));  // -inf -> 0
      values[i] = a;
      sum += member[i] ? a * group_to_row : a;
      group_sum += member[i] ? a : A(0);
      outside_sum += member[i] ? A(0) : a;
    }
    sum = group_allreduce<kThreadsPerRow>(sum, SumOp());
    group_sum = group_allreduce<kThreadsPerRow>(group_sum, SumOp());
    outside_sum = group_allreduce<kThreadsPerRow>(outside_sum, SumOp());
    if (!in_range) continue;  // after the last shuffle of this row

    const RowStats<A> stats =
        row_stats(row_max, group_max, sum, group_sum, outside_sum, grad_factor);
    if (lane == 0) {
      row_loss[row] = active ? stats.loss : (invalid ? quiet_nan<A>() : A(0));
    }
    if (grad == nullptr) continue;
    T* g = grad + row * num_columns;
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int64_t column = (static_cast<int64_t>(p) * kThreadsPerRow + lane) * kVec;
      if (column < num_columns) {
        Pack<T, kVec> pack;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const int i = p * kVec + k;
          A d = values[i] * (member[i] ? stats.member_scale : stats.inv_sum);
          if (!active) d = invalid ? quiet_nan<A>() : A(0);
          pack.v[k] = from_acc<T>(d);
        }
        *reinterpret_cast<Pack<T, kVec>*>(g + column) = pack;
      }
    }
  }
}

template <typename T>
__global__ void group_softmax_block_kernel(const T* __restrict__ logits,
                                           const int64_t* __restrict__ targets,
                                           const int64_t* __restrict__ dataset_index,
                                           const int64_t* __restrict__ group_table,
                                           int64_t num_rows, int64_t num_columns,
                                           int64_t num_datasets,
                                           typename Acc<T>::type* __restrict__ row_loss,
                                           T* __restrict__ grad,
                                           const typename Acc<T>::type* __restrict__ grad_scale) {
  using A = typename Acc<T>::type;
  __shared__ A shared[32 * 3];
  const A grad_factor = grad_scale != nullptr ? __ldg(grad_scale) : A(1);
  const A neg_inf = -INFINITY;
  for (int64_t row = blockIdx.x; row < num_rows; row += gridDim.x) {
    const int64_t target = __ldg(targets + row);
    const int64_t dataset = __ldg(dataset_index + row);
    const bool invalid = target < -1 || target >= num_columns ||
                         (target >= 0 && (dataset < 0 || dataset >= num_datasets));
    const T* x = logits + row * num_columns;
    T* g = grad != nullptr ? grad + row * num_columns : nullptr;
    if (target == -1 || invalid) {  // the same branch for the whole block
      const A fill = invalid ? quiet_nan<A>() : A(0);
      if (threadIdx.x == 0) row_loss[row] = fill;
      if (g != nullptr) {
        for (int64_t j = threadIdx.x; j < num_columns; j += blockDim.x) g[j] = from_acc<T>(fill);
      }
      continue;
    }
    const int64_t* gid = group_table + dataset * num_columns;
    const int64_t target_group = __ldg(gid + target);

    A maxima[2] = {neg_inf, neg_inf};  // row, group
    for (int64_t j = threadIdx.x; j < num_columns; j += blockDim.x) {
      const A z = to_acc(x[j]);
      maxima[0] = z > maxima[0] ? z : maxima[0];
      if (__ldg(gid + j) == target_group && z > maxima[1]) maxima[1] = z;
    }
    block_allreduce<2>(maxima, MaxOp(), shared);
    const A row_max = maxima[0];
    const A group_max = maxima[1];
    const A group_to_row = exp_acc(group_max - row_max);

    A sums[3] = {0, 0, 0};  // all, group, outside
    for (int64_t j = threadIdx.x; j < num_columns; j += blockDim.x) {
      const bool in_group = __ldg(gid + j) == target_group;
      const A a = exp_acc(to_acc(x[j]) - (in_group ? group_max : row_max));
      sums[0] += in_group ? a * group_to_row : a;
      sums[1] += in_group ? a : A(0);
      sums[2] += in_group ? A(0) : a;
    }
    block_allreduce<3>(sums, SumOp(), shared);
    const RowStats<A> stats =
        row_stats(row_max, group_max, sums[0], sums[1], sums[2], grad_factor);
    if (threadIdx.x == 0) row_loss[row] = stats.loss;
    if (g == nullptr) continue;
    for (int64_t j = threadIdx.x; j < num_columns; j += blockDim.x) {
      const bool in_group = __ldg(gid + j) == target_group;
      const A a = exp_acc(to_acc(x[j]) - (in_group ? group_max : row_max));
      g[j] = from_acc<T>(a * (in_group ? stats.member_scale : stats.inv_sum));
    }
  }
}

int next_power_of_two(int64_t n) {
  int p = 1;
  while (p < n) p *= 2;
  return p;
}

template <typename T, int kVec, int kColsPerThread, int kThreadsPerRow>
cudaError_t launch_warp(const GroupSoftmaxArgs& a, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  constexpr int kRowsPerBlock = kWarpKernelThreads / kThreadsPerRow;
  int64_t blocks = (a.num_rows + kRowsPerBlock - 1) / kRowsPerBlock;
  blocks = blocks < a.max_blocks ? blocks : a.max_blocks;
  group_softmax_warp_kernel<T, kVec, kColsPerThread, kThreadsPerRow>
      <<<blocks, kWarpKernelThreads, 0, stream>>>(
          static_cast<const T*>(a.logits), a.targets, a.dataset_index, a.group_table,
          a.num_rows, a.num_columns, a.num_datasets, static_cast<A*>(a.row_loss),
          static_cast<T*>(a.grad), static_cast<const A*>(a.grad_scale));
  return cudaGetLastError();
}

// Rows of 33..1024 columns: a full warp per row, kColsPerThread in {2, 4, ..., 32}.
template <typename T, int kColsPerThread>
cudaError_t launch_warp_wide(const GroupSoftmaxArgs& a, bool vectorised, cudaStream_t stream) {
  constexpr int kMaxVec = 16 / sizeof(T);
  constexpr int kVec = kMaxVec < kColsPerThread ? kMaxVec : kColsPerThread;
  if (vectorised && a.num_columns % kVec == 0) {
    return launch_warp<T, kVec, kColsPerThread, 32>(a, stream);
  }
  return launch_warp<T, 1, kColsPerThread, 32>(a, stream);
}

template <typename T>
cudaError_t launch_block(const GroupSoftmaxArgs& a, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const int64_t cols = a.num_columns;
  const int threads = cols >= 2048 ? 512 : (cols >= 512 ? 256 : 128);
  const int64_t blocks = a.num_rows < a.max_blocks ? a.num_rows : a.max_blocks;
  group_softmax_block_kernel<T><<<blocks, threads, 0, stream>>>(
      static_cast<const T*>(a.logits), a.targets, a.dataset_index, a.group_table, a.num_rows,
      cols, a.num_datasets, static_cast<A*>(a.row_loss), static_cast<T*>(a.grad),
      static_cast<const A*>(a.grad_scale));
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rows(const GroupSoftmaxArgs& a, cudaStream_t stream) {
  const int64_t cols = a.num_columns;
  if (cols > 1024) return launch_block<T>(a, stream);
  if (cols <= 32) {
    switch (next_power_of_two(cols)) {
      case 1:
        return launch_warp<T, 1, 1, 1>(a, stream);
      case 2:
        return launch_warp<T, 1, 1, 2>(a, stream);
      case 4:
        return launch_warp<T, 1, 1, 4>(a, stream);
      case 8:
        return launch_warp<T, 1, 1, 8>(a, stream);
      case 16:
        return launch_warp<T, 1, 1, 16>(a, stream);
      default:
        return launch_warp<T, 1, 1, 32>(a, stream);
    }
  }
  constexpr int kMaxVec = 16 / sizeof(T);
  const bool vectorised = pack_aligned<T, kMaxVec>(a.logits) &&
                          (a.grad == nullptr || pack_aligned<T, kMaxVec>(a.grad));
  switch (next_power_of_two((cols + 31) / 32)) {
    case 2:
      return launch_warp_wide<T, 2>(a, vectorised, stream);
    case 4:
      return launch_warp_wide<T, 4>(a, vectorised, stream);
    case 8:
      return launch_warp_wide<T, 8>(a, vectorised, stream);
    case 16:
      return launch_warp_wide<T, 16>(a, vectorised, stream);
    default:
      return launch_warp_wide<T, 32>(a, vectorised, stream);
  }
}

template <typename T>
cudaError_t launch_typed(const GroupSoftmaxArgs& a, cudaStream_t stream) {
  if (a.num_rows == 0) return cudaSuccess;
  if constexpr (sizeof(T) == 8) {
    return launch_block<T>(a, stream);  // float64 (gradcheck, tests): correctness over speed
  } else {
    return launch_rows<T>(a, stream);
  }
}

}  // namespace

cudaError_t launch_group_softmax(const GroupSoftmaxArgs& args, cudaStream_t stream) {
  switch (args.dtype) {
    case DType::kFloat32:
      return launch_typed<float>(args, stream);
    case DType::kFloat64:
      return launch_typed<double>(args, stream);
    case DType::kFloat16:
      return launch_typed<__half>(args, stream);
    case DType::kBFloat16:
      return launch_typed<__nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace detkit
