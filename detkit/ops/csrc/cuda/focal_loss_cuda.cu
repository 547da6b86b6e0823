// Sigmoid focal loss on CUDA: a grid-stride elementwise kernel that writes the loss (or per-block
// partial sums of it) and the gradient in one pass over the logits.
//
// The formulas are those of csrc/cpu/focal_loss_cpu.cpp: with s = +x for the target class and -x
// otherwise, e = exp(-|s|), p_t = sigmoid(s):
//   loss     = w a_t (1 - p_t)^gamma softplus(-s)
//   dloss/dx = -/+ w a_t (1 - p_t)^gamma (gamma p_t softplus(-s) + 1 - p_t)
// When C is a multiple of the pack size (16 bytes of logits) and the buffers are aligned, each
// thread moves whole packs, which never straddle two rows.
#include "cuda_common.cuh"
#include "kernels.h"

namespace detkit {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Loss and gradient of one element, in the accumulate type A.
template <typename A>
__device__ __forceinline__ void focal_element(A x, bool positive, A gamma, int gamma_mode,
                                              A positive_scale, A negative_scale, A* loss,
                                              A* grad) {
  const A s = positive ? x : -x;
  const A e = exp_acc(-fabs(s));
  const A inv = A(1) / (A(1) + e);
  const A p_t = s >= A(0) ? inv : e * inv;
  const A one_minus_p_t = s >= A(0) ? e * inv : inv;
  const A log1p_e = log1p_acc(e);
  const A nll = (s < A(0) ? -s : A(0)) + log1p_e;  // -log p_t
  A focus;
  if (gamma_mode == 0) {
    focus = A(1);
  } else if (gamma_mode == 2) {
    focus = one_minus_p_t * one_minus_p_t;
  } else {
    focus = exp_acc(-gamma * ((s > A(0) ? s : A(0)) + log1p_e));
  }
  const A scale = positive ? positive_scale : negative_scale;
  *loss = scale * focus * nll;
  const A d_ds = -scale * focus * (gamma * p_t * nll + one_minus_p_t);
  *grad = positive ? d_ds : -d_ds;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    sigmoid_focal_loss_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                              const typename Acc<T>::type* __restrict__ weight, int64_t num_rows,
                              int64_t num_classes, typename Acc<T>::type gamma, int gamma_mode,
                              typename Acc<T>::type alpha, T* __restrict__ loss,
                              typename Acc<T>::type* __restrict__ partial_loss,
                              T* __restrict__ grad,
                              const typename Acc<T>::type* __restrict__ grad_scale) {
  using A = typename Acc<T>::type;
  __shared__ A shared[32];
  const A grad_factor = grad_scale != nullptr ? __ldg(grad_scale) : A(1);
  const int64_t num_packs = num_rows * num_classes / kVec;
  A total = 0;
  for (int64_t pack = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       pack < num_packs; pack += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t first = pack * kVec;
    const int64_t row = first / num_classes;
    const int64_t column = first - row * num_classes;
    const int64_t label = __ldg(labels + row);
    const Pack<T, kVec> x = *reinterpret_cast<const Pack<T, kVec>*>(logits + first);
    const A w = weight != nullptr ? __ldg(weight + row) : A(1);
    const A positive_scale = w * alpha;
    const A negative_scale = w * (A(1) - alpha);
    const bool ignored = label == -1;
    const bool invalid = label < -1 || label > num_classes;
    Pack<T, kVec> loss_pack;
    Pack<T, kVec> grad_pack;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      A value;
      A d;
      focal_element<A>(to_acc(x.v[k]), column + k == label, gamma, gamma_mode, positive_scale,
                       negative_scale, &value, &d);
      d *= grad_factor;
      if (ignored) value = d = A(0);
      if (invalid) value = d = quiet_nan<A>();
      total += value;
      loss_pack.v[k] = from_acc<T>(value);
      grad_pack.v[k] = from_acc<T>(d);
    }
    if (loss != nullptr) *reinterpret_cast<Pack<T, kVec>*>(loss + first) = loss_pack;
    if (grad != nullptr) *reinterpret_cast<Pack<T, kVec>*>(grad + first) = grad_pack;
  }
  if (partial_loss != nullptr) {
    A values[1] = {total};
    block_allreduce<1>(values, SumOp(), shared);
    if (threadIdx.x == 0) partial_loss[blockIdx.x] = values[0];
  }
}

template <typename T>
cudaError_t launch_typed(const FocalLossArgs& a, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  constexpr int kVec = 16 / sizeof(T);
  const int64_t numel = a.num_rows * a.num_classes;
  const bool vectorised = a.num_classes % kVec == 0 && pack_aligned<T, kVec>(a.logits) &&
                          pack_aligned<T, kVec>(a.loss) && pack_aligned<T, kVec>(a.grad);
  const int vec = vectorised ? kVec : 1;
  int64_t blocks;
  if (a.partial_loss != nullptr) {
    blocks = a.num_partials;  // every block writes its partial sum, even with nothing to do
  } else {
    blocks = (numel / vec + kThreads - 1) / kThreads;
    blocks = blocks < a.max_blocks ? blocks : a.max_blocks;
  }
  if (blocks <= 0) return cudaSuccess;
  const int gamma_mode = a.gamma == 0.0 ? 0 : (a.gamma == 2.0 ? 2 : 1);
  const T* logits = static_cast<const T*>(a.logits);
  const A* weight = static_cast<const A*>(a.weight);
  T* loss = static_cast<T*>(a.loss);
  A* partial = static_cast<A*>(a.partial_loss);
  T* grad = static_cast<T*>(a.grad);
  const A* grad_scale = static_cast<const A*>(a.grad_scale);
  if (vectorised) {
    sigmoid_focal_loss_kernel<T, kVec><<<blocks, kThreads, 0, stream>>>(
        logits, a.labels, weight, a.num_rows, a.num_classes, A(a.gamma), gamma_mode,
        A(a.alpha), loss, partial, grad, grad_scale);
  } else {
    sigmoid_focal_loss_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(
        logits, a.labels, weight, a.num_rows, a.num_classes, A(a.gamma), gamma_mode,
        A(a.alpha), loss, partial, grad, grad_scale);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sigmoid_focal_loss(const FocalLossArgs& args, cudaStream_t stream) {
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
