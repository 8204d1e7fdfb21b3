// GPT-2 language model (Radford et al. 2019; layout as karpathy/llm.c):
// token + learned position embeddings, n_layer pre-LayerNorm blocks of causal
// multi-head attention and a GELU(tanh) MLP of width 4d, final LayerNorm, LM
// head tied to the token embedding. All Linear layers have biases.
// GptConfig's architecture options (docs/ARCHITECTURE.md) swap parts of it:
// rotary positions instead of wpe, RMSNorm, QK-norm, ReLU^2 or SwiGLU MLPs,
// an untied LM head, soft-capped logits; the defaults are GPT-2's.
//
// Memory is llm.c-style: one contiguous fp32 buffer for all parameters, one of
// the same size for their gradients, one for activations sized once for
// (max_batch, max_seq) at construction. A training step allocates nothing.
// The parameter table names every tensor (GPT-2 dotted names) with its shape,
// offset, weight decay and hidden-matrix (Muon) tags, so the optimizer, checkpoints
// and ZeRO / TP slicing are flat ranges over the same buffer.
//
// Tensor parallelism (Megatron layout, docs/PARALLELISM.md): with a TP group
// of T > 1 ranks each rank holds only its shard of the split tensors (the
// ParamSpec::tp_axis column below): the vocab-parallel token embedding / LM
// head, the column-parallel QKV and MLP-up, the row-parallel attention and
// MLP output projections (heads split across ranks). LayerNorms, wpe and the
// row-parallel biases are replicated. params()/grads() then hold the local
// shards only, in the same table order, one contiguous range per layer.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/dtype.h"
#include "nn/matmul.h"

namespace chorus::dist {
class Communicator;
}

