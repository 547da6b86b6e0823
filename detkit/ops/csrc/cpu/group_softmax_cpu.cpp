// GroupSoftmax cross entropy on the CPU: loss and gradient of a row in one visit.
//
// For a row z over K + 1 classes from dataset d with target t, the target's group is
// G = {j : gid[d][j] == gid[d][t]}, p = softmax(z), P_G = sum_{j in G} p_j, P_out = 1 - P_G and
//   loss       = logsumexp(z) - logsumexp(z_G)   (= -log1p(-P_out) where P_out < 1/2)
//   dloss/dz_m = p_m - [m in G] p_m / P_G
//              = p_m                                   for m outside G
//              = -exp(z_m - logsumexp(z_G)) * P_out     for m in G
// Both log-sum-exps subtract their own maximum, so a group whose probability underflows in
// float32 (logits -1000 below the rest, say) still gives a finite loss and gradient; the
// log1p / P_out forms keep full relative precision when G holds nearly all the probability.
// The row is read from memory once; the later sweeps over it hit the L1 cache.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../checks.h"
#include "vec_math.h"

namespace detkit {
namespace cpu {
namespace {

constexpr const char* kOp = "detkit_cpu::group_softmax_forward";

template <typename T>
struct GroupRows {
  const T* logits;  // (rows, K + 1)
  const int64_t* targets;
  const int64_t* dataset_index;
  const int32_t* group_table;  // (D, K + 1), narrowed to int32 for 32-bit vector lanes
  int64_t num_columns;
  int64_t num_datasets;
  T* row_loss;   // (rows,)
  T* grad;       // (rows, K + 1) or null
  T grad_scale;  // multiplies the gradient (1 / avg_factor for a reduced loss)
  T* scratch;    // K + 1 per thread
};

DETKIT_ALWAYS_INLINE float exp_t(float x) { return exp_f32(x); }
DETKIT_ALWAYS_INLINE double exp_t(double x) { return std::exp(x); }

// Returns the first row whose target or dataset index is out of range, or -1.
template <typename T, bool kGrad>
DETKIT_ALWAYS_INLINE int64_t group_rows_impl(const GroupRows<T>& a, int64_t begin, int64_t end) {
  const int32_t cols = static_cast<int32_t>(a.num_columns);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T* DETKIT_RESTRICT member = a.scratch;  // 1 where the column is in G, else 0
  for (int64_t row = begin; row < end; ++row) {
    const int64_t target = a.targets[row];
    const T* DETKIT_RESTRICT z = a.logits + row * cols;
    T* DETKIT_RESTRICT grad = kGrad ? a.grad + row * cols : nullptr;
    if (target == -1) {  // ignored row
      a.row_loss[row] = T(0);
      if (kGrad) std::fill(grad, grad + cols, T(0));
      continue;
    }
    const int64_t dataset = a.dataset_index[row];
    if (target < -1 || target >= cols || dataset < 0 || dataset >= a.num_datasets) return row;
    const int32_t* DETKIT_RESTRICT gid = a.group_table + dataset * cols;
    const int32_t target_group = gid[target];

    T row_max = neg_inf;
    T group_max = neg_inf;
    DETKIT_PRAGMA(omp simd reduction(max : row_max, group_max))
    for (int32_t j = 0; j < cols; ++j) {
      const T in_group = gid[j] == target_group ? T(1) : T(0);
      member[j] = in_group;
      row_max = z[j] > row_max ? z[j] : row_max;
      const T zg = in_group != T(0) ? z[j] : neg_inf;
      group_max = zg > group_max ? zg : group_max;
    }
    // One exp per element: exp(z_j - max over G) in G, exp(z_j - max over the row) elsewhere;
    // inside G the row-relative value is that times exp(max over G - max over the row).
    const T group_to_row = exp_t(group_max - row_max);
    T sum = 0;
    T group_sum = 0;
    T outside_sum = 0;
    DETKIT_PRAGMA(omp simd reduction(+ : sum, group_sum, outside_sum))
    for (int32_t j = 0; j < cols; ++j) {
      const bool in_group = member[j] != T(0);
      const T shifted = exp_t(z[j] - (in_group ? group_max : row_max));
      sum += in_group ? shifted * group_to_row : shifted;
      group_sum += in_group ? shifted : T(0);
      outside_sum += in_group ? T(0) : shifted;
      if (kGrad) grad[j] = shifted;
    }
    // sum >= 1 and group_sum >= 1: each contains exp(0) from its own maximum.
    const T p_out = outside_sum / sum;
    a.row_loss[row] = p_out < T(0.5)
                          ? -std::log1p(-p_out)
                          : (row_max - group_max) + (std::log(sum) - std::log(group_sum));
    if (kGrad) {
      const T inv_sum = a.grad_scale / sum;
      const T member_scale = -p_out * a.grad_scale / group_sum;
      DETKIT_SIMD
      for (int32_t j = 0; j < cols; ++j) {
        grad[j] = grad[j] * (member[j] != T(0) ? member_scale : inv_sum);
      }
    }
  }
  return -1;
}

template <typename T>
DETKIT_ALWAYS_INLINE int64_t group_rows_dispatch(const GroupRows<T>& a, int64_t begin,
                                                 int64_t end) {
  return a.grad != nullptr ? group_rows_impl<T, true>(a, begin, end)
                           : group_rows_impl<T, false>(a, begin, end);
}

template <typename T>
struct GroupRowsKernel {
  static DETKIT_ALWAYS_INLINE int64_t run(const GroupRows<T>& a, int64_t begin, int64_t end) {
    return group_rows_dispatch(a, begin, end);
  }
};

int64_t group_rows(const GroupRows<float>& a, int64_t begin, int64_t end) {
  return run_for_active_isa<GroupRowsKernel<float>>(a, begin, end);
}

int64_t group_rows(const GroupRows<double>& a, int64_t begin, int64_t end) {
  return group_rows_dispatch(a, begin, end);
}

// float32 and float64 read and write the tensors directly; float16 and bfloat16 widen each row
// into a per-thread float32 buffer.
template <typename scalar_t, typename T>
int64_t group_forward_typed(const at::Tensor& logits, const at::Tensor& targets,
                            const at::Tensor& dataset_index, const int32_t* group_table,
                            int64_t num_datasets, T grad_scale, const at::Tensor& loss_out,
                            scalar_t* grad, int64_t grain) {
  constexpr bool kDirect = std::is_same<scalar_t, T>::value;
  const int64_t num_rows = logits.size(0);
  const int64_t cols = logits.size(1);
  const scalar_t* logits_data = logits.data_ptr<scalar_t>();
  std::atomic<int64_t> bad_row{-1};
  at::parallel_for(0, num_rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> buffer((kDirect ? 1 : 3) * cols);
    const int64_t* target_data = targets.data_ptr<int64_t>();
    const int64_t* dataset_data = dataset_index.data_ptr<int64_t>();
    T* loss_data = loss_out.data_ptr<T>();
    GroupRows<T> a{nullptr,   target_data, dataset_data, group_table, cols, num_datasets,
                   loss_data, nullptr,     grad_scale,   buffer.data()};
    if constexpr (kDirect) {
      a.logits = logits_data;
      a.grad = grad;
      const int64_t bad = group_rows(a, begin, end);
      if (bad >= 0) bad_row.store(bad);
    } else {
      T* row = buffer.data() + cols;
      T* row_grad = row + cols;
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t j = 0; j < cols; ++j) row[j] = static_cast<T>(logits_data[r * cols + j]);
        // The widened row as a one-row matrix.
        a.logits = row;
        a.targets = target_data + r;
        a.dataset_index = dataset_data + r;
        a.row_loss = loss_data + r;
        a.grad = grad != nullptr ? row_grad : nullptr;
        if (group_rows(a, 0, 1) >= 0) {
          bad_row.store(r);
          return;
        }
        if (grad != nullptr) {
          for (int64_t j = 0; j < cols; ++j) grad[r * cols + j] = scalar_t(row_grad[j]);
        }
      }
    }
  });
  return bad_row.load();
}

