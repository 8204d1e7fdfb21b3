// Residual add out = a + b. In the GPT block loop the add is fused into the
// projection GEMM (matmul_forward's residual) and its backward into
// layernorm_backward's dresidual; these stand-alone versions serve other models
// and the tests.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstddef>

namespace chorus::nn {

// out (n) = a + b; out may alias a or b.
void residual_forward(float* out, const float* a, const float* b, size_t n);

// da (n) = dout, db (n) = dout (overwritten). Either may alias dout (then no
// copy is made) or be nullptr to skip.
void residual_backward(float* da, float* db, const float* dout, size_t n);

}  // namespace chorus::nn
