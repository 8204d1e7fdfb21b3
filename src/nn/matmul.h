// Linear layer y = x W^T + b with W (OC, C) row-major, the torch.nn.Linear
// layout, so GPT-2 / PyTorch weights load without transposing. Every product
// is one cblas_sgemm over all N = B*T rows.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

namespace chorus::nn {

// out (N, OC) = inp (N, C) @ weight^T + bias + residual.
// weight (OC, C); bias (OC) or nullptr; residual (N, OC) or nullptr (fuses a
// residual add into the GEMM's accumulate; out may alias residual). out must
// not alias inp.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N, int C,
                    int OC, const float* residual = nullptr);

// dinp (N, C) = dout @ weight (overwritten; nullptr skips it).
// dweight (OC, C) += dout^T @ inp; dbias (OC) += column sums of dout (either
// may be nullptr to skip). dout (N, OC); inp, weight as forward.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int N, int C, int OC);

}  // namespace chorus::nn
