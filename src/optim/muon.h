// Muon (K. Jordan et al. 2024, "Muon: MomentUm Orthogonalized by Newton-Schulz",
// the optimizer of the modded-nanogpt speedrun) for the hidden 2-D weight
// matrices of a transformer: per matrix W (rows = out, cols = in),
//   m  <- mu * m + g                       (momentum buffer, fp32)
//   u  <- g + mu * m                        (Nesterov; plain: u = m)
//   X  <- NewtonSchulz5(u)                  (~ U V^T of u's SVD, singular values ~1)
//   W  <- W - lr * max(1, rows / cols)^0.5 * X
// No weight decay (the speedrun's original Muon). Everything else in the model
// (embeddings, heads, LayerNorms, biases, convolutions) stays with AdamW; the
// split, the parallel layouts and the flags are in docs/OPTIMIZERS.md. The
// parallel driver is optim/distributed.h; this file holds the math.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace chorus::optim {

enum class OptimizerKind { adamw, muon };
const char* optimizer_name(OptimizerKind k);  // "adamw" | "muon"
// Parses "adamw" | "muon" (throws chorus::Error naming the flag --optimizer).
OptimizerKind parse_optimizer(const std::string& s);

struct MuonConfig {
  float lr = 0.02f;        // peak learning rate of the Muon matrices (the schedule scales it like --lr)
  float momentum = 0.95f;  // mu, in [0, 1)
  bool nesterov = true;
  int ns_steps = 5;        // Newton-Schulz iterations
};

// One tensor Muon updates, as the model's parameter table describes it: its
// place in this rank's flat buffer (its TP shard) and its global layout.
// A tensor of tp_parts blocks along axis 0 (the fused q|k|v, k|v) is
// orthogonalised block by block, each block a matrix of its own.
struct MuonMatrix {
  std::string name;
  size_t offset = 0;  // into this rank's buffer, floats
  size_t numel = 0;   // local (this TP rank's shard)
  int64_t rows = 0, cols = 0;  // global shape (out, in)
  int tp_axis = -1;   // -1: the whole matrix is on every TP rank; 0 rows / 1 columns sharded (nn/tp_shard.h)
  int tp_parts = 1;   // blocks along axis 0, orthogonalised separately
  int64_t part_rows() const { return rows / tp_parts; }
};

// The quintic Newton-Schulz coefficients of the speedrun: chosen to push
// every singular value of a Frobenius-normalised matrix into about
// [0.7, 1.2] in 5 steps, not to converge to exactly 1.
inline constexpr float kNsA = 3.4445f, kNsB = -4.7750f, kNsC = 2.0315f;

// Floats of scratch newton_schulz5 needs for a (rows, cols) matrix.
size_t ns_scratch_floats(int64_t rows, int64_t cols);
// x (rows, cols) row-major, in place, fp32: x / ||x||_F, transposed when tall
// (rows > cols, so the Gram matrix is the small side), then `steps` times
//   A = X X^T,  X = a X + (b A + c A A) X
// and transposed back. scratch: ns_scratch_floats(rows, cols) floats.
void newton_schulz5(float* x, int64_t rows, int64_t cols, int steps, float* scratch);
// max(1, rows / cols)^0.5: the update scale of a (rows, cols) matrix.
float muon_scale(int64_t rows, int64_t cols);

}  // namespace chorus::optim
