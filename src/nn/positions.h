// Fixed sinusoidal position embeddings (Vaswani et al. 2017, sec. 3.5), in the
// layout of Whisper's audio encoder (openai/whisper, whisper/model.py,
// sinusoids()): channel block [0, C/2) holds sin(t * w_i), block [C/2, C) holds
// cos(t * w_i), with w_i = exp(-i * log(10000) / (C/2 - 1)), i < C/2.
//
// Computed in double, so entries are the correctly rounded fp32 values; Whisper
// computes in float32 and its table differs by up to about t * 2^-24 (~1e-4 at
// t = 1500): when matching a Whisper checkpoint, load its stored
// positional_embedding buffer instead.
//
// The table is not a parameter: backward of add_positions is the identity on
// the activation gradient, so there is no positions backward.
#pragma once

namespace chorus::nn {

// out (n_pos, C) fp32 = [sin(t * w) | cos(t * w)], computed in double.
// C even and >= 4 (throws chorus::Error otherwise).
void sinusoidal_positions(float* out, int n_pos, int C);

// x (B, Tn, C) += pos[t] for every item, in fp32, rounded once into T.
// pos (>= Tn, C) fp32, e.g. from sinusoidal_positions.
template <typename T>
void add_positions(T* x, const float* pos, int B, int Tn, int C);

}  // namespace chorus::nn
