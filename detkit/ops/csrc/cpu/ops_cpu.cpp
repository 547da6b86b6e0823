// Schemas of detkit's CPU operators (namespace torch.ops.detkit_cpu) and the CPU feature dispatch.
//
// The kernels live in focal_loss_cpu.cpp, group_softmax_cpu.cpp and roi_align_cpu.cpp. Every
// kernel writes into output tensors that the caller allocates, so that tests can hand in outputs
// filled with NaN and catch any element a kernel forgets to write.
#include <atomic>
#include <cstdlib>
#include <string>

#include <c10/util/Exception.h>
#include <torch/library.h>

#include "vec_math.h"

namespace detkit {
namespace cpu {

CpuIsa detect_cpu_isa() {
#if DETKIT_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return CpuIsa::kAvx2;
  }
#endif
  return CpuIsa::kBaseline;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    default:
      return "baseline";
  }
}

namespace {

CpuIsa parse_cpu_isa(const std::string& name) {
  if (name == "avx512") return CpuIsa::kAvx512;
  if (name == "avx2") return CpuIsa::kAvx2;
  if (name == "baseline") return CpuIsa::kBaseline;
  TORCH_CHECK(false, "detkit_cpu: unknown CPU instruction set '", name,
              "'; expected one of 'baseline', 'avx2', 'avx512'");
}

CpuIsa cap_to_cpu(CpuIsa requested) {
  const CpuIsa best = detect_cpu_isa();
  return static_cast<int>(requested) < static_cast<int>(best) ? requested : best;
}

// The level in use; DETKIT_OPS_CPU_ISA lowers the starting level (e.g. to test the baseline code).
std::atomic<int> g_active_isa{[] {
  const char* env = std::getenv("DETKIT_OPS_CPU_ISA");
  CpuIsa isa = detect_cpu_isa();
  if (env != nullptr && *env != '\0') isa = cap_to_cpu(parse_cpu_isa(env));
  return static_cast<int>(isa);
}()};

std::string cpu_isa_op() { return cpu_isa_name(active_cpu_isa()); }

// "openmp" when at::parallel_for in these kernels can use more than one thread (the library was
// compiled with OpenMP), "serial" when every kernel runs on the calling thread.
std::string parallel_backend_op() {
#ifdef _OPENMP
  return "openmp";
#else
  return "serial";
#endif
}

std::string set_cpu_isa_op(c10::string_view name) {
  return cpu_isa_name(set_cpu_isa(parse_cpu_isa(std::string(name))));
}

}  // namespace

CpuIsa active_cpu_isa() { return static_cast<CpuIsa>(g_active_isa.load()); }

CpuIsa set_cpu_isa(CpuIsa requested) {
  const CpuIsa isa = cap_to_cpu(requested);
  g_active_isa.store(static_cast<int>(isa));
  return isa;
}

}  // namespace cpu
}  // namespace detkit

TORCH_LIBRARY(detkit_cpu, m) {
  // loss_out: (N, C) elementwise loss in the dtype of logits, or (N,) per-row sums in float32
  // (float64 for float64 logits). grad_out: (N, C) like logits, or None when no grad is needed.
  // grad_scale: one-element float32 (float64) tensor multiplying the gradient, or None (1).
  m.def(
      "sigmoid_focal_loss_forward(Tensor logits, Tensor labels, Tensor? weight, float gamma, "
      "float alpha, Tensor(a!) loss_out, Tensor(b!)? grad_out, Tensor? grad_scale=None) -> ()");
  // loss_out: (N,) per-row loss in float32 (float64 for float64 logits); the rest as above.
  m.def(
      "group_softmax_forward(Tensor logits, Tensor targets, Tensor dataset_index, "
      "Tensor group_table, Tensor(a!) loss_out, Tensor(b!)? grad_out, "
      "Tensor? grad_scale=None) -> ()");
  // Multi-level RoIAlign (roi_align_cpu.cpp). feats: one (B, C, H_l, W_l) map per level, all
  // float32, all float64 or (forward only) all bfloat16; rois: (R, 5) (batch_index, x1, y1, x2,
  // y2) in image pixels, the dtype of feats (float32 for bfloat16 feats); levels: (R,) int64
  // level of each RoI; spatial_scales: one per level; out: (R, C, output_size, output_size),
  // the dtype of feats.
  m.def(
      "multi_level_roi_align_forward(Tensor[] feats, Tensor rois, Tensor levels, "
      "float[] spatial_scales, int output_size, int sampling_ratio, bool aligned, "
      "Tensor(a!) out) -> ()");
  // grad_feats: one (B, C, H_l, W_l) tensor per level, fully written (zero where nothing is
  // sampled); the output size is read from grad_output (R, C, S, S).
  m.def(
      "multi_level_roi_align_backward(Tensor grad_output, Tensor rois, Tensor levels, "
      "float[] spatial_scales, int sampling_ratio, bool aligned, "
      "Tensor(a!)[] grad_feats) -> ()");
  m.def("cpu_isa() -> str", &detkit::cpu::cpu_isa_op);
  m.def("set_cpu_isa(str isa) -> str", &detkit::cpu::set_cpu_isa_op);
  m.def("parallel_backend() -> str", &detkit::cpu::parallel_backend_op);
}
