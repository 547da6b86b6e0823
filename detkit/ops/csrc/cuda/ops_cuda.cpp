// detkit's CUDA operators (namespace torch.ops.detkit_cuda): argument checks, the current stream,
// and the launchers of focal_loss_cuda.cu and group_softmax_cuda.cu.
#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "../checks.h"
#include "kernels.h"

namespace detkit {
namespace cuda {
namespace {

DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "detkit_cuda: unsupported dtype ", t);
  }
}

// Enough resident blocks for a few waves over every multiprocessor of the current device.
int max_blocks(int threads_per_block_hint) {
  int device = 0;
  int multiprocessors = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  return multiprocessors * (2048 / threads_per_block_hint) * 4;
}

void check_launch(cudaError_t error, const char* op) {
  TORCH_CHECK(error == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(error),
              error == cudaErrorNoKernelImageForDevice
                  ? " (rebuild for this GPU: set TORCH_CUDA_ARCH_LIST and run "
                    "`python -m detkit.ops build`)"
                  : "");
}

void sigmoid_focal_loss_forward_cuda(const at::Tensor& logits, const at::Tensor& labels,
                                     const std::optional<at::Tensor>& weight, double gamma,
                                     double alpha, const at::Tensor& loss_out,
                                     const std::optional<at::Tensor>& grad_out,
                                     const std::optional<at::Tensor>& grad_scale) {
  constexpr const char* kOp = "detkit_cuda::sigmoid_focal_loss_forward";
  check_logits(logits, kOp);
  const auto device = logits.device();
  const int64_t num_rows = logits.size(0);
  const auto acc = accumulate_type(logits.scalar_type());
  TORCH_CHECK(logits.size(1) >= 1, kOp, ": logits need at least one class column");
  TORCH_CHECK(gamma >= 0 && alpha >= 0 && alpha <= 1, kOp,
              ": need gamma >= 0 and alpha in [0, 1], got gamma=", gamma, ", alpha=", alpha);
  check_rows(labels, kOp, "labels", num_rows, device);
  check_dtype(labels, kOp, "labels", at::kLong);
  const bool has_weight = weight.has_value() && weight->defined();
  if (has_weight) {
    check_rows(*weight, kOp, "weight", num_rows, device);
    check_dtype(*weight, kOp, "weight", acc);
  }
  const bool elementwise = loss_out.dim() == 2;
  if (elementwise) {
    check_tensor(loss_out, kOp, "loss_out", 2, device);
    check_dtype(loss_out, kOp, "loss_out", logits.scalar_type());
    TORCH_CHECK(loss_out.sizes() == logits.sizes(), kOp, ": loss_out must have shape ",
                logits.sizes(), ", got ", loss_out.sizes());
  } else {
    // Any number P >= 1 of partial sums: one per thread block, all written.
    check_tensor(loss_out, kOp, "loss_out", 1, device);
    check_dtype(loss_out, kOp, "loss_out", acc);
    TORCH_CHECK(loss_out.size(0) >= 1 && loss_out.size(0) <= (1 << 20), kOp,
                ": loss_out must hold 1 to 2^20 partial sums, got ", loss_out.size(0));
  }
  check_grad_out(grad_out, logits, kOp);
  const bool has_grad = grad_out.has_value() && grad_out->defined();

  const c10::cuda::CUDAGuard guard(device);
  FocalLossArgs args;
  args.logits = logits.data_ptr();
  args.labels = labels.data_ptr<int64_t>();
  args.weight = has_weight ? weight->data_ptr() : nullptr;
  args.num_rows = num_rows;
  args.num_classes = logits.size(1);
  args.gamma = gamma;
  args.alpha = alpha;
  args.loss = elementwise ? loss_out.data_ptr() : nullptr;
  args.partial_loss = elementwise ? nullptr : loss_out.data_ptr();
  args.num_partials = elementwise ? 0 : loss_out.size(0);
  args.grad = has_grad ? grad_out->data_ptr() : nullptr;
  args.grad_scale = grad_scale_pointer(grad_scale, acc, device, kOp);
  args.dtype = to_dtype(logits.scalar_type());
  args.max_blocks = max_blocks(256);
  check_launch(launch_sigmoid_focal_loss(args, c10::cuda::getCurrentCUDAStream()), kOp);
}

