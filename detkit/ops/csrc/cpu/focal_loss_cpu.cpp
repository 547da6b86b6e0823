// Sigmoid focal loss on the CPU: loss and gradient in one pass over the logits.
//
// Per element, with s = x for the row's target class and s = -x for every other class
// (so that p_t = sigmoid(s)), a_t = alpha or 1 - alpha, and w the row weight:
//   loss    = w a_t (1 - p_t)^gamma softplus(-s)                       (softplus(-s) = -log p_t)
//   dloss/dx = -/+ w a_t (1 - p_t)^gamma (gamma p_t softplus(-s) + 1 - p_t)   (- target, + other)
// Everything is computed from e = exp(-|s|), which never overflows, so logits of any magnitude
// give finite values.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <type_traits>
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

constexpr const char* kOp = "detkit_cpu::sigmoid_focal_loss_forward";

// Rows of one call, in the accumulate type T (float or double). Exactly one of loss and row_loss
// is set; grad may be null (no gradient wanted).
template <typename T>
struct FocalRows {
  const T* logits;
  const int64_t* labels;
  const T* weight;  // (rows,) or null
  int64_t num_classes;
  T gamma;
  T alpha;
  T grad_scale;  // multiplies the gradient (1 / avg_factor for a reduced loss)
  T* loss;      // (rows, C) or null
  T* row_loss;  // (rows,) or null
  T* grad;      // (rows, C) or null
};

DETKIT_ALWAYS_INLINE float exp_t(float x) { return exp_f32(x); }
DETKIT_ALWAYS_INLINE double exp_t(double x) { return std::exp(x); }
DETKIT_ALWAYS_INLINE float log1p_unit_t(float x) { return log1p_unit_f32(x); }
DETKIT_ALWAYS_INLINE double log1p_unit_t(double x) { return std::log1p(x); }

// kGammaMode: 0 for gamma == 0, 2 for gamma == 2 (a square instead of an exp), 1 otherwise.
// Returns the first row whose label lies outside [-1, C], or -1.
template <typename T, int kGammaMode, bool kElementwise, bool kGrad>
DETKIT_ALWAYS_INLINE int64_t focal_rows_impl(const FocalRows<T>& a, int64_t begin, int64_t end) {
  const int64_t num_classes = a.num_classes;
  const int32_t columns = static_cast<int32_t>(num_classes);  // 32-bit lanes vectorise better
  const T gamma = a.gamma;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t label = a.labels[row];
    const T* DETKIT_RESTRICT x = a.logits + row * num_classes;
    T* DETKIT_RESTRICT loss = kElementwise ? a.loss + row * num_classes : nullptr;
    T* DETKIT_RESTRICT grad = kGrad ? a.grad + row * num_classes : nullptr;
    if (label < -1 || label > num_classes) return row;
    if (label == -1) {  // ignored row: zero loss and gradient
      if (kElementwise) std::fill(loss, loss + num_classes, T(0));
      if (!kElementwise) a.row_loss[row] = T(0);
      if (kGrad) std::fill(grad, grad + num_classes, T(0));
      continue;
    }
    const T w = a.weight != nullptr ? a.weight[row] : T(1);
    const T positive_scale = w * a.alpha;
    const T negative_scale = w * (T(1) - a.alpha);
    const T positive_grad_scale = positive_scale * a.grad_scale;
    const T negative_grad_scale = negative_scale * a.grad_scale;
    const int32_t target = static_cast<int32_t>(label);  // C (background) matches no column
    T total = 0;
    DETKIT_SIMD_REDUCE(+, total)
    for (int32_t j = 0; j < columns; ++j) {
      const bool positive = j == target;
      const T s = positive ? x[j] : -x[j];
      const T e = exp_t(-std::fabs(s));
      const T inv = T(1) / (T(1) + e);
      const T p_t = s >= T(0) ? inv : e * inv;
      const T one_minus_p_t = s >= T(0) ? e * inv : inv;
      const T log1p_e = log1p_unit_t(e);
      const T nll = (s < T(0) ? -s : T(0)) + log1p_e;  // -log p_t = softplus(-s)
      T focus;
      if (kGammaMode == 0) {
        focus = T(1);
      } else if (kGammaMode == 2) {
        focus = one_minus_p_t * one_minus_p_t;
      } else {  // (1 - p_t)^gamma = exp(-gamma softplus(s))
        focus = exp_t(-gamma * ((s > T(0) ? s : T(0)) + log1p_e));
      }
      const T scale = positive ? positive_scale : negative_scale;
      const T value = scale * focus * nll;
      total += value;
      if (kElementwise) loss[j] = value;
      if (kGrad) {
        const T grad_scale = positive ? positive_grad_scale : negative_grad_scale;
        const T d_ds = -grad_scale * focus * (gamma * p_t * nll + one_minus_p_t);
        grad[j] = positive ? d_ds : -d_ds;
      }
    }
    if (!kElementwise) a.row_loss[row] = total;
  }
  return -1;
}

