// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see parallel_linear.h).
#include "nn/parallel_linear.h"

#include <cstddef>

#include "dist/communicator.h"
#include "nn/matmul.h"
#include "nn/typed.h"

namespace chorus::nn {

namespace cpu = chorus::backend::cpu;

namespace {
bool is_parallel(const dist::Communicator* tp) { return tp != nullptr && tp->size() > 1; }
}  // namespace

template <typename T>
void column_parallel_forward(T* out, const T* inp, const T* weight, const Same<T>* bias, int N, int C, int OC_local) {
  // Megatron's "copy to tensor-parallel region": identity in forward.
  matmul_forward(out, inp, weight, bias, N, C, OC_local);
}

template <typename T>
void column_parallel_backward(Same<T>* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                              int N, int C, int OC_local, dist::Communicator* tp) {
  if (!is_parallel(tp) || dinp == nullptr) {
    matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC_local);
    return;
  }
  // Backward of the copy: every rank's partial input gradient, summed in fp32.
  const size_t n = static_cast<size_t>(N) * static_cast<size_t>(C);
  float* acc = f32_accumulator(dinp, n, cpu::kScratchAcc);
  matmul_backward_f32(acc, dweight, dbias, dout, inp, weight, N, C, OC_local);
  tp->all_reduce(acc, n, dist::ReduceOp::sum);
  commit(dinp, acc, n);
}

template <typename T>
void row_parallel_forward(T* out, const T* inp, const T* weight, const Same<T>* bias, int N, int C_local,
                          int OC, const Same<T>* residual, dist::Communicator* tp) {
  if (!is_parallel(tp)) {
    matmul_forward(out, inp, weight, bias, N, C_local, OC, residual);
    return;
  }
  // "Reduce from tensor-parallel region": the partial products are summed.
  const bool first = tp->rank() == 0;
  const size_t n = static_cast<size_t>(N) * static_cast<size_t>(OC);
  float* acc = f32_accumulator(out, n, cpu::kScratchAcc);
  matmul_forward_f32(acc, inp, weight, first ? bias : nullptr, N, C_local, OC, first ? residual : nullptr);
  tp->all_reduce(acc, n, dist::ReduceOp::sum);
  commit(out, acc, n);
}

template <typename T>
void row_parallel_backward(Same<T>* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                           int N, int C_local, int OC) {
  // Backward of the all-reduce is the identity: dout is already replicated.
  matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C_local, OC);
}

#define CHORUS_INSTANTIATE(T)                                                                                \
  template void column_parallel_forward<T>(T*, const T*, const T*, const T*, int, int, int);                \
  template void column_parallel_backward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, int, \
                                            dist::Communicator*);                                           \
  template void row_parallel_forward<T>(T*, const T*, const T*, const T*, int, int, int, const T*,          \
                                        dist::Communicator*);                                               \
  template void row_parallel_backward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, int);
CHORUS_INSTANTIATE(float)
CHORUS_INSTANTIATE(bf16)
CHORUS_INSTANTIATE(fp16)
#undef CHORUS_INSTANTIATE

}  // namespace chorus::nn