void group_softmax_forward_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                const at::Tensor& dataset_index, const at::Tensor& group_table,
                                const at::Tensor& loss_out,
                                const std::optional<at::Tensor>& grad_out,
                                const std::optional<at::Tensor>& grad_scale) {
  constexpr const char* kOp = "detkit_cuda::group_softmax_forward";
  check_logits(logits, kOp);
  const auto device = logits.device();
  const int64_t num_rows = logits.size(0);
  const int64_t cols = logits.size(1);
  TORCH_CHECK(cols >= 1, kOp, ": logits need at least one column (the background)");
  check_rows(targets, kOp, "targets", num_rows, device);
  check_dtype(targets, kOp, "targets", at::kLong);
  check_rows(dataset_index, kOp, "dataset_index", num_rows, device);
  check_dtype(dataset_index, kOp, "dataset_index", at::kLong);
  check_tensor(group_table, kOp, "group_table", 2, device);
  check_dtype(group_table, kOp, "group_table", at::kLong);
  TORCH_CHECK(group_table.size(1) == cols && group_table.size(0) >= 1, kOp,
              ": group_table must have shape (D >= 1, ", cols, "), got ", group_table.sizes());
  check_rows(loss_out, kOp, "loss_out", num_rows, device);
  check_dtype(loss_out, kOp, "loss_out", accumulate_type(logits.scalar_type()));
  check_grad_out(grad_out, logits, kOp);
  const bool has_grad = grad_out.has_value() && grad_out->defined();

  const c10::cuda::CUDAGuard guard(device);
  GroupSoftmaxArgs args;
  args.logits = logits.data_ptr();
  args.targets = targets.data_ptr<int64_t>();
  args.dataset_index = dataset_index.data_ptr<int64_t>();
  args.group_table = group_table.data_ptr<int64_t>();
  args.num_rows = num_rows;
  args.num_columns = cols;
  args.num_datasets = group_table.size(0);
  args.row_loss = loss_out.data_ptr();
  args.grad = has_grad ? grad_out->data_ptr() : nullptr;
  args.grad_scale =
      grad_scale_pointer(grad_scale, accumulate_type(logits.scalar_type()), device, kOp);
  args.dtype = to_dtype(logits.scalar_type());
  args.max_blocks = max_blocks(128);
  check_launch(launch_group_softmax(args, c10::cuda::getCurrentCUDAStream()), kOp);
}

}  // namespace
}  // namespace cuda
}  // namespace detkit

TORCH_LIBRARY(detkit_cuda, m) {
  // As detkit_cpu's, except that the summed focal loss comes as P >= 1 partial sums (one per
  // thread block) instead of one per row.
  m.def(
      "sigmoid_focal_loss_forward(Tensor logits, Tensor labels, Tensor? weight, float gamma, "
      "float alpha, Tensor(a!) loss_out, Tensor(b!)? grad_out, Tensor? grad_scale=None) -> ()");
  m.def(
      "group_softmax_forward(Tensor logits, Tensor targets, Tensor dataset_index, "
      "Tensor group_table, Tensor(a!) loss_out, Tensor(b!)? grad_out, "
      "Tensor? grad_scale=None) -> ()");
}

TORCH_LIBRARY_IMPL(detkit_cuda, CUDA, m) {
  m.impl("sigmoid_focal_loss_forward", &detkit::cuda::sigmoid_focal_loss_forward_cuda);
  m.impl("group_softmax_forward", &detkit::cuda::group_softmax_forward_cuda);
}