namespace chorus::models {

// Architecture options ([model] in a config, docs/ARCHITECTURE.md). Each
// defaults to GPT-2's choice, so a config, checkpoint or weights file that
// does not name them is GPT-2.
enum class PosKind { learned, rotary };       // wpe rows | RoPE on q and k (Su et al. 2021)
enum class NormKind { layernorm, rmsnorm };   // LayerNorm with bias | RMSNorm, gain only
enum class MlpKind { gelu, relu2, swiglu };   // GELU(tanh) | ReLU^2 (So et al. 2021) | SwiGLU (Shazeer 2020)
const char* pos_name(PosKind k);
const char* norm_name(NormKind k);
const char* mlp_name(MlpKind k);
// Parse the names above; an Error naming `field` and the choices otherwise.
PosKind parse_pos(const std::string& s, const std::string& field);
NormKind parse_norm(const std::string& s, const std::string& field);
MlpKind parse_mlp(const std::string& s, const std::string& field);

struct GptConfig {
  int n_layer = 2;
  int n_embd = 64;     // d
  int n_head = 4;      // d % n_head == 0
  int vocab_size = 512;
  int context = 64;    // maximum sequence length (the rows of wpe with learned positions)
  PosKind pos = PosKind::learned;
  NormKind norm = NormKind::layernorm;
  bool qk_norm = false;        // parameter-free RMSNorm of every head's q and k before attention
  MlpKind mlp = MlpKind::gelu;
  bool tied_head = true;       // LM head = wte (false: its own lm_head.weight)
  float logit_softcap = 0.0f;  // > 0: logits = cap * tanh(logits / cap); 0 = off
  float rope_theta = 10000.0f; // rotary base
  // Runtime choice, not part of the architecture (not recorded, any value
  // loads any checkpoint): causal self-attention with the flash-style tiled
  // kernel that keeps only each row's softmax log-sum-exp for backward
  // (nn/flash_attention.h; activation memory linear in T), or the kernel that
  // keeps the (B, NH, T, T) probabilities (nn/attention.h).
  bool flash_attention = true;
  // Vocabulary rows actually allocated: vocab_size rounded up to a multiple of
  // 64 (GEMM-friendly, and divisible by the usual TP degrees). Padded logits
  // are masked out of the softmax and never sampled.
  int padded_vocab() const { return (vocab_size + 63) / 64 * 64; }
  // MLP hidden width F: 4d, or for SwiGLU 8d/3 rounded up to a multiple of 64
  // (the parameters of a 4d GELU MLP in three matrices instead of two).
  int mlp_hidden() const {
    return mlp == MlpKind::swiglu ? (8 * n_embd / 3 + 63) / 64 * 64 : 4 * n_embd;
  }
  // Width of c_fc's output: F, or 2F (gate | up) for SwiGLU.
  int mlp_fc_width() const { return mlp == MlpKind::swiglu ? 2 * mlp_hidden() : mlp_hidden(); }
  // Every option at GPT-2's choice (the layout GPT-2 safetensors can hold).
  bool is_gpt2() const {
    return pos == PosKind::learned && norm == NormKind::layernorm && !qk_norm && mlp == MlpKind::gelu &&
           tied_head && logit_softcap == 0.0f;
  }
  // "gpt2", or the options that differ, e.g. "rotary rmsnorm qk-norm relu2 untied softcap=30".
  std::string arch_name() const;
  void validate() const;  // throws chorus::Error naming the bad field
};

// The architecture options as JSON ({} for GPT-2; else every option, e.g.
// {"pos": "rotary", "norm": "rmsnorm", "qk_norm": true, "mlp": "relu2",
// "tied_head": false, "logit_softcap": 30, "rope_theta": 10000}): the "arch"
// object of manifests, config.json and weights files.
nlohmann::json gpt_arch_to_json(const GptConfig& c);
// Reads them back into c (absent keys keep GPT-2's choice); an Error naming
// `where` and the field for a bad value.
void gpt_arch_from_json(GptConfig& c, const nlohmann::json& j, const std::string& where);

struct ParamSpec {
  std::string name;             // GPT-2 dotted name, e.g. "h.3.attn.c_attn.weight"
  std::vector<int64_t> shape;   // this rank's (local) shape, row-major; Linear weights are (out, in)
  size_t offset = 0;            // into params()/grads(), in floats (local)
  size_t numel = 0;             // local
  bool decay = false;           // AdamW weight decay (matrices and embeddings only)
  // A hidden 2-D weight matrix of a transformer block (attention QKV / output,
  // MLP up / down, cross-attention q / kv / output): the tensors Muon updates
  // with --optimizer muon (docs/OPTIMIZERS.md). Embeddings, the LM / CTC head,
  // LayerNorms, biases and conv weights are not: AdamW keeps them.
  bool hidden_matrix = false;
  // Tensor-parallel layout (nn/tp_shard.h): global shape, sharded axis
  // (-1 = replicated on every TP rank) and parts (3 for the fused QKV):
  //   wte (Vp, C)            axis 0       vocab-parallel rows
  //   c_attn w (3C, C), b    axis 0, x3   column-parallel: TP rank r holds heads
  //                                       [r*NH/T, (r+1)*NH/T) of q, k and v
  //   attn.c_proj w (C, C)   axis 1       row-parallel (its bias replicated)
  //   c_fc w (Fo, C), b      axis 0       column-parallel (Fo = F = 4C; SwiGLU 2F in
  //                                       two parts, gate | up)
  //   mlp.c_proj w (C, F)    axis 1       row-parallel (its bias replicated)
  //   lm_head (Vp, C)        axis 0       untied head only: vocab-parallel as wte
  //   wpe, ln_* / RMSNorm    replicated
  // With TP = 1, shape == global_shape.
  std::vector<int64_t> global_shape;
  int tp_axis = -1;
  int tp_parts = 1;
};

// Cross-attention for the speech decoder (DESIGN.md "Speech model"): with
// n_state > 0 every block gets a pre-LN cross-attention sub-block between its
// self-attention and its MLP (Whisper's decoder layout), attending to a
// memory of up to max_len rows of n_state features (the encoder's output).
// Its output projection starts at zero, so a fresh decoder computes exactly
// what the GPT it was loaded from computes. Tensors, per block i:
//   h.{i}.ln_x.weight / .bias          (C)       replicated
//   h.{i}.crossattn.q.weight (C, C), .bias (C)   column-parallel (heads)
//   h.{i}.crossattn.kv.weight (2C, n_state), .bias (2C)  column-parallel, k|v
//   h.{i}.crossattn.c_proj.weight (C, C)         row-parallel, init 0
//   h.{i}.crossattn.c_proj.bias (C)              replicated, init 0
struct CrossAttentionConfig {
  int n_state = 0;  // 0 = a plain GPT
  int max_len = 0;  // memory rows per sequence at most
  bool enabled() const { return n_state > 0; }
};

// Bytes a model holds, by kind (the memory report of a training run).
struct GptMemory {
  size_t master_bytes = 0;          // fp32 master weights (params())
  size_t compute_weight_bytes = 0;  // their bf16 / fp16 copy (0 for fp32)
  size_t grad_bytes = 0;            // fp32 gradients
  size_t activation_bytes = 0;      // saved activations + backward scratch, in the compute dtype
  size_t kv_cache_bytes = 0;        // decoding
  GptMemory& operator+=(const GptMemory& o) {
    master_bytes += o.master_bytes;
    compute_weight_bytes += o.compute_weight_bytes;
    grad_bytes += o.grad_bytes;
    activation_bytes += o.activation_bytes;
    kv_cache_bytes += o.kv_cache_bytes;
    return *this;
  }
};

// What a Gpt(cfg, max_batch, max_seq, a TP group of tp_size ranks, precision,
// cross) holds on each of its ranks for training (no KV cache), from the same
// parameter table and activation layout its constructor uses, without
// allocating anything: `chorus plan` and the memory check a job makes before
// it allocates. Throws as the constructor would for a bad shape or a tp_size
// that does not divide the model.
GptMemory gpt_memory(const GptConfig& cfg, int max_batch, int max_seq, int tp_size, Precision precision,
                     CrossAttentionConfig cross = {});
// Gpt::n_flop_params() and Gpt::flops_per_token(T) of such a model (the same
// for every TP degree).
size_t gpt_flop_params(const GptConfig& cfg, CrossAttentionConfig cross = {});
double gpt_flops_per_token(const GptConfig& cfg, int T, CrossAttentionConfig cross = {});

class Gpt {
 public:
  // Allocates parameters, gradients and activations for batches up to
  // max_batch x max_seq (max_seq <= cfg.context). Parameters start at zero;
  // call init_weights.
  Gpt(const GptConfig& cfg, int max_batch, int max_seq);
  // One rank of a tensor-parallel group tp (Megatron layout, see
  // ParamSpec::tp_axis); tp must outlive the model. tp == nullptr or a group of
  // one: TP = 1, identical to the constructor above. With T = tp->size() > 1:
  //   - T must divide n_head, 4 * n_embd and padded_vocab() (throws otherwise);
  //   - params()/grads()/param_table() describe this rank's shards only;
  //   - forward() and backward() are collective over tp: every rank of the
  //     group calls them together, in the same order, with the same tokens,
  //     targets, B, T and loss_scale; every rank gets the same loss, and the
  //     gradients of replicated tensors are identical on every rank;
  //   - logits() is this rank's vocabulary shard (no rank holds full logits);
  //   - reset_cache()/decode_step() throw: generation runs on one rank.
  // Scratch for the TP collectives is preallocated: a step still allocates nothing.
  //
  // precision: the storage dtype of activations, activation gradients and the
  // compute copy of the weights (docs/DESIGN.md "Mixed precision"). params()
  // are always the fp32 masters and grads() fp32; for bf16 / fp16 the weights
  // are rounded into the compute copy before the next forward whenever
  // params() was taken since the last one (an optimizer step, a load).
  Gpt(const GptConfig& cfg, int max_batch, int max_seq, dist::Communicator* tp,
      Precision precision = Precision::fp32, CrossAttentionConfig cross = {});
  ~Gpt();
  Gpt(const Gpt&) = delete;
  Gpt& operator=(const Gpt&) = delete;

