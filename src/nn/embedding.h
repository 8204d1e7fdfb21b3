// Token + learned position embedding (GPT-2 "wte" + "wpe"). Tables and output
// in T (float, bf16 or fp16), the sum in fp32; table gradients fp32.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients (the input
// gradients it is asked for are fully written, never added to).
#pragma once

#include <cstdint>

namespace chorus::nn {

// out (B, T, C) = wte[tokens[b, t]] + wpe[t].
// tokens (B, T) with values in [0, V) (not checked here); wte (V, C); wpe (>= T, C),
// or nullptr for no position table (rotary positions: out = wte rows).
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int Tn, int C);

// dwte (V, C) += scatter of dout by token; dwpe (>= T, C) += dout summed over B
// (dwpe nullptr: no position table).
// dout (B, T, C). Deterministic: parallel over column blocks, rows in order.
template <typename T>
void embedding_backward(float* dwte, float* dwpe, const T* dout, const int32_t* tokens, int B, int Tn, int C);

// The same for a slice of the vocabulary (vocab-parallel embedding): only
// tokens in [row_begin, row_begin + n_rows) scatter into dwte (n_rows, C), row
// token - row_begin; dwpe gets every position.
template <typename T>
void embedding_backward_rows(float* dwte, float* dwpe, const T* dout, const int32_t* tokens, int64_t row_begin,
                           int64_t n_rows, int B, int Tn, int C);

}  // namespace chorus::nn
