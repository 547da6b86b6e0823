// Argument checks shared by the CPU and CUDA operator entry points.
//
// The Python wrappers in detkit/ops/*.py validate first and explain; these checks keep a direct
// call of torch.ops.detkit_* from reading or writing out of bounds.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace detkit {

inline void check_tensor(const at::Tensor& t, const char* op, const char* name, int64_t dim,
                         c10::Device device) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dimensions, got shape ",
              t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  TORCH_CHECK(t.device() == device, op, ": ", name, " is on ", t.device(), ", expected ",
              device);
}

inline void check_dtype(const at::Tensor& t, const char* op, const char* name,
                        at::ScalarType dtype) {
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
}

inline void check_logits(const at::Tensor& logits, const char* op) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must have shape (N, C), got ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": logits must be float32, float64, float16 or bfloat16, got ", dtype);
  check_tensor(logits, op, "logits", 2, logits.device());
}

// float32 accumulation for the half types and float32, float64 for float64.
inline at::ScalarType accumulate_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_grad_out(const std::optional<at::Tensor>& grad_out, const at::Tensor& logits,
                           const char* op) {
  if (!grad_out.has_value() || !grad_out->defined()) return;
  check_tensor(*grad_out, op, "grad_out", 2, logits.device());
  check_dtype(*grad_out, op, "grad_out", logits.scalar_type());
  TORCH_CHECK(grad_out->sizes() == logits.sizes(), op, ": grad_out must have shape ",
              logits.sizes(), ", got ", grad_out->sizes());
}

inline void check_rows(const at::Tensor& t, const char* op, const char* name, int64_t rows,
                       c10::Device device) {
  check_tensor(t, op, name, 1, device);
  TORCH_CHECK(t.size(0) == rows, op, ": ", name, " must have shape (", rows, ",), got ",
              t.sizes());
}

// The value of the optional 0-d gradient factor of a CPU kernel (1 when absent).
inline double read_grad_scale(const std::optional<at::Tensor>& grad_scale, at::ScalarType acc,
                              const char* op) {
  if (!grad_scale.has_value() || !grad_scale->defined()) return 1.0;
  TORCH_CHECK(grad_scale->numel() == 1 && grad_scale->is_cpu(), op,
              ": grad_scale must be a one-element CPU tensor, got shape ", grad_scale->sizes(),
              " on ", grad_scale->device());
  check_dtype(*grad_scale, op, "grad_scale", acc);
  return acc == at::kDouble ? *grad_scale->data_ptr<double>() : *grad_scale->data_ptr<float>();
}

// Device pointer of the optional one-element gradient factor of a CUDA kernel (null when absent).
inline const void* grad_scale_pointer(const std::optional<at::Tensor>& grad_scale,
                                      at::ScalarType acc, c10::Device device, const char* op) {
  if (!grad_scale.has_value() || !grad_scale->defined()) return nullptr;
  TORCH_CHECK(grad_scale->numel() == 1 && grad_scale->device() == device, op,
              ": grad_scale must be a one-element tensor on ", device, ", got shape ",
              grad_scale->sizes(), " on ", grad_scale->device());
  check_dtype(*grad_scale, op, "grad_scale", acc);
  return grad_scale->data_ptr();
}

}  // namespace detkit
