// MLP nonlinearities and the logit soft-cap (GELU is in nn/gelu.h):
//   relu^2   relu2(x) = max(x, 0)^2 (So et al. 2021, "Primer"; the MLP of
//            modded-nanogpt); relu2'(x) = 2 max(x, 0).
//   SwiGLU   swiglu(g, u) = silu(g) * u, silu(g) = g * sigmoid(g) (Shazeer 2020,
//            "GLU Variants Improve Transformer"; Llama's MLP): the up
//            projection is 2F wide, [gate | up] per row, and the output F wide.
//            d gate = dout * u * silu'(g), silu'(g) = s (1 + g (1 - s)),
//            s = sigmoid(g); d up = dout * silu(g).
//   softcap  y = cap * tanh(x / cap) (Gemma 2; modded-nanogpt's logits),
//            dy/dx = 1 - tanh^2 = 1 - (y / cap)^2, so backward needs only y.
// Sigmoid is 1 / (1 + exp(-g)) with the vectorised exp of backend/cpu/vmath.h
// (finite for every finite g); tanh is std::tanh. Written once for T in
// {float, bf16, fp16}: evaluated in fp32, rounded once.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

#include <cstddef>

namespace chorus::nn {

// out (n) = max(inp, 0)^2; out may alias inp.
template <typename T>
void relu2_forward(T* out, const T* inp, size_t n);

// dinp (n) = 2 max(inp, 0) * dout; dinp may alias dout (in place), not inp.
template <typename T>
void relu2_backward(T* dinp, const T* inp, const T* dout, size_t n);

// inp (N, 2F): rows [gate (F) | up (F)]; out (N, F) = silu(gate) * up.
// out must not alias inp.
template <typename T>
void swiglu_forward(T* out, const T* inp, int N, int F);

// dinp (N, 2F) = [d gate | d up] (overwritten), from dout (N, F) and the
// forward's inp (N, 2F). dinp must not alias inp or dout.
template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int N, int F);

// In place: x (n) <- cap * tanh(x / cap), cap > 0 (throws chorus::Error otherwise).
template <typename T>
void softcap_forward(T* x, size_t n, float cap);

// In place: dx (n) <- dx * (1 - (y / cap)^2), y (n) = the capped output of
// softcap_forward (dx must not alias y).
template <typename T>
void softcap_backward(T* dx, const T* y, size_t n, float cap);

}  // namespace chorus::nn