void group_softmax_forward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                               const at::Tensor& dataset_index, const at::Tensor& group_table,
                               const at::Tensor& loss_out,
                               const std::optional<at::Tensor>& grad_out,
                               const std::optional<at::Tensor>& grad_scale) {
  check_logits(logits, kOp);
  const int64_t num_rows = logits.size(0);
  const int64_t cols = logits.size(1);
  const auto device = logits.device();
  TORCH_CHECK(cols >= 1, kOp, ": logits need at least one column (the background)");
  check_rows(targets, kOp, "targets", num_rows, device);
  check_dtype(targets, kOp, "targets", at::kLong);
  check_rows(dataset_index, kOp, "dataset_index", num_rows, device);
  check_dtype(dataset_index, kOp, "dataset_index", at::kLong);
  check_tensor(group_table, kOp, "group_table", 2, device);
  check_dtype(group_table, kOp, "group_table", at::kLong);
  TORCH_CHECK(group_table.size(1) == cols && group_table.size(0) >= 1, kOp,
              ": group_table must have shape (D >= 1, ", cols, "), got ", group_table.sizes());
  TORCH_CHECK(cols < (int64_t(1) << 31), kOp, ": at most 2^31 - 1 columns, got ", cols);
  // Group ids only need to compare equal: the kernels read them as int32.
  std::vector<int32_t> table32(group_table.numel());
  const int64_t* table_data = group_table.data_ptr<int64_t>();
  for (size_t i = 0; i < table32.size(); ++i) {
    TORCH_CHECK(table_data[i] >= INT32_MIN && table_data[i] <= INT32_MAX, kOp,
                ": group ids must fit in int32, got ", table_data[i]);
    table32[i] = static_cast<int32_t>(table_data[i]);
  }
  check_rows(loss_out, kOp, "loss_out", num_rows, device);
  check_dtype(loss_out, kOp, "loss_out", accumulate_type(logits.scalar_type()));
  check_grad_out(grad_out, logits, kOp);
  const bool has_grad = grad_out.has_value() && grad_out->defined();
  const double scale = read_grad_scale(grad_scale, accumulate_type(logits.scalar_type()), kOp);
  if (num_rows == 0) return;

  const int64_t grain = std::max<int64_t>(1, 16384 / cols);
  int64_t bad_row = -1;
  switch (logits.scalar_type()) {
    case at::kFloat:
      bad_row = group_forward_typed<float, float>(
          logits, targets, dataset_index, table32.data(), group_table.size(0), scale, loss_out,
          has_grad ? grad_out->data_ptr<float>() : nullptr, grain);
      break;
    case at::kDouble:
      bad_row = group_forward_typed<double, double>(
          logits, targets, dataset_index, table32.data(), group_table.size(0), scale, loss_out,
          has_grad ? grad_out->data_ptr<double>() : nullptr, grain);
      break;
    case at::kHalf:
      bad_row = group_forward_typed<c10::Half, float>(
          logits, targets, dataset_index, table32.data(), group_table.size(0), scale, loss_out,
          has_grad ? grad_out->data_ptr<c10::Half>() : nullptr, grain);
      break;
    case at::kBFloat16:
      bad_row = group_forward_typed<c10::BFloat16, float>(
          logits, targets, dataset_index, table32.data(), group_table.size(0), scale, loss_out,
          has_grad ? grad_out->data_ptr<c10::BFloat16>() : nullptr, grain);
      break;
    default:
      TORCH_CHECK(false, kOp, ": unsupported dtype ", logits.scalar_type());
  }
  if (bad_row >= 0) {
    TORCH_CHECK_VALUE(false, kOp, ": row ", bad_row, " has target ",
                targets.data_ptr<int64_t>()[bad_row], " (must lie in [-1, ", cols - 1,
                "]) and dataset index ", dataset_index.data_ptr<int64_t>()[bad_row],
                " (must lie in [0, ", group_table.size(0) - 1, "])");
  }
}

}  // namespace
}  // namespace cpu
}  // namespace detkit

TORCH_LIBRARY_IMPL(detkit_cpu, CPU, m) {
  m.impl("group_softmax_forward", &detkit::cpu::group_softmax_forward_cpu);
}
