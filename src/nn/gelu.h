// GELU with the tanh approximation used by GPT-2 (Hendrycks & Gimpel 2016):
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as
// x * sigmoid(2u) (the same function; exact identity 0.5(1 + tanh u) =
// sigmoid(2u)) so that one vectorised exp is the only transcendental.
// Written once for T in {float, bf16, fp16}: evaluated in fp32, rounded once.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstddef>

namespace chorus::nn {

// out (n) = gelu(inp); out may alias inp.
template <typename T>
void gelu_forward(T* out, const T* inp, size_t n);

// dinp (n) = gelu'(inp) * dout; dinp may alias dout (in-place), not inp.
template <typename T>
void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n);

}  // namespace chorus::nn
