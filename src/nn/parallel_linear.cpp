// Gradient rule: backward accumulates (+=) into parameter gradients and
// overwrites activation gradients (see parallel_linear.h).
#include "nn/parallel_linear.h"

#include <cstddef>

#include "dist/communicator.h"
#include "nn/matmul.h"

namespace chorus::nn {

namespace {
bool is_parallel(const dist::Communicator* tp) { return tp != nullptr && tp->size() > 1; }
}  // namespace

void column_parallel_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                             int C, int OC_local) {
  // Megatron's "copy to tensor-parallel region": identity in forward.
  matmul_forward(out, inp, weight, bias, N, C, OC_local);
}

void column_parallel_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                              const float* weight, int N, int C, int OC_local, dist::Communicator* tp) {
  matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC_local);
  // Backward of the copy: every rank's partial input gradient, summed.
  if (dinp != nullptr && is_parallel(tp))
    tp->all_reduce(dinp, static_cast<size_t>(N) * static_cast<size_t>(C), dist::ReduceOp::sum);
}

void row_parallel_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                          int C_local, int OC, const float* residual, dist::Communicator* tp) {
  if (!is_parallel(tp)) {
    matmul_forward(out, inp, weight, bias, N, C_local, OC, residual);
    return;
  }
  // "Reduce from tensor-parallel region": the partial products are summed.
  const bool first = tp->rank() == 0;
  matmul_forward(out, inp, weight, first ? bias : nullptr, N, C_local, OC, first ? residual : nullptr);
  tp->all_reduce(out, static_cast<size_t>(N) * static_cast<size_t>(OC), dist::ReduceOp::sum);
}

void row_parallel_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                           const float* weight, int N, int C_local, int OC) {
  // Backward of the all-reduce is the identity: dout is already replicated.
  matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C_local, OC);
}

}  // namespace chorus::nn