template <typename T>
DETKIT_ALWAYS_INLINE int64_t focal_rows_dispatch(const FocalRows<T>& a, int64_t begin,
                                                 int64_t end) {
  const int mode = a.gamma == T(0) ? 0 : (a.gamma == T(2) ? 2 : 1);
  const bool elementwise = a.loss != nullptr;
  const bool grad = a.grad != nullptr;
#define DETKIT_FOCAL_CASE(MODE)                                                     \
  if (mode == MODE) {                                                               \
    if (elementwise) {                                                              \
      return grad ? focal_rows_impl<T, MODE, true, true>(a, begin, end)             \
                  : focal_rows_impl<T, MODE, true, false>(a, begin, end);           \
    }                                                                               \
    return grad ? focal_rows_impl<T, MODE, false, true>(a, begin, end)              \
                : focal_rows_impl<T, MODE, false, false>(a, begin, end);            \
  }
  DETKIT_FOCAL_CASE(0)
  DETKIT_FOCAL_CASE(2)
  DETKIT_FOCAL_CASE(1)
#undef DETKIT_FOCAL_CASE
  return -1;
}

template <typename T>
struct FocalRowsKernel {
  static DETKIT_ALWAYS_INLINE int64_t run(const FocalRows<T>& a, int64_t begin, int64_t end) {
    return focal_rows_dispatch(a, begin, end);
  }
};

int64_t focal_rows(const FocalRows<float>& a, int64_t begin, int64_t end) {
  return run_for_active_isa<FocalRowsKernel<float>>(a, begin, end);
}

int64_t focal_rows(const FocalRows<double>& a, int64_t begin, int64_t end) {
  return focal_rows_dispatch(a, begin, end);
}

// float32 and float64: the kernel reads and writes the tensors directly.
template <typename T>
int64_t focal_forward_direct(const at::Tensor& logits, const at::Tensor& labels,
                             const T* weight, T gamma, T alpha, T grad_scale,
                             const at::Tensor& loss_out, T* grad, int64_t grain) {
  const int64_t num_rows = logits.size(0);
  const bool elementwise = loss_out.dim() == 2;
  FocalRows<T> a{logits.data_ptr<T>(),
                 labels.data_ptr<int64_t>(),
                 weight,
                 logits.size(1),
                 gamma,
                 alpha,
                 grad_scale,
                 elementwise ? loss_out.data_ptr<T>() : nullptr,
                 elementwise ? nullptr : loss_out.data_ptr<T>(),
                 grad};
  std::atomic<int64_t> bad_row{-1};
  at::parallel_for(0, num_rows, grain, [&](int64_t begin, int64_t end) {
    const int64_t bad = focal_rows(a, begin, end);
    if (bad >= 0) bad_row.store(bad);
  });
  return bad_row.load();
}

// float16 and bfloat16: blocks of rows are widened to float32 in a per-thread buffer.
template <typename scalar_t>
int64_t focal_forward_widened(const at::Tensor& logits, const at::Tensor& labels,
                              const float* weight, float gamma, float alpha, float grad_scale,
                              const at::Tensor& loss_out, scalar_t* grad, int64_t grain) {
  const int64_t num_rows = logits.size(0);
  const int64_t num_classes = logits.size(1);
  const bool elementwise = loss_out.dim() == 2;
  const scalar_t* logits_data = logits.data_ptr<scalar_t>();
  const int64_t* label_data = labels.data_ptr<int64_t>();
  scalar_t* loss_elements = elementwise ? loss_out.data_ptr<scalar_t>() : nullptr;
  float* row_loss = elementwise ? nullptr : loss_out.data_ptr<float>();
  const int64_t block_rows = std::max<int64_t>(1, 4096 / num_classes);
  std::atomic<int64_t> bad_row{-1};
  at::parallel_for(0, num_rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(3 * block_rows * num_classes);
    for (int64_t first = begin; first < end; first += block_rows) {
      const int64_t rows = std::min(block_rows, end - first);
      const int64_t count = rows * num_classes;
      const int64_t offset = first * num_classes;
      float* x = buffer.data();
      float* loss = x + count;
      float* g = loss + count;
      for (int64_t i = 0; i < count; ++i) x[i] = static_cast<float>(logits_data[offset + i]);
      FocalRows<float> a{x,
                         label_data + first,
                         weight != nullptr ? weight + first : nullptr,
                         num_classes,
                         gamma,
                         alpha,
                         grad_scale,
                         elementwise ? loss : nullptr,
                         elementwise ? nullptr : row_loss + first,
                         grad != nullptr ? g : nullptr};
      const int64_t bad = focal_rows(a, 0, rows);
      if (bad >= 0) {
        bad_row.store(first + bad);
        return;
      }
      if (elementwise) {
        for (int64_t i = 0; i < count; ++i) loss_elements[offset + i] = scalar_t(loss[i]);
      }
      if (grad != nullptr) {
        for (int64_t i = 0; i < count; ++i) grad[offset + i] = scalar_t(g[i]);
      }
    }
  });
  return bad_row.load();
}

