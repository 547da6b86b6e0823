// Launchers of detkit's CUDA kernels, in plain C++ types so that the .cu files need no ATen
// headers (fast nvcc builds) and ops_cuda.cpp, compiled by the host compiler, does the tensor work.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace detkit {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Sigmoid focal loss over (N, C) logits. Pointers are device pointers; "acc" is float32 (float64
// for float64 logits).
struct FocalLossArgs {
  const void* logits;     // (N, C) in dtype
  const int64_t* labels;  // (N,) in [-1, C]; out of range -> NaN loss and gradient
  const void* weight;     // (N,) acc, or null
  int64_t num_rows;
  int64_t num_classes;
  double gamma;
  double alpha;
  void* loss;           // (N, C) in dtype, or null
  void* partial_loss;   // (num_partials,) acc partial sums, or null
  int64_t num_partials; // blocks launched when partial_loss is set (their sums cover the loss)
  void* grad;           // (N, C) in dtype, or null
  const void* grad_scale;  // one acc value multiplying the gradient, or null (1)
  DType dtype;
  int max_blocks;       // grid cap for the elementwise mode (a few waves of the GPU)
};

cudaError_t launch_sigmoid_focal_loss(const FocalLossArgs& args, cudaStream_t stream);

// GroupSoftmax cross entropy over (N, K + 1) logits.
struct GroupSoftmaxArgs {
  const void* logits;            // (N, K + 1) in dtype
  const int64_t* targets;        // (N,) in [-1, K]; out of range -> NaN loss and gradient
  const int64_t* dataset_index;  // (N,) in [0, D)
  const int64_t* group_table;    // (D, K + 1)
  int64_t num_rows;
  int64_t num_columns;
  int64_t num_datasets;
  void* row_loss;  // (N,) acc
  void* grad;      // (N, K + 1) in dtype, or null
  const void* grad_scale;  // one acc value multiplying the gradient, or null (1)
  DType dtype;
  int max_blocks;  // grid cap (a few waves of the GPU)
};

cudaError_t launch_group_softmax(const GroupSoftmaxArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace detkit