  const GptConfig& config() const { return cfg_; }
  const CrossAttentionConfig& cross_config() const;

  // Moves the parameters and gradients into caller-owned storage of
  // n_params() floats each (a joint model's one buffer); the current values
  // are copied over. The storage must outlive the model.
  void adopt_storage(float* params, float* grads);
  // GPT-2 init: N(0, 0.02) for weights/embeddings, residual projections
  // (attn.c_proj, mlp.c_proj) N(0, 0.02/sqrt(2*n_layer)), biases 0, LN gain 1.
  // The same global model for every TP degree: each rank draws the global
  // tensors as one rank would and keeps its shard.
  void init_weights(uint64_t seed);

  // fp32 master weights. Taking the mutable span marks the compute copy stale.
  std::span<float> params();
  std::span<const float> master_params() const;
  std::span<float> grads();
  Precision precision() const;
  // Rounds the masters into the compute copy now (forward does it by itself
  // when needed).
  void refresh_compute_weights();
  GptMemory memory() const;
  const std::vector<ParamSpec>& param_table() const;
  size_t n_params() const;       // floats in params() on this rank (incl. padded vocab rows)
  // Parameters for FLOP accounting as in bench/peers/torch_gpt_bench.py:
  // all parameters of the whole (global) model with the real (unpadded) vocab,
  // minus the position embedding. The same on every TP rank.
  size_t n_flop_params() const;
  // Training FLOPs per token of the whole model: 6*N + 12*L*d*T (nanoGPT / PaLM convention).
  double flops_per_token(int T) const;
  size_t activation_bytes() const;

