// Per-head transforms of the queries and keys, applied in place to the q and k
// columns of a fused (B, T, 3C) qkv buffer between the QKV projection and
// attention, in modded-nanogpt's order (KellerJordan/modded-nanogpt,
// CausalSelfAttention.forward: q, k = norm(q), norm(k); then rotary):
//   QK-norm  x <- x * r, r = 1 / sqrt(mean(x^2) + kRmsNormEps) over the head's
//            hs values: a parameter-free RMSNorm per head (nn/rmsnorm.h;
//            Henry et al. 2020, Dehghani et al. 2023 use it against attention
//            logit growth);
//   RoPE     rotary position embedding (Su et al. 2021, RoFormer) in the
//            "rotate half" layout of GPT-NeoX / HF Llama: pair i < hs/2 is
//            (x_i, x_{i+hs/2}), rotated by theta_i = pos * rope_theta^(-2i/hs):
//              (x_i, x_{i+hs/2}) <- (x_i cos - x_{i+hs/2} sin, x_i sin + x_{i+hs/2} cos).
//            q_pos . k_pos' then depends on pos - pos' only.
// The angles are computed in double and rounded once to fp32 cos / sin, so
// they stay accurate at large positions; HF Llama forms pos * inv_freq in
// float32 and differs from these by up to ~pos * 2^-24 rad (~5e-4 at 8192).
// The v columns are never touched.
//
// Backward, per head, with z the saved transformed vector, g the incoming
// gradient and R the rotation (R = I without rotary): y = x r, z = R y, and
// since a rotation preserves dot products the norm's backward runs in the
// rotated frame:
//   with QK-norm  dx = r * R^T (g - z * mean(g * z))
//   without       dx = R^T g.
//
// Written once for T in {float, bf16, fp16} (nn/typed.h): each row's q and k
// are converted to fp32, transformed in fp32 and rounded once into T; rstd is
// fp32. There are no parameters.
//
// Gradient rule for every layer in src/nn: backward ACCUMULATES (+=) into
// parameter gradients and OVERWRITES activation gradients.
#pragma once

namespace chorus::nn {

struct QkTransform {
  bool qk_norm = false;         // parameter-free RMSNorm of each q and k head
  bool rotary = false;          // RoPE on each q and k head (hs even)
  float rope_theta = 10000.0f;  // RoPE base (Su et al.; Llama 3 uses 500000)
  bool any() const { return qk_norm || rotary; }
};

// In place on qkv: B*Tn rows of stride 3C, q = columns [0, C), k = [C, 2C),
// v = [2C, 3C) (untouched); head h of q and of k = columns [h*hs, (h+1)*hs),
// hs = C / NH. Row (b, t) is at position pos0 + t (pos0 > 0: decoding, e.g. B
// rows with Tn = 1 at one position). rstd (B*Tn, 2*NH): with qk_norm, the
// saved r of q head h at [row * 2*NH + h] and of k head h at
// [row * 2*NH + NH + h]; may be nullptr without qk_norm. Nothing happens
// when !tf.any(). Throws chorus::Error unless C % NH == 0 (and hs is even
// with rotary).
template <typename T>
void qk_transform_forward(T* qkv, float* rstd, int B, int Tn, int C, int NH, const QkTransform& tf,
                          int pos0 = 0);

// In place on the q and k columns of dqkv (v columns untouched): turns the
// gradient w.r.t. the transformed q, k into the gradient w.r.t. q, k before
// the transform. qkv: the buffer AFTER qk_transform_forward (what attention
// saw; only read with qk_norm); rstd, B, Tn, C, NH, tf, pos0 as forward.
template <typename T>
void qk_transform_backward(T* dqkv, const T* qkv, const float* rstd, int B, int Tn, int C, int NH,
                           const QkTransform& tf, int pos0 = 0);

}  // namespace chorus::nn
