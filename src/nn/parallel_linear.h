// Tensor-parallel Linear layers (Megatron-LM's ColumnParallelLinear and
// RowParallelLinear, Shoeybi et al. 2019, section 3) over nn/matmul.h. Each
// communication is one half of a forward/backward pair (we have no autograd):
//
//   column-parallel  W (OC, C) split on its output rows, each rank holds
//                    (OC/tp, C) and produces its OC/tp output columns.
//                    forward: identity (the input is replicated)
//                    backward: ALL-REDUCE (sum) of the input gradient
//   row-parallel     W (OC, C) split on its input columns, each rank holds
//                    (OC, C/tp) and sees its C/tp input columns.
//                    forward: ALL-REDUCE (sum) of the partial outputs, the
//                             replicated bias (and residual) added once
//                    backward: identity (the output gradient is replicated)
//
// A column-parallel layer followed by a row-parallel one (QKV -> attention ->
// c_proj, c_fc -> GELU -> c_proj) communicates once in each direction.
// tp == nullptr or a group of one: exactly matmul_forward / matmul_backward.
// With tp > 1 every rank of the group must make the same calls in the same order.
//
// Every tensor in T (float, bf16 or fp16) as in nn/matmul.h; the TP
// all-reduces run on the fp32 accumulators, before the one rounding into T.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include "nn/typed.h"

namespace chorus::dist {
class Communicator;
}

namespace chorus::nn {

// out (N, OC_local) = inp (N, C) @ weight^T + bias: weight (OC_local, C) and
// bias (OC_local) or nullptr are this rank's rows; inp is replicated.
template <typename T>
void column_parallel_forward(T* out, const T* inp, const T* weight, const Same<T>* bias, int N, int C, int OC_local);

// dinp (N, C) = sum over the TP group of dout_r @ weight_r (overwritten, the
// same on every rank); dweight, dbias += this rank's rows' gradients.
// dout (N, OC_local); inp, weight as forward.
template <typename T>
void column_parallel_backward(Same<T>* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                              int N, int C, int OC_local, dist::Communicator* tp);

// out (N, OC) = sum over the TP group of inp_r (N, C_local) @ weight_r^T,
// + bias (OC, replicated, or nullptr) + residual ((N, OC), replicated, or
// nullptr; out may alias it). TP rank 0 folds bias and residual into its
// partial product before the all-reduce, so they are added exactly once and no
// extra pass is made. The result is the same on every rank.
template <typename T>
void row_parallel_forward(T* out, const T* inp, const T* weight, const Same<T>* bias, int N, int C_local,
                          int OC, const Same<T>* residual, dist::Communicator* tp);

// dinp (N, C_local) = dout @ weight (overwritten); dweight (OC, C_local) +=
// dout^T @ inp; dbias (OC) += column sums of dout (the same on every rank, as
// dout is replicated). No communication.
template <typename T>
void row_parallel_backward(Same<T>* dinp, float* dweight, float* dbias, const T* dout, const T* inp, const T* weight,
                           int N, int C_local, int OC);

}  // namespace chorus::nn
