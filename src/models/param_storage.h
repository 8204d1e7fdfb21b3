// The parameter storage every model shares: fp32 master weights and gradients
// in one flat buffer each (or in a caller's buffers after adopt), views of the
// named tensors into both, and for bf16 / fp16 a compute copy of the weights
// with the same views. A model's State provides the members used here
// (params, grads, pbase, gbase, n_params, p, g, compute_params, p_bf16,
// p_fp16, compute_stale); make_view(T* base) builds the model's view type.
#pragma once

#include <cstring>

#include "backend/cpu/buffer.h"
#include "core/dtype.h"
#include "core/error.h"
#include "models/gpt/gpt.h"

namespace chorus::models {

// Floats of the compute copy of n parameters (2 bytes each; none for fp32).
inline size_t compute_copy_floats(size_t n, Precision precision) {
  return precision == Precision::fp32 ? 0 : (n + 1) / 2;
}

// Bytes of the storage below for n parameters (activations not included).
inline GptMemory param_memory(size_t n, Precision precision) {
  GptMemory m;
  m.master_bytes = n * sizeof(float);
  m.compute_weight_bytes = compute_copy_floats(n, precision) * sizeof(float);
  m.grad_bytes = n * sizeof(float);
  return m;
}

// Allocates n parameters (masters, gradients, the compute copy) and binds the views.
template <class State, class MakeView>
void allocate_param_storage(State& s, size_t n, Precision precision, MakeView&& make_view) {
  s.params = backend::cpu::AlignedBuffer(n);
  s.grads = backend::cpu::AlignedBuffer(n);
  s.pbase = s.params.data();
  s.gbase = s.grads.data();
  s.n_params = n;
  s.p = make_view(s.pbase);
  s.g = make_view(s.gbase);
  if (precision != Precision::fp32) {
    // The compute copy: 2 bytes per parameter, views at the same offsets.
    s.compute_params = backend::cpu::AlignedBuffer(compute_copy_floats(n, precision));
    if (precision == Precision::bf16)
      s.p_bf16 = make_view(reinterpret_cast<bf16*>(s.compute_params.data()));
    else
      s.p_fp16 = make_view(reinterpret_cast<fp16*>(s.compute_params.data()));
  }
  s.compute_stale = true;
}

// Moves the masters and gradients into the caller's buffers (n_params floats
// each; e.g. one buffer for all the parts of a joint model) and rebinds the views.
template <class State, class MakeView>
void adopt_param_storage(State& s, float* params, float* grads, MakeView&& make_view) {
  CHORUS_CHECK(params != nullptr && grads != nullptr, "adopt_storage: null storage");
  std::memcpy(params, s.pbase, s.n_params * sizeof(float));
  std::memcpy(grads, s.gbase, s.n_params * sizeof(float));
  s.pbase = params;
  s.gbase = grads;
  s.params = backend::cpu::AlignedBuffer();
  s.grads = backend::cpu::AlignedBuffer();
  s.p = make_view(s.pbase);
  s.g = make_view(s.gbase);
  s.compute_stale = true;
}

}  // namespace chorus::models