void sigmoid_focal_loss_forward_cpu(const at::Tensor& logits, const at::Tensor& labels,
                                    const std::optional<at::Tensor>& weight, double gamma,
                                    double alpha, const at::Tensor& loss_out,
                                    const std::optional<at::Tensor>& grad_out,
                                    const std::optional<at::Tensor>& grad_scale) {
  check_logits(logits, kOp);
  const int64_t num_rows = logits.size(0);
  const int64_t num_classes = logits.size(1);
  const auto device = logits.device();
  const auto acc = accumulate_type(logits.scalar_type());
  TORCH_CHECK(num_classes >= 1 && num_classes < (int64_t(1) << 31), kOp,
              ": logits need 1 to 2^31 - 1 class columns, got ", num_classes);
  TORCH_CHECK(gamma >= 0 && alpha >= 0 && alpha <= 1, kOp,
              ": need gamma >= 0 and alpha in [0, 1], got gamma=", gamma, ", alpha=", alpha);
  check_rows(labels, kOp, "labels", num_rows, device);
  check_dtype(labels, kOp, "labels", at::kLong);
  const bool has_weight = weight.has_value() && weight->defined();
  if (has_weight) {
    check_rows(*weight, kOp, "weight", num_rows, device);
    check_dtype(*weight, kOp, "weight", acc);
  }
  if (loss_out.dim() == 2) {
    check_tensor(loss_out, kOp, "loss_out", 2, device);
    check_dtype(loss_out, kOp, "loss_out", logits.scalar_type());
    TORCH_CHECK(loss_out.sizes() == logits.sizes(), kOp, ": loss_out must have shape ",
                logits.sizes(), ", got ", loss_out.sizes());
  } else {
    check_rows(loss_out, kOp, "loss_out", num_rows, device);
    check_dtype(loss_out, kOp, "loss_out", acc);
  }
  check_grad_out(grad_out, logits, kOp);
  const bool has_grad = grad_out.has_value() && grad_out->defined();
  const double scale = read_grad_scale(grad_scale, acc, kOp);
  if (num_rows == 0) return;

  // About 16k elements per task: large enough to amortise scheduling, small enough to balance.
  const int64_t grain = std::max<int64_t>(1, 16384 / num_classes);
  int64_t bad_row = -1;
  switch (logits.scalar_type()) {
    case at::kFloat:
      bad_row = focal_forward_direct<float>(
          logits, labels, has_weight ? weight->data_ptr<float>() : nullptr,
          static_cast<float>(gamma), static_cast<float>(alpha), static_cast<float>(scale),
          loss_out, has_grad ? grad_out->data_ptr<float>() : nullptr, grain);
      break;
    case at::kDouble:
      bad_row = focal_forward_direct<double>(
          logits, labels, has_weight ? weight->data_ptr<double>() : nullptr, gamma, alpha, scale,
          loss_out, has_grad ? grad_out->data_ptr<double>() : nullptr, grain);
      break;
    case at::kHalf:
      bad_row = focal_forward_widened<c10::Half>(
          logits, labels, has_weight ? weight->data_ptr<float>() : nullptr,
          static_cast<float>(gamma), static_cast<float>(alpha), static_cast<float>(scale),
          loss_out, has_grad ? grad_out->data_ptr<c10::Half>() : nullptr, grain);
      break;
    case at::kBFloat16:
      bad_row = focal_forward_widened<c10::BFloat16>(
          logits, labels, has_weight ? weight->data_ptr<float>() : nullptr,
          static_cast<float>(gamma), static_cast<float>(alpha), static_cast<float>(scale),
          loss_out, has_grad ? grad_out->data_ptr<c10::BFloat16>() : nullptr, grain);
      break;
    default:
      TORCH_CHECK(false, kOp, ": unsupported dtype ", logits.scalar_type());
  }
  TORCH_CHECK_VALUE(bad_row < 0, kOp, ": labels must lie in [-1, ", num_classes, "] (-1 ignored, ",
              num_classes, " background); row ", bad_row, " has ",
              bad_row >= 0 ? labels.data_ptr<int64_t>()[bad_row] : 0);
}

}  // namespace
}  // namespace cpu
}  // namespace detkit

TORCH_LIBRARY_IMPL(detkit_cpu, CPU, m) {
  m.impl("sigmoid_focal_loss_forward", &detkit::cpu::sigmoid_focal_loss_forward_cpu);
}