  // Training/eval forward. tokens, targets: (B, T) int32 with values < vocab_size;
  // a target of -1 is ignored (no loss, no gradient: prompt positions).
  // Returns mean cross-entropy (nats) over the B*T positions not ignored (0 if
  // none) and keeps activations for backward. targets == nullptr: computes
  // logits only (returns 0).
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  // Loss normalisation: false (default) = mean over every position not
  // ignored in the batch; true = mean over sequences of each sequence's mean
  // (speech transcripts of unequal length: then DP ranks' averages of equal
  // batch sizes equal the single-rank loss exactly).
  void set_per_sequence_mean(bool on);
  // Cross-attention models: the memory the next forward attends to, (B, S,
  // n_state) in the compute dtype (float / bf16 / fp16 as precision()), with
  // mem_len[b] valid rows of sequence b (nullptr: all S). Held by pointer until
  // backward returns. Throws for a plain GPT.
  void set_memory(const void* memory, const int* mem_len, int S);
  // Cross-attention models: an additive log-prior on the cross-attention
  // scores of the first n_heads heads (global indices) of every layer
  // (nn::AttentionBias; the speech decoder's CTC alignment prior). Per
  // forward: bias (B, T, S) fp32 for the next forward only (nullptr = none);
  // per decode step: bias (B, S) fp32 for every following decode_step until
  // changed (nullptr = none). The pointers are held, not copied.
  void set_cross_attention_bias_heads(int n_heads);
  void set_cross_attention_bias(const float* bias);
  void set_decode_bias(const float* bias);
  // After backward: d loss / d memory, (B, S, n_state) in the compute dtype
  // (overwritten by every backward).
  const void* memory_grad() const;
  // Logits of the last forward (padded columns arbitrary): (B, T, padded_vocab)
  // with TP = 1; with TP > 1 this rank's shard (B, T, local_vocab()), the
  // columns [vocab_begin(), vocab_begin() + local_vocab()) of the full logits.
  // Valid until backward(), which reuses this buffer for the logit gradient.
  // fp32 models only (throws otherwise); logits_f32 converts from any
  // precision into out ((B, T, local_vocab()) floats).
  const float* logits() const;
  void logits_f32(float* out) const;
  int vocab_begin() const;  // TP rank * padded_vocab / TP
  int local_vocab() const;  // padded_vocab / TP
  int tp_size() const;
  int tp_rank() const;
  // Backward of the last forward with targets: accumulates
  // d(loss * loss_scale)/d(params) into grads(). Call zero_grad() before the
  // first micro-batch of an optimizer step; with N micro-batches pass
  // loss_scale = 1/N so grads hold the mean.
  void backward(float loss_scale = 1.0f);
  void zero_grad();

  // Incremental decoding with a KV cache (generate), TP = 1 only (throws
  // chorus::Error otherwise). reset_cache() starts B new sequences;
  // decode_step feeds one token per sequence (tokens: (B,)) at
  // position pos (0-based, < context) and returns logits (B, padded_vocab).
  void reset_cache(int B);
  const float* decode_step(const int32_t* tokens, int pos);
  // Cross-attention models, after reset_cache(B): the memory (B, S, n_state)
  // fp32 of the B sequences (mem_len nullable), turned into every layer's
  // cross keys/values once.
  void set_decode_memory(const float* memory, const int* mem_len, int S);
  // Decoding on weight-only bf16 or int8 copies (nn::PackedWeight; int8 per
  // output channel) of every matrix decode_step multiplies by: QKV, attention
  // out, cross-attention q / out, MLP, LM head = token embedding (the token
  // rows are read unpacked from it). Packed from the current weights (call
  // again after they change); positions, norms, biases, the cross keys/values
  // of set_decode_memory and forward() stay fp32. fp32 frees the copies. fp32
  // models, TP = 1 (throws otherwise).
  // (decode_int8_tensor names exactly these matrices.)
  void set_decode_weights(nn::DecodeWeights w);
  nn::DecodeWeights decode_weights() const;
  // Beam search: sequence b of the cache becomes a copy of sequence src[b]
  // (self-attention cache, cross keys/values and their lengths).
  void reorder_cache(const int* src);

 private:
  template <typename T>
  float forward_typed(bool with_targets);
  template <typename T>
  void backward_typed(float loss_scale);

  GptConfig cfg_;
  struct State;
  std::unique_ptr<State> s_;
};

// The tensors Gpt::set_decode_weights packs, by parameter name (a GPT's, or
// a speech model's decoder's with its "decoder." prefix): wte and the block
// matrices but the cross-attention keys/values. `chorus quantize` stores
// exactly these as int8, so a quantised file decodes as --int8 does.
bool decode_int8_tensor(const std::string& name);

}  // namespace chorus::models
