// Token + learned position embedding (GPT-2 "wte" + "wpe").
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients (the input
// gradients it is asked for are fully written, never added to).
#pragma once

#include <cstdint>

namespace chorus::nn {

// out (B, T, C) = wte[tokens[b, t]] + wpe[t].
// tokens (B, T) with values in [0, V) (not checked here); wte (V, C); wpe (>= T, C).
void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                     int C);

// dwte (V, C) += scatter of dout by token; dwpe (>= T, C) += dout summed over B.
// dout (B, T, C). Deterministic: parallel over column blocks, rows in order.
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                      int C);

// The same for a slice of the vocabulary (vocab-parallel embedding): only
// tokens in [row_begin, row_begin + n_rows) scatter into dwte (n_rows, C), row
// token - row_begin; dwpe gets every position.
void encoder_backward_rows(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t row_begin,
                           int64_t n_rows, int B, int T, int C);

}  // namespace chorus::nn
