// GPT-2 on the CPU backend: parameter table, one-allocation buffers, the block
// loop forward and the same loop in reverse for backward (see gpt.h).
//
// Gradient rule (as every layer in src/nn): backward accumulates (+=) into
// parameter gradients and overwrites activation gradients. The residual stream
// gradient lives in one (B, T, C) buffer that each pre-LN layernorm_backward
// updates in place through its dresidual argument.
//
// Tensor parallelism (Megatron layout, docs/PARALLELISM.md) uses the same loop:
// the layers come from nn/parallel_linear.h and nn/vocab_parallel.h, which hold
// every TP communication as a forward/backward pair and are exactly the plain
// layers when the TP group is one rank. Local (per-rank) widths in the shape
// comments below: Cl = C/tp attention width (NH/tp heads), Fl = 4C/tp MLP
// width, Vl = Vp/tp vocabulary rows; all equal the global ones when TP = 1.
#include "models/gpt/gpt.h"
#include "models/param_storage.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <unordered_map>

#include "backend/cpu/arena.h"
#include "backend/cpu/buffer.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include <algorithm>

#include "nn/attention.h"
#include "nn/embedding.h"
#include "nn/flash_attention.h"
#include "nn/gelu.h"
#include "nn/layernorm.h"
#include "nn/matmul.h"
#include "nn/mlp_activations.h"
#include "nn/parallel_linear.h"
#include "nn/qk_transform.h"
#include "nn/rmsnorm.h"
#include "nn/tp_shard.h"
#include "nn/vocab_parallel.h"

namespace chorus::models {

namespace cpu = chorus::backend::cpu;

namespace {

// How init_weights fills a tensor (a tag in the table, not a name match).
enum class Init { kNormal, kResidualNormal, kZero, kOne };

// Pointers of one block's tensors into params() or grads() (P = float), or
// into the compute copy of the weights (P = the storage dtype).
// Shapes are global (TP = 1); with TP > 1 the local shard in brackets.
// F = GptConfig::mlp_hidden(), Fo = mlp_fc_width() (2F for SwiGLU: gate | up).
// With RMSNorm the norms have no bias (nullptr).
template <typename P>
struct LayerView {
  P* ln1_w;     // (C)      h.{i}.ln_1.weight
  P* ln1_b;     // (C)      h.{i}.ln_1.bias
  P* attn_w;    // (3C, C)  [3Cl, C]  h.{i}.attn.c_attn.weight  column-parallel, q|k|v
  P* attn_b;    // (3C)     [3Cl]     h.{i}.attn.c_attn.bias
  P* proj_w;    // (C, C)   [C, Cl]   h.{i}.attn.c_proj.weight  row-parallel
  P* proj_b;    // (C)      h.{i}.attn.c_proj.bias
  P* ln2_w;     // (C)      h.{i}.ln_2.weight
  P* ln2_b;     // (C)      h.{i}.ln_2.bias
  P* fc_w;      // (Fo, C)  [Fol, C]  h.{i}.mlp.c_fc.weight  column-parallel (SwiGLU: parts gate | up)
  P* fc_b;      // (Fo)     [Fol]     h.{i}.mlp.c_fc.bias
  P* fcproj_w;  // (C, F)   [C, Fl]   h.{i}.mlp.c_proj.weight  row-parallel
  P* fcproj_b;  // (C)      h.{i}.mlp.c_proj.bias
  // cross-attention (nullptr in a plain GPT); Ca = the memory width
  P* lnx_w = nullptr;    // (C)        h.{i}.ln_x.weight
  P* lnx_b = nullptr;    // (C)        h.{i}.ln_x.bias
  P* xq_w = nullptr;     // (C, C)     [Cl, C]    h.{i}.crossattn.q.weight  column-parallel
  P* xq_b = nullptr;     // (C)        [Cl]
  P* xkv_w = nullptr;    // (2C, Ca)   [2Cl, Ca]  h.{i}.crossattn.kv.weight column-parallel, k|v
  P* xkv_b = nullptr;    // (2C)       [2Cl]
  P* xproj_w = nullptr;  // (C, C)     [C, Cl]    h.{i}.crossattn.c_proj.weight row-parallel
  P* xproj_b = nullptr;  // (C)        h.{i}.crossattn.c_proj.bias
};

template <typename P>
struct ModelView {
  P* wte = nullptr;  // (Vp, C) [Vl, C]  wte.weight, vocab-parallel (rows >= V stay zero)
  P* wpe = nullptr;  // (ctx, C)  wpe.weight (nullptr with rotary positions)
  P* lm_head = nullptr;  // (Vp, C) [Vl, C]  lm_head.weight when untied, else wte
  std::vector<LayerView<P>> layers;
  P* lnf_w = nullptr;  // (C)       ln_f.weight
  P* lnf_b = nullptr;  // (C)       ln_f.bias
};

// Saved forward activations of one block (pointers into the activation
// buffer), in the storage dtype T; the LayerNorm statistics are fp32.
template <typename T>
struct LayerActs {
  T* ln1;            // (B, T, C)
  float* ln1_mean;   // (B, T)
  float* ln1_rstd;   // (B, T)
  T* qkv;            // (B, T, 3Cl) local heads' q | k | v (q, k after QK-norm / rotary)
  float* qk_rstd = nullptr;  // (B, T, 2 NH/tp) QK-norm statistics
  T* atty;           // (B, T, Cl)  local heads' attention output before c_proj
  T* att = nullptr;  // (B, NH/tp, T, T) softmax probabilities of the local heads (full kernel)
  float* lse = nullptr;  // (B, NH/tp, T) their rows' log-sum-exp (flash kernel)
  T* res2;           // (B, T, C)   x + attn(ln_1(x))
  T* ln2;            // (B, T, C)
  float* ln2_mean;   // (B, T)
  float* ln2_rstd;   // (B, T)
  T* fch;            // (B, T, Fol) c_fc output (local columns)
  T* fch_gelu;       // (B, T, Fl)  after the activation (GELU, ReLU^2 or SwiGLU)
  T* res3;           // (B, T, C)   block output
  // cross-attention models only
  T* lnx = nullptr;         // (B, T, C)
  float* lnx_mean = nullptr;
  float* lnx_rstd = nullptr;
  T* xq = nullptr;          // (B, T, Cl)
  T* xkv = nullptr;         // (B, S, 2Cl)  local heads' k | v of the memory
  T* xatt = nullptr;        // (B, NH/tp, T, S)
  T* xy = nullptr;          // (B, T, Cl)
  T* resx = nullptr;        // (B, T, C)   res2 + crossattn(ln_x(res2))
};

// The whole activation table of a training step in storage dtype T.
template <typename T>
struct Acts {
  std::vector<LayerActs<T>> layers;
  T* encoded = nullptr;       // (B, T, C)
  T* lnf = nullptr;           // (B, T, C)
  float* lnf_mean = nullptr;  // (B, T)
  float* lnf_rstd = nullptr;  // (B, T)
  T* logits = nullptr;        // (B, T, Vl) local columns; backward overwrites it with dlogits
  float* losses = nullptr;    // (B, T)
  float* lse = nullptr;       // (B, T) log-sum-exp of each row of the (global) logits
  float* ce_stats = nullptr;  // (2, B, T) parallel cross-entropy scratch (TP > 1 only)
  // Backward scratch, reused by every layer.
  T* dres = nullptr;   // (B, T, C) residual-stream gradient
  T* dln = nullptr;    // (B, T, C) gradient at a layernorm output
  T* datty = nullptr;  // (B, T, Cl)
  T* dqkv = nullptr;   // (B, T, 3Cl)
  T* dfch = nullptr;   // (B, T, Fol)
  T* dact = nullptr;   // (B, T, Fl) SwiGLU only: d(activation output); else dfch is used
  T* dxkv = nullptr;       // (B, S, 2Cl)  cross-attention models
  T* dmem = nullptr;       // (B, S, Ca)   d loss / d memory, summed over layers
  T* dmem_part = nullptr;  // (B, S, Ca)   one layer's part
};

}  // namespace

struct Gpt::State {
  int max_batch = 0;
  int max_seq = 0;
  Precision precision = Precision::fp32;
  CrossAttentionConfig cross;
  // The memory of the next forward / backward (cross-attention models).
  const void* mem = nullptr;
  const int* mem_len = nullptr;
  int S = 0;
  std::vector<int> mem_len_copy;  // (B)
  // Cross-attention log-prior (set_cross_attention_bias): this rank's head
  // weights (NH/tp; 1 for a biased head), the next forward's bias (B, T, S)
  // and the decode steps' (B, S).
  std::vector<float> bias_head_w;
  const float* bias_next = nullptr;
  const float* bias_fwd = nullptr;
  const float* bias_decode = nullptr;
  // Weight-only bf16 / int8 copies of the matrices decode_step multiplies by
  // (set_decode_weights); empty when decoding runs on the fp32 weights.
  struct PackedLayer {
    nn::PackedWeight attn, proj, xq, xproj, fc, fcproj;
  };
  std::vector<PackedLayer> dec_packed;
  nn::PackedWeight dec_lm_head;
  nn::PackedWeight dec_wte;  // untied head only: the token rows (tied: dec_lm_head's)
  // Tensor parallelism: tp == nullptr when the group is one rank.
  dist::Communicator* tp = nullptr;
  int tp_size = 1;
  int tp_rank = 0;
  int n_head_local = 0;  // NH / tp
  int attn_local = 0;    // Cl = C / tp
  int mlp_local = 0;     // Fl = F / tp
  nn::VocabRange vocab;  // this rank's rows of wte / columns of the logits
  std::vector<ParamSpec> table;
  std::vector<Init> init;  // one per table entry
  cpu::AlignedBuffer params;  // fp32 master weights (empty after adopt_storage)
  cpu::AlignedBuffer grads;   // fp32 gradients
  float* pbase = nullptr;     // params / grads, or the caller's storage
  float* gbase = nullptr;
  size_t n_params = 0;
  ModelView<float> p;  // views into params
  ModelView<float> g;  // the same views into grads
  // bf16 / fp16: the weights rounded to the compute dtype, refreshed from the
  // masters before a forward whenever params() may have changed them.
  cpu::AlignedBuffer compute_params;
  ModelView<bf16> p_bf16;
  ModelView<fp16> p_fp16;
  bool compute_stale = true;

  // Activation buffer, sized once for (max_batch, max_seq) in the compute dtype
  // (only the table of that dtype is bound).
  cpu::AlignedBuffer acts;
  size_t acts_bytes = 0;
  Acts<float> a_f32;
  Acts<bf16> a_bf16;
  Acts<fp16> a_fp16;
  std::vector<int32_t> tokens;   // (B, T) copy of the last forward's input
  std::vector<int32_t> targets;  // (B, T), -1 = ignored
  std::vector<int32_t> ce_targets;  // (B, T) targets with ignored ones as 0
  std::vector<uint8_t> valid;       // (B, T) target not ignored
  int n_valid = 0;
  bool per_sequence = false;
  std::vector<float> row_scale;  // (B, T) per-position loss weight (per_sequence)
  int B = 0;
  int T = 0;
  bool backward_ready = false;  // a forward with targets whose logits are intact

  // The last forward's batch shape and this rank's local widths.
  struct Shape {
    int B, Tn, N, C, NHl, Cl, Fl, Vl;
  };
  Shape shape(const GptConfig& cfg) const {
    return {B, T, B * T, cfg.n_embd, n_head_local, attn_local, mlp_local, vocab.size};
  }

  template <typename T>
  Acts<T>& acts_of() {
    if constexpr (std::is_same_v<T, float>) return a_f32;
    else if constexpr (std::is_same_v<T, bf16>) return a_bf16;
    else return a_fp16;
  }
  // The weights forward and backward compute with: the masters for fp32.
  template <typename T>
  const ModelView<T>& weights_of() {
    if constexpr (std::is_same_v<T, float>) return p;
    else if constexpr (std::is_same_v<T, bf16>) return p_bf16;
    else return p_fp16;
  }

  // KV cache and decode scratch (allocated by reset_cache). Decoding runs in
  // fp32 on the master weights.
  cpu::AlignedBuffer cache;
  int cache_B = 0;
  int n_cached = 0;
  float* k_cache = nullptr;     // (L, B, ctx, C)
  float* v_cache = nullptr;     // (L, B, ctx, C)
  float* dec_x = nullptr;       // (B, C)
  float* dec_ln = nullptr;      // (B, C)
  float* dec_mean = nullptr;    // (B)
  float* dec_rstd = nullptr;    // (B)
  float* dec_qkv = nullptr;     // (B, 3C)
  float* dec_y = nullptr;       // (B, C)
  float* dec_fch = nullptr;     // (B, Fo)
  float* dec_act = nullptr;     // (B, F) SwiGLU's output (else dec_fch in place)
  float* dec_qk_rstd = nullptr; // (B, 2NH)
  float* dec_logits = nullptr;  // (B, Vp)
  float* dec_scores = nullptr;  // (B, NH, max(ctx, S))
  float* dec_q = nullptr;       // (B, C)  cross-attention query
  float* x_kv = nullptr;        // (L, B, max_len, 2C) cross keys | values
  std::vector<int> dec_mem_len; // (B)
  int dec_S = 0;
};

namespace {

template <typename P>
ModelView<P> make_view(P* base, const std::vector<ParamSpec>& table, int n_layer) {
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < table.size(); ++i) index.emplace(table[i].name, i);
  // nullptr for a tensor this architecture does not have
  auto at = [&](const std::string& name) -> P* {
    const auto it = index.find(name);
    return it == index.end() ? nullptr : base + table[it->second].offset;
  };
  ModelView<P> v;
  v.wte = at("wte.weight");
  v.wpe = at("wpe.weight");
  v.lm_head = at("lm_head.weight");
  if (v.lm_head == nullptr) v.lm_head = v.wte;  // tied
  v.layers.resize(n_layer);
  for (int l = 0; l < n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    LayerView<P>& lv = v.layers[l];
    lv.ln1_w = at(h + "ln_1.weight");
    lv.ln1_b = at(h + "ln_1.bias");
    lv.attn_w = at(h + "attn.c_attn.weight");
    lv.attn_b = at(h + "attn.c_attn.bias");
    lv.proj_w = at(h + "attn.c_proj.weight");
    lv.proj_b = at(h + "attn.c_proj.bias");
    lv.ln2_w = at(h + "ln_2.weight");
    lv.ln2_b = at(h + "ln_2.bias");
    lv.fc_w = at(h + "mlp.c_fc.weight");
    lv.fc_b = at(h + "mlp.c_fc.bias");
    lv.fcproj_w = at(h + "mlp.c_proj.weight");
    lv.fcproj_b = at(h + "mlp.c_proj.bias");
    lv.lnx_w = at(h + "ln_x.weight");
    lv.lnx_b = at(h + "ln_x.bias");
    lv.xq_w = at(h + "crossattn.q.weight");
    lv.xq_b = at(h + "crossattn.q.bias");
    lv.xkv_w = at(h + "crossattn.kv.weight");
    lv.xkv_b = at(h + "crossattn.kv.bias");
    lv.xproj_w = at(h + "crossattn.c_proj.weight");
    lv.xproj_b = at(h + "crossattn.c_proj.bias");
  }
  v.lnf_w = at("ln_f.weight");
  v.lnf_b = at("ln_f.bias");
  return v;
}

// The sizes the activation table is laid out from: (max_batch, max_seq) and
// this rank's local widths (see the shape comments of Acts).
struct ActDims {
  int n_layer = 0;
  size_t N = 0, C = 0, Cl = 0, Fl = 0, Fol = 0, Vl = 0;
  size_t qk = 0;    // QK-norm statistics per position: 2 NH/tp (0 without QK-norm)
  bool swiglu = false;
  size_t att = 0;   // B * NH/tp * T * T (full attention kernel; 0 with flash)
  size_t lse = 0;   // B * NH/tp * T (flash kernel; 0 with the full one)
  bool tp = false;  // TP > 1: the parallel cross-entropy's scratch
  size_t NS = 0, Ca = 0, xatt = 0;  // cross-attention: B * max_len, memory width, B * NH/tp * T * max_len
};

// Lays out the activation table of dtype T in `arena` (nothing is allocated).
template <typename T>
void lay_out_activations(Acts<T>& a, cpu::Arena& arena, const ActDims& d) {
  const size_t N = d.N, C = d.C, Cl = d.Cl, Fl = d.Fl, NS = d.NS, Ca = d.Ca;
  a.layers.resize(d.n_layer);
  arena.add(&a.encoded, N * C);
  for (auto& la : a.layers) {
    arena.add(&la.ln1, N * C);
    arena.add(&la.ln1_mean, N);
    arena.add(&la.ln1_rstd, N);
    arena.add(&la.qkv, N * 3 * Cl);
    if (d.qk > 0) arena.add(&la.qk_rstd, N * d.qk);
    arena.add(&la.atty, N * Cl);
    if (d.att > 0) arena.add(&la.att, d.att);
    if (d.lse > 0) arena.add(&la.lse, d.lse);
    arena.add(&la.res2, N * C);
    arena.add(&la.ln2, N * C);
    arena.add(&la.ln2_mean, N);
    arena.add(&la.ln2_rstd, N);
    arena.add(&la.fch, N * d.Fol);
    arena.add(&la.fch_gelu, N * Fl);
    arena.add(&la.res3, N * C);
    if (Ca > 0) {
      arena.add(&la.lnx, N * C);
      arena.add(&la.lnx_mean, N);
      arena.add(&la.lnx_rstd, N);
      arena.add(&la.xq, N * Cl);
      arena.add(&la.xkv, NS * 2 * Cl);
      arena.add(&la.xatt, d.xatt);
      arena.add(&la.xy, N * Cl);
      arena.add(&la.resx, N * C);
    }
  }
  arena.add(&a.lnf, N * C);
  arena.add(&a.lnf_mean, N);
  arena.add(&a.lnf_rstd, N);
  arena.add(&a.logits, N * d.Vl);  // never (N, Vp) with TP > 1
  arena.add(&a.losses, N);
  arena.add(&a.lse, N);
  if (d.tp) arena.add(&a.ce_stats, 2 * N);
  arena.add(&a.dres, N * C);
  arena.add(&a.dln, N * C);
  arena.add(&a.datty, N * Cl);
  arena.add(&a.dqkv, N * 3 * Cl);
  arena.add(&a.dfch, N * d.Fol);
  if (d.swiglu) arena.add(&a.dact, N * Fl);
  if (Ca > 0) {
    arena.add(&a.dxkv, NS * 2 * Cl);
    arena.add(&a.dmem, NS * Ca);
    arena.add(&a.dmem_part, NS * Ca);
  }
}

// Allocates and binds the activation table of dtype T.
template <typename T>
void bind_activations(Acts<T>& a, cpu::AlignedBuffer& buffer, size_t& bytes, const ActDims& d) {
  cpu::Arena arena;
  lay_out_activations(a, arena, d);
  bytes = arena.bytes();
  buffer = cpu::AlignedBuffer((bytes + sizeof(float) - 1) / sizeof(float));
  arena.bind(buffer.data());
}

// Bytes of the activation table in `precision`, from the same layout.
size_t activation_bytes_for(Precision precision, const ActDims& d) {
  cpu::Arena arena;
  switch (precision) {
    case Precision::bf16: {
      Acts<bf16> a;
      lay_out_activations(a, arena, d);
      break;
    }
    case Precision::fp16: {
      Acts<fp16> a;
      lay_out_activations(a, arena, d);
      break;
    }
    case Precision::fp32: {
      Acts<float> a;
      lay_out_activations(a, arena, d);
      break;
    }
  }
  return arena.bytes();
}

// A GPT's parameter table on one of n_tp TP ranks (the Megatron split of
// ParamSpec::tp_axis) and how init_weights fills each tensor.
struct Table {
  std::vector<ParamSpec> specs;
  std::vector<Init> init;
  size_t n_params = 0;  // floats on this rank
};

// This rank's widths under TP = n_tp (throws when n_tp does not divide them).
struct LocalWidths {
  int n_head = 0, attn = 0, mlp = 0, vocab = 0;  // NH/tp, Cl, Fl, Vl
};
LocalWidths local_widths(const GptConfig& cfg, int n_tp) {
  const int64_t C = cfg.n_embd, Vp = cfg.padded_vocab(), F = cfg.mlp_hidden();
  CHORUS_CHECK(cfg.n_head % n_tp == 0,
               "Gpt: TP = %d does not divide n_head = %d (heads are split across TP ranks)", n_tp, cfg.n_head);
  CHORUS_CHECK(F % n_tp == 0, "Gpt: TP = %d does not divide the MLP width %lld", n_tp, static_cast<long long>(F));
  CHORUS_CHECK(Vp % n_tp == 0, "Gpt: TP = %d does not divide the padded vocabulary %lld", n_tp,
               static_cast<long long>(Vp));
  return {cfg.n_head / n_tp, static_cast<int>(C / n_tp), static_cast<int>(F / n_tp), static_cast<int>(Vp / n_tp)};
}

// What the constructor checks of a model's shape before sizing anything.
void check_shape(const GptConfig& cfg, int max_batch, int max_seq, CrossAttentionConfig cross) {
  cfg.validate();
  CHORUS_CHECK(max_batch > 0, "Gpt: max_batch must be > 0, got %d", max_batch);
  CHORUS_CHECK(max_seq > 0 && max_seq <= cfg.context, "Gpt: max_seq must be in [1, context = %d], got %d",
               cfg.context, max_seq);
  CHORUS_CHECK(!cross.enabled() || cross.max_len > 0, "Gpt: cross-attention needs max_len > 0, got %d",
               cross.max_len);
}

// Activation table: every saved tensor and backward scratch, for (max_batch,
// max_seq), in the compute dtype; the TP-split ones at their local width.
ActDims act_dims(const GptConfig& cfg, int max_batch, int max_seq, const LocalWidths& w, int n_tp,
                 CrossAttentionConfig cross) {
  ActDims d;
  d.n_layer = cfg.n_layer;
  d.N = static_cast<size_t>(max_batch) * max_seq;
  d.C = cfg.n_embd;
  d.Cl = w.attn;
  d.Fl = w.mlp;
  d.swiglu = cfg.mlp == MlpKind::swiglu;
  d.Fol = d.swiglu ? 2 * d.Fl : d.Fl;
  d.qk = cfg.qk_norm ? 2 * static_cast<size_t>(w.n_head) : 0;
  d.Vl = w.vocab;
  if (cfg.flash_attention)
    d.lse = static_cast<size_t>(max_batch) * w.n_head * max_seq;
  else
    d.att = static_cast<size_t>(max_batch) * w.n_head * max_seq * max_seq;
  d.tp = n_tp > 1;
  d.NS = static_cast<size_t>(max_batch) * cross.max_len;
  d.Ca = cross.n_state;
  d.xatt = static_cast<size_t>(max_batch) * w.n_head * max_seq * cross.max_len;
  return d;
}

Table build_table(const GptConfig& cfg, int n_tp, CrossAttentionConfig cross) {
  const int64_t L = cfg.n_layer, C = cfg.n_embd, Vp = cfg.padded_vocab(), ctx = cfg.context;
  Table t;
  size_t offset = 0;
  // tp_axis / tp_parts describe the Megatron split (nn/tp_shard.h); `shape`,
  // `numel` and `offset` are this rank's shard (TP = 1: shape == global_shape).
  constexpr bool kHidden = true;  // ParamSpec::hidden_matrix (Muon's tensors)
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay, Init init, int tp_axis = -1,
                 int tp_parts = 1, bool hidden_matrix = false) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.global_shape = shape;
    spec.shape = nn::local_shape(nn::ShardSpec{std::move(shape), tp_axis, tp_parts}, n_tp);
    spec.numel = 1;
    for (int64_t d : spec.shape) spec.numel *= static_cast<size_t>(d);
    spec.offset = offset;
    spec.decay = decay;
    spec.tp_axis = tp_axis;
    spec.tp_parts = tp_parts;
    spec.hidden_matrix = hidden_matrix;
    offset += spec.numel;
    t.specs.push_back(std::move(spec));
    t.init.push_back(init);
  };
  // Table order = buffer order: embeddings, then each block's tensors
  // contiguously (a layer is one flat range), then the final norm (and the
  // untied head). Tensors an option removes are not in the table at all.
  const int64_t F = cfg.mlp_hidden(), Fo = cfg.mlp_fc_width();
  const int fc_parts = cfg.mlp == MlpKind::swiglu ? 2 : 1;  // gate | up, each split over TP
  const bool ln_bias = cfg.norm == NormKind::layernorm;
  auto add_norm = [&](const std::string& prefix) {
    add(prefix + ".weight", {C}, false, Init::kOne);
    if (ln_bias) add(prefix + ".bias", {C}, false, Init::kZero);
  };
  add("wte.weight", {Vp, C}, true, Init::kNormal, 0);  // vocab-parallel
  if (cfg.pos == PosKind::learned) add("wpe.weight", {ctx, C}, true, Init::kNormal);
  for (int64_t l = 0; l < L; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    add_norm(h + "ln_1");
    add(h + "attn.c_attn.weight", {3 * C, C}, true, Init::kNormal, 0, 3, kHidden);  // column-parallel, q|k|v
    add(h + "attn.c_attn.bias", {3 * C}, false, Init::kZero, 0, 3);
    add(h + "attn.c_proj.weight", {C, C}, true, Init::kResidualNormal, 1, 1, kHidden);  // row-parallel
    add(h + "attn.c_proj.bias", {C}, false, Init::kZero);
    add_norm(h + "ln_2");
    add(h + "mlp.c_fc.weight", {Fo, C}, true, Init::kNormal, 0, fc_parts, kHidden);  // column-parallel
    add(h + "mlp.c_fc.bias", {Fo}, false, Init::kZero, 0, fc_parts);
    add(h + "mlp.c_proj.weight", {C, F}, true, Init::kResidualNormal, 1, 1, kHidden);  // row-parallel
    add(h + "mlp.c_proj.bias", {C}, false, Init::kZero);
    if (cross.enabled()) {
      const int64_t Ca = cross.n_state;
      add_norm(h + "ln_x");
      add(h + "crossattn.q.weight", {C, C}, true, Init::kNormal, 0, 1, kHidden);  // column-parallel
      add(h + "crossattn.q.bias", {C}, false, Init::kZero, 0);
      add(h + "crossattn.kv.weight", {2 * C, Ca}, true, Init::kNormal, 0, 2, kHidden);  // column-parallel, k|v
      add(h + "crossattn.kv.bias", {2 * C}, false, Init::kZero, 0, 2);
      // Zero: at step 0 the decoder computes exactly what the pretrained GPT does.
      add(h + "crossattn.c_proj.weight", {C, C}, true, Init::kZero, 1, 1, kHidden);  // row-parallel
      add(h + "crossattn.c_proj.bias", {C}, false, Init::kZero);
    }
  }
  add_norm("ln_f");
  if (!cfg.tied_head) add("lm_head.weight", {Vp, C}, true, Init::kNormal, 0);  // vocab-parallel, as wte

  t.n_params = offset;
  return t;
}

void check_tokens(const int32_t* ids, size_t n, int vocab, const char* what, bool allow_ignore = false) {
  for (size_t i = 0; i < n; ++i) {
    CHORUS_CHECK((ids[i] >= 0 && ids[i] < vocab) || (allow_ignore && ids[i] == -1),
                 "Gpt: %s[%zu] = %d is outside the vocabulary [0, %d)%s", what, i, ids[i], vocab,
                 allow_ignore ? " (or -1: ignored)" : "");
  }
}

// dst += src in fp32, rounded once into T.
template <typename T>
void add_into(T* dst, const T* src, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) dst[i] = from_f32<T>(to_f32(dst[i]) + to_f32(src[i]));
}

// The block's norm (GptConfig::norm): LayerNorm (mean, rstd saved) or RMSNorm
// (rstd saved, no bias: b, db are nullptr).
template <typename T>
void norm_forward(NormKind k, T* out, float* mean, float* rstd, const T* x, const T* w, const T* b, int N, int C) {
  if (k == NormKind::rmsnorm) nn::rmsnorm_forward(out, rstd, x, w, N, C);
  else nn::layernorm_forward(out, mean, rstd, x, w, b, N, C);
}
template <typename T>
void norm_backward(NormKind k, T* dx, float* dw, float* db, const T* dout, const T* x, const T* w, const float* mean,
                   const float* rstd, int N, int C, const T* dresidual) {
  if (k == NormKind::rmsnorm) nn::rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C, dresidual);
  else nn::layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, N, C, dresidual);
}

// The MLP's activation (GptConfig::mlp): act (N, F) from fch (N, Fo).
template <typename T>
void mlp_activation_forward(MlpKind k, T* act, const T* fch, int N, int F) {
  const size_t n = static_cast<size_t>(N) * F;
  switch (k) {
    case MlpKind::gelu: nn::gelu_forward(act, fch, n); return;
    case MlpKind::relu2: nn::relu2_forward(act, fch, n); return;
    case MlpKind::swiglu: nn::swiglu_forward(act, fch, N, F); return;
  }
}
// dfch (N, Fo) from dact (N, F); dfch may be dact except for SwiGLU.
template <typename T>
void mlp_activation_backward(MlpKind k, T* dfch, const T* fch, const T* dact, int N, int F) {
  const size_t n = static_cast<size_t>(N) * F;
  switch (k) {
    case MlpKind::gelu: nn::gelu_backward(dfch, fch, dact, n); return;
    case MlpKind::relu2: nn::relu2_backward(dfch, fch, dact, n); return;
    case MlpKind::swiglu: nn::swiglu_backward(dfch, fch, dact, N, F); return;
  }
}

nn::QkTransform qk_transform_of(const GptConfig& c) {
  nn::QkTransform tf;
  tf.qk_norm = c.qk_norm;
  tf.rotary = c.pos == PosKind::rotary;
  tf.rope_theta = c.rope_theta;
  return tf;
}

}  // namespace

Gpt::Gpt(const GptConfig& cfg, int max_batch, int max_seq) : Gpt(cfg, max_batch, max_seq, nullptr) {}

Gpt::Gpt(const GptConfig& cfg, int max_batch, int max_seq, dist::Communicator* tp, Precision precision,
         CrossAttentionConfig cross)
    : cfg_(cfg), s_(std::make_unique<State>()) {
  check_shape(cfg_, max_batch, max_seq, cross);
  State& s = *s_;
  s.max_batch = max_batch;
  s.max_seq = max_seq;
  s.precision = precision;
  s.cross = cross;
  if (tp != nullptr && tp->size() > 1) {
    s.tp = tp;
    s.tp_size = tp->size();
    s.tp_rank = tp->rank();
  }
  const int n_tp = s.tp_size;
  const LocalWidths w = local_widths(cfg_, n_tp);
  s.n_head_local = w.n_head;
  s.attn_local = w.attn;
  s.mlp_local = w.mlp;
  s.vocab.size = w.vocab;
  s.vocab.begin = s.tp_rank * s.vocab.size;
  s.vocab.vocab = cfg_.vocab_size;

  Table table = build_table(cfg_, n_tp, cross);
  s.table = std::move(table.specs);
  s.init = std::move(table.init);
  allocate_param_storage(s, table.n_params, precision, [&](auto* base) { return make_view(base, s.table, cfg_.n_layer); });

  const ActDims dims = act_dims(cfg_, max_batch, max_seq, w, n_tp, cross);
  switch (precision) {
    case Precision::fp32: bind_activations(s.a_f32, s.acts, s.acts_bytes, dims); break;
    case Precision::bf16: bind_activations(s.a_bf16, s.acts, s.acts_bytes, dims); break;
    case Precision::fp16: bind_activations(s.a_fp16, s.acts, s.acts_bytes, dims); break;
  }
  const size_t N = dims.N;
  s.tokens.assign(N, 0);
  s.targets.assign(N, 0);
  s.ce_targets.assign(N, 0);
  s.valid.assign(N, 0);
}

Gpt::~Gpt() = default;

void Gpt::init_weights(uint64_t seed) {
  State& s = *s_;
  const float std_normal = 0.02f;
  const float std_residual = 0.02f / std::sqrt(2.0f * static_cast<float>(cfg_.n_layer));
  const size_t n_tensors = s.table.size();
  // Each tensor draws from its own stream (seed, 1 + index): tensors can be
  // filled in parallel and one tensor's values do not depend on the others'.
  // With TP > 1 every rank generates the whole global tensor from the same
  // stream and keeps its shard, so any TP degree starts from the same model.
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < n_tensors; ++i) {
    const ParamSpec& spec = s.table[i];
    const bool sharded = s.tp != nullptr && spec.tp_axis >= 0;
    std::vector<float> global;  // sharded tensors only (initialisation may allocate)
    size_t n_global = 1;
    for (int64_t d : spec.global_shape) n_global *= static_cast<size_t>(d);
    if (sharded) global.resize(n_global);
    float* w = sharded ? global.data() : s.pbase + spec.offset;
    size_t n = n_global;
    if (spec.name == "wte.weight" || spec.name == "lm_head.weight") {  // real vocabulary rows only; padded rows stay zero
      n = static_cast<size_t>(cfg_.vocab_size) * cfg_.n_embd;
      std::memset(w + n, 0, (n_global - n) * sizeof(float));
    }
    Rng rng(seed, 1 + i);
    switch (s.init[i]) {
      case Init::kNormal:
        for (size_t j = 0; j < n; ++j) w[j] = std_normal * rng.normal();
        break;
      case Init::kResidualNormal:
        for (size_t j = 0; j < n; ++j) w[j] = std_residual * rng.normal();
        break;
      case Init::kZero:
        std::memset(w, 0, n * sizeof(float));
        break;
      case Init::kOne:
        for (size_t j = 0; j < n; ++j) w[j] = 1.0f;
        break;
    }
    if (sharded)
      nn::slice_shard(nn::ShardSpec{spec.global_shape, spec.tp_axis, spec.tp_parts}, s.tp_rank, s.tp_size,
                      global.data(), s.pbase + spec.offset);
  }
}

std::span<float> Gpt::params() {
  s_->compute_stale = true;  // the caller may write the masters
  return {s_->pbase, s_->n_params};
}
std::span<const float> Gpt::master_params() const { return {s_->pbase, s_->n_params}; }
const CrossAttentionConfig& Gpt::cross_config() const { return s_->cross; }
void Gpt::set_per_sequence_mean(bool on) { s_->per_sequence = on; }

void Gpt::set_cross_attention_bias_heads(int n_heads) {
  State& s = *s_;
  CHORUS_CHECK(s.cross.enabled(), "Gpt::set_cross_attention_bias_heads: this GPT has no cross-attention");
  CHORUS_CHECK(n_heads >= 0 && n_heads <= cfg_.n_head, "cross-attention bias heads: %d outside [0, n_head = %d]",
               n_heads, cfg_.n_head);
  s.bias_head_w.assign(s.n_head_local, 0.0f);
  for (int h = 0; h < s.n_head_local; ++h)
    if (s.tp_rank * s.n_head_local + h < n_heads) s.bias_head_w[h] = 1.0f;
}

void Gpt::set_cross_attention_bias(const float* bias) {
  CHORUS_CHECK(bias == nullptr || !s_->bias_head_w.empty(),
               "Gpt::set_cross_attention_bias: call set_cross_attention_bias_heads first");
  s_->bias_next = bias;
}

void Gpt::set_decode_bias(const float* bias) {
  CHORUS_CHECK(bias == nullptr || !s_->bias_head_w.empty(),
               "Gpt::set_decode_bias: call set_cross_attention_bias_heads first");
  s_->bias_decode = bias;
}

void Gpt::adopt_storage(float* params, float* grads) {
  adopt_param_storage(*s_, params, grads, [&](auto* base) { return make_view(base, s_->table, cfg_.n_layer); });
}

void Gpt::set_memory(const void* memory, const int* mem_len, int S) {
  State& s = *s_;
  CHORUS_CHECK(s.cross.enabled(), "Gpt::set_memory: this GPT has no cross-attention");
  CHORUS_CHECK(memory != nullptr, "Gpt::set_memory: memory is null");
  CHORUS_CHECK(S > 0 && S <= s.cross.max_len, "Gpt::set_memory: S = %d outside [1, max_len = %d]", S,
               s.cross.max_len);
  s.mem = memory;
  s.S = S;
  s.mem_len = mem_len;
}

const void* Gpt::memory_grad() const {
  const State& s = *s_;
  CHORUS_CHECK(s.cross.enabled(), "Gpt::memory_grad: this GPT has no cross-attention");
  switch (s.precision) {
    case Precision::bf16: return s.a_bf16.dmem;
    case Precision::fp16: return s.a_fp16.dmem;
    case Precision::fp32: break;
  }
  return s.a_f32.dmem;
}
Precision Gpt::precision() const { return s_->precision; }

void Gpt::refresh_compute_weights() {
  State& s = *s_;
  if (s.precision == Precision::bf16) convert(s.p_bf16.wte, s.pbase, s.n_params);
  if (s.precision == Precision::fp16) convert(s.p_fp16.wte, s.pbase, s.n_params);
  s.compute_stale = false;
}
std::span<float> Gpt::grads() { return {s_->gbase, s_->n_params}; }
const std::vector<ParamSpec>& Gpt::param_table() const { return s_->table; }
size_t Gpt::n_params() const { return s_->n_params; }
int Gpt::tp_size() const { return s_->tp_size; }
int Gpt::tp_rank() const { return s_->tp_rank; }
int Gpt::vocab_begin() const { return s_->vocab.begin; }
int Gpt::local_vocab() const { return s_->vocab.size; }

namespace {

// Parameters for FLOP accounting (Gpt::n_flop_params) from a table's global shapes.
size_t flop_params(const std::vector<ParamSpec>& table, const GptConfig& cfg) {
  size_t n_global = 0;  // the whole model's parameters, whatever this rank holds
  for (const ParamSpec& p : table) {
    size_t n = 1;
    for (int64_t d : p.global_shape) n *= static_cast<size_t>(d);
    n_global += n;
  }
  const size_t C = cfg.n_embd;
  const size_t vocab_tables = cfg.tied_head ? 1 : 2;
  return n_global - vocab_tables * static_cast<size_t>(cfg.padded_vocab() - cfg.vocab_size) * C -
         (cfg.pos == PosKind::learned ? static_cast<size_t>(cfg.context) * C : 0);
}

double flops_per_token_of(size_t n_flop_params, const GptConfig& cfg, int T) {
  return 6.0 * static_cast<double>(n_flop_params) +
         12.0 * cfg.n_layer * static_cast<double>(cfg.n_embd) * static_cast<double>(T);
}

}  // namespace

size_t Gpt::n_flop_params() const { return flop_params(s_->table, cfg_); }

double Gpt::flops_per_token(int T) const { return flops_per_token_of(n_flop_params(), cfg_, T); }

size_t Gpt::activation_bytes() const { return s_->acts_bytes; }

GptMemory Gpt::memory() const {
  const State& s = *s_;
  GptMemory m = param_memory(s.n_params, s.precision);
  m.activation_bytes = s.acts_bytes;
  m.kv_cache_bytes = s.cache.size() * sizeof(float);
  return m;
}

GptMemory gpt_memory(const GptConfig& cfg, int max_batch, int max_seq, int tp_size, Precision precision,
                     CrossAttentionConfig cross) {
  check_shape(cfg, max_batch, max_seq, cross);
  CHORUS_CHECK(tp_size >= 1, "Gpt: TP must be >= 1, got %d", tp_size);
  const LocalWidths w = local_widths(cfg, tp_size);
  GptMemory m = param_memory(build_table(cfg, tp_size, cross).n_params, precision);
  m.activation_bytes = activation_bytes_for(precision, act_dims(cfg, max_batch, max_seq, w, tp_size, cross));
  return m;
}

size_t gpt_flop_params(const GptConfig& cfg, CrossAttentionConfig cross) {
  cfg.validate();
  return flop_params(build_table(cfg, 1, cross).specs, cfg);
}

double gpt_flops_per_token(const GptConfig& cfg, int T, CrossAttentionConfig cross) {
  return flops_per_token_of(gpt_flop_params(cfg, cross), cfg, T);
}

float Gpt::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  State& s = *s_;
  CHORUS_CHECK(tokens != nullptr, "Gpt::forward: tokens is null");
  CHORUS_CHECK(B > 0 && B <= s.max_batch, "Gpt::forward: B = %d outside [1, max_batch = %d]", B, s.max_batch);
  CHORUS_CHECK(T > 0 && T <= s.max_seq, "Gpt::forward: T = %d outside [1, max_seq = %d]", T, s.max_seq);
  const int N = B * T;
  check_tokens(tokens, N, cfg_.vocab_size, "tokens");
  if (targets != nullptr) check_tokens(targets, N, cfg_.vocab_size, "targets", /*allow_ignore=*/true);
  if (s.cross.enabled()) {
    CHORUS_CHECK(s.mem != nullptr, "Gpt::forward: a cross-attention model needs set_memory() first");
    s.mem_len_copy.assign(B, s.S);
    for (int b = 0; b < B && s.mem_len; ++b) {
      CHORUS_CHECK(s.mem_len[b] >= 1 && s.mem_len[b] <= s.S, "Gpt::forward: mem_len[%d] = %d outside [1, %d]", b,
                   s.mem_len[b], s.S);
      s.mem_len_copy[b] = s.mem_len[b];
    }
  }
  s.bias_fwd = s.cross.enabled() ? s.bias_next : nullptr;
  s.bias_next = nullptr;
  std::memcpy(s.tokens.data(), tokens, N * sizeof(int32_t));
  if (targets != nullptr) std::memcpy(s.targets.data(), targets, N * sizeof(int32_t));
  s.B = B;
  s.T = T;
  s.backward_ready = false;
  if (s.compute_stale) refresh_compute_weights();
  switch (s.precision) {
    case Precision::bf16: return forward_typed<bf16>(targets != nullptr);
    case Precision::fp16: return forward_typed<fp16>(targets != nullptr);
    case Precision::fp32: break;
  }
  return forward_typed<float>(targets != nullptr);
}

template <typename T>
float Gpt::forward_typed(bool with_targets) {
  State& s = *s_;
  const auto [B, Tn, N, C, NHl, Cl, Fl, Vl] = s.shape(cfg_);
  const ModelView<T>& p = s.weights_of<T>();
  Acts<T>& A = s.acts_of<T>();

  // Every activation that enters a LayerNorm or the residual stream is
  // replicated (identical on every TP rank); qkv, atty, fch are local columns.
  nn::vocab_parallel_embedding_forward(A.encoded, s.tokens.data(), p.wte, p.wpe, s.vocab, B, Tn, C, s.tp);
  const T* x = A.encoded;  // (B, T, C) residual stream entering the block
  const NormKind nk = cfg_.norm;
  const nn::QkTransform tf = qk_transform_of(cfg_);
  const int Fo = cfg_.mlp == MlpKind::swiglu ? 2 * Fl : Fl;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerView<T>& w = p.layers[l];
    const LayerActs<T>& a = A.layers[l];
    norm_forward(nk, a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b, N, C);
    nn::column_parallel_forward(a.qkv, a.ln1, w.attn_w, w.attn_b, N, C, 3 * Cl);
    if (tf.any()) nn::qk_transform_forward(a.qkv, a.qk_rstd, B, Tn, Cl, NHl, tf);  // the local heads
    if (cfg_.flash_attention)  // the local heads only
      nn::flash_attention_forward(a.atty, a.lse, a.qkv, B, Tn, Cl, NHl);
    else
      nn::attention_forward(a.atty, a.att, a.qkv, B, Tn, Cl, NHl);
    nn::row_parallel_forward(a.res2, a.atty, w.proj_w, w.proj_b, N, Cl, C, /*residual=*/x, s.tp);
    const T* h = a.res2;  // the stream entering the MLP sub-block
    if (s.cross.enabled()) {
      const T* mem = static_cast<const T*>(s.mem);
      const int NS = B * s.S, Ca = s.cross.n_state;
      norm_forward(nk, a.lnx, a.lnx_mean, a.lnx_rstd, a.res2, w.lnx_w, w.lnx_b, N, C);
      nn::column_parallel_forward(a.xq, a.lnx, w.xq_w, w.xq_b, N, C, Cl);
      nn::column_parallel_forward(a.xkv, mem, w.xkv_w, w.xkv_b, NS, Ca, 2 * Cl);
      const nn::AttentionBias bias{s.bias_fwd, s.bias_head_w.data()};
      nn::mha_forward(a.xy, a.xatt, a.xq, Cl, a.xkv, a.xkv + Cl, 2 * static_cast<size_t>(Cl),
                      s.mem_len_copy.data(), B, Tn, s.S, Cl, NHl, /*causal=*/false,
                      s.bias_fwd != nullptr ? &bias : nullptr);
      nn::row_parallel_forward(a.resx, a.xy, w.xproj_w, w.xproj_b, N, Cl, C, /*residual=*/a.res2, s.tp);
      h = a.resx;
    }
    norm_forward(nk, a.ln2, a.ln2_mean, a.ln2_rstd, h, w.ln2_w, w.ln2_b, N, C);
    nn::column_parallel_forward(a.fch, a.ln2, w.fc_w, w.fc_b, N, C, Fo);
    mlp_activation_forward(cfg_.mlp, a.fch_gelu, a.fch, N, Fl);
    nn::row_parallel_forward(a.res3, a.fch_gelu, w.fcproj_w, w.fcproj_b, N, Fl, C, /*residual=*/h, s.tp);
    x = a.res3;
  }
  norm_forward(nk, A.lnf, A.lnf_mean, A.lnf_rstd, x, p.lnf_w, p.lnf_b, N, C);
  // LM head (the vocab-parallel wte, or lm_head when untied): this rank's (N, Vl) columns only.
  nn::column_parallel_forward<T>(A.logits, A.lnf, p.lm_head, nullptr, N, C, Vl);
  if (cfg_.logit_softcap > 0.0f) nn::softcap_forward(A.logits, static_cast<size_t>(N) * Vl, cfg_.logit_softcap);
  if (!with_targets) return 0.0f;
  // Ignored targets (-1) are computed as token 0 and masked out of the loss
  // here and of the gradient in backward.
  s.n_valid = 0;
  for (int i = 0; i < N; ++i) {
    s.valid[i] = s.targets[i] >= 0;
    s.n_valid += s.valid[i];
    s.ce_targets[i] = s.valid[i] ? s.targets[i] : 0;
  }
  nn::vocab_parallel_cross_entropy_forward(A.losses, A.lse, A.ce_stats, A.logits, s.ce_targets.data(), N, s.vocab,
                                           s.tp);
  for (int i = 0; i < N; ++i)
    if (!s.valid[i]) A.losses[i] = 0.0f;
  s.backward_ready = true;
  if (s.per_sequence) {
    s.row_scale.assign(N, 0.0f);
    double total = 0.0;
    for (int b = 0; b < B; ++b) {
      int n = 0;
      for (int t = 0; t < Tn; ++t) n += s.valid[b * Tn + t];
      if (n == 0) continue;
      double seq = 0.0;
      for (int t = 0; t < Tn; ++t) {
        seq += A.losses[b * Tn + t];
        if (s.valid[b * Tn + t]) s.row_scale[b * Tn + t] = 1.0f / (static_cast<float>(B) * n);
      }
      total += seq / n;
    }
    return static_cast<float>(total / B);
  }
  return s.n_valid == 0 ? 0.0f : static_cast<float>(cpu::sum_double(A.losses, N) / s.n_valid);
}

const float* Gpt::logits() const {
  CHORUS_CHECK(s_->precision == Precision::fp32,
               "Gpt::logits: the logits are %s in this model; use logits_f32()", precision_name(s_->precision));
  return s_->a_f32.logits;
}

void Gpt::logits_f32(float* out) const {
  const State& s = *s_;
  const size_t n = static_cast<size_t>(s.B) * s.T * s.vocab.size;
  switch (s.precision) {
    case Precision::fp32: convert(out, s.a_f32.logits, n); break;
    case Precision::bf16: convert(out, s.a_bf16.logits, n); break;
    case Precision::fp16: convert(out, s.a_fp16.logits, n); break;
  }
}

void Gpt::backward(float loss_scale) {
  State& s = *s_;
  CHORUS_CHECK(s.backward_ready,
               "Gpt::backward: needs a forward with targets first, and runs once per forward (it reuses the "
               "logits buffer)");
  s.backward_ready = false;
  switch (s.precision) {
    case Precision::bf16: backward_typed<bf16>(loss_scale); return;
    case Precision::fp16: backward_typed<fp16>(loss_scale); return;
    case Precision::fp32: backward_typed<float>(loss_scale); return;
  }
}

template <typename T>
void Gpt::backward_typed(float loss_scale) {
  State& s = *s_;
  const auto [B, Tn, N, C, NHl, Cl, Fl, Vl] = s.shape(cfg_);
  const ModelView<T>& p = s.weights_of<T>();
  Acts<T>& A = s.acts_of<T>();

  // Mean over N positions, times the caller's scale. dlogits overwrite logits.
  T* dlogits = A.logits;
  nn::vocab_parallel_cross_entropy_backward(dlogits, A.logits, A.lse, s.ce_targets.data(),
                                            s.per_sequence ? loss_scale : loss_scale / std::max(1, s.n_valid), N,
                                            s.vocab, cfg_.logit_softcap);
  if (s.per_sequence) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
      T* row = dlogits + static_cast<size_t>(i) * Vl;
      const float w = s.row_scale[i];
      for (int v = 0; v < Vl; ++v) row[v] = from_f32<T>(to_f32(row[v]) * w);
    }
  }
  if (s.n_valid < N)
    for (int i = 0; i < N; ++i)
      if (!s.valid[i]) std::memset(static_cast<void*>(dlogits + static_cast<size_t>(i) * Vl), 0, Vl * sizeof(T));
  nn::column_parallel_backward(A.dln, s.g.lm_head, nullptr, dlogits, A.lnf, p.lm_head, N, C, Vl, s.tp);
  const T* x_last = A.layers.back().res3;
  const NormKind nk = cfg_.norm;
  const nn::QkTransform tf = qk_transform_of(cfg_);
  const int Fo = cfg_.mlp == MlpKind::swiglu ? 2 * Fl : Fl;
  T* dact = cfg_.mlp == MlpKind::swiglu ? A.dact : A.dfch;  // d(activation output)
  norm_backward<T>(nk, A.dres, s.g.lnf_w, s.g.lnf_b, A.dln, x_last, p.lnf_w, A.lnf_mean, A.lnf_rstd, N, C, nullptr);

  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const LayerView<T>& w = p.layers[l];
    const LayerView<float>& g = s.g.layers[l];
    const LayerActs<T>& a = A.layers[l];
    const T* x = l == 0 ? A.encoded : A.layers[l - 1].res3;
    // A.dres holds d(res3); the MLP branch and the skip both receive it.
    // dres and dln are replicated (the column-parallel backward all-reduces dln).
    nn::row_parallel_backward(dact, g.fcproj_w, g.fcproj_b, A.dres, a.fch_gelu, w.fcproj_w, N, Fl, C);
    mlp_activation_backward<T>(cfg_.mlp, A.dfch, a.fch, dact, N, Fl);
    nn::column_parallel_backward(A.dln, g.fc_w, g.fc_b, A.dfch, a.ln2, w.fc_w, N, C, Fo, s.tp);
    const T* h = s.cross.enabled() ? a.resx : a.res2;
    norm_backward<T>(nk, A.dres, g.ln2_w, g.ln2_b, A.dln, h, w.ln2_w, a.ln2_mean, a.ln2_rstd, N, C,
                     /*dresidual=*/A.dres);  // now d(h)
    if (s.cross.enabled()) {
      const T* mem = static_cast<const T*>(s.mem);
      const int NS = B * s.S, Ca = s.cross.n_state;
      const size_t kv_stride = 2 * static_cast<size_t>(Cl);
      nn::row_parallel_backward(A.datty, g.xproj_w, g.xproj_b, A.dres, a.xy, w.xproj_w, N, Cl, C);
      nn::mha_backward(A.dqkv, Cl, A.dxkv, A.dxkv + Cl, kv_stride, A.datty, a.xq, Cl, a.xkv, a.xkv + Cl, kv_stride,
                       a.xatt, s.mem_len_copy.data(), B, Tn, s.S, Cl, NHl, /*causal=*/false);
      nn::column_parallel_backward(A.dln, g.xq_w, g.xq_b, A.dqkv, a.lnx, w.xq_w, N, C, Cl, s.tp);
      // d memory: every layer's k|v projection contributes.
      T* dmem = l == cfg_.n_layer - 1 ? A.dmem : A.dmem_part;
      nn::column_parallel_backward(dmem, g.xkv_w, g.xkv_b, A.dxkv, mem, w.xkv_w, NS, Ca, 2 * Cl, s.tp);
      if (dmem != A.dmem) add_into(A.dmem, A.dmem_part, static_cast<size_t>(NS) * Ca);
      norm_backward<T>(nk, A.dres, g.lnx_w, g.lnx_b, A.dln, a.res2, w.lnx_w, a.lnx_mean, a.lnx_rstd, N, C,
                       /*dresidual=*/A.dres);  // now d(res2)
    }
    nn::row_parallel_backward(A.datty, g.proj_w, g.proj_b, A.dres, a.atty, w.proj_w, N, Cl, C);
    if (cfg_.flash_attention)
      nn::flash_attention_backward<T>(A.dqkv, A.datty, a.qkv, a.atty, a.lse, B, Tn, Cl, NHl);
    else
      nn::attention_backward<T>(A.dqkv, A.datty, a.qkv, a.att, B, Tn, Cl, NHl);
    if (tf.any()) nn::qk_transform_backward(A.dqkv, a.qkv, a.qk_rstd, B, Tn, Cl, NHl, tf);
    nn::column_parallel_backward(A.dln, g.attn_w, g.attn_b, A.dqkv, a.ln1, w.attn_w, N, C, 3 * Cl, s.tp);
    norm_backward<T>(nk, A.dres, g.ln1_w, g.ln1_b, A.dln, x, w.ln1_w, a.ln1_mean, a.ln1_rstd, N, C,
                     /*dresidual=*/A.dres);  // now d(x)
  }
  nn::vocab_parallel_embedding_backward<T>(s.g.wte, s.g.wpe, A.dres, s.tokens.data(), s.vocab, B, Tn, C);
}

void Gpt::zero_grad() { cpu::fill(s_->gbase, 0.0f, s_->n_params); }

void Gpt::reset_cache(int B) {
  State& s = *s_;
  CHORUS_CHECK(
      s.tp == nullptr,
      "generate runs on one rank: this model is a TP = %d shard; load the consolidated weights into a "
      "model built without a TP group",
      s.tp_size);
  CHORUS_CHECK(B > 0, "Gpt::reset_cache: B must be > 0, got %d", B);
  if (B != s.cache_B) {
    const size_t L = cfg_.n_layer, C = cfg_.n_embd, ctx = cfg_.context, Vp = cfg_.padded_vocab();
    const size_t NH = cfg_.n_head, b = B;
    cpu::Arena arena;
    arena.add(&s.k_cache, L * b * ctx * C);
    arena.add(&s.v_cache, L * b * ctx * C);
    arena.add(&s.dec_x, b * C);
    arena.add(&s.dec_ln, b * C);
    arena.add(&s.dec_mean, b);
    arena.add(&s.dec_rstd, b);
    arena.add(&s.dec_qkv, b * 3 * C);
    arena.add(&s.dec_y, b * C);
    arena.add(&s.dec_fch, b * static_cast<size_t>(cfg_.mlp_fc_width()));
    arena.add(&s.dec_act, b * static_cast<size_t>(cfg_.mlp_hidden()));
    arena.add(&s.dec_qk_rstd, b * 2 * NH);
    arena.add(&s.dec_logits, b * Vp);
    arena.add(&s.dec_scores, b * NH * std::max<size_t>(ctx, s.cross.max_len));
    if (s.cross.enabled()) {
      arena.add(&s.dec_q, b * C);
      arena.add(&s.x_kv, L * b * s.cross.max_len * 2 * C);
    }
    s.cache = cpu::AlignedBuffer();  // free the old one first
    s.cache = cpu::AlignedBuffer((arena.bytes() + sizeof(float) - 1) / sizeof(float));
    arena.bind(s.cache.data());
    s.cache_B = B;
  }
  s.n_cached = 0;
  s.dec_S = 0;
}

void Gpt::set_decode_memory(const float* memory, const int* mem_len, int S) {
  State& s = *s_;
  CHORUS_CHECK(s.cross.enabled(), "Gpt::set_decode_memory: this GPT has no cross-attention");
  CHORUS_CHECK(s.cache_B > 0, "Gpt::set_decode_memory: call reset_cache(B) first");
  CHORUS_CHECK(S > 0 && S <= s.cross.max_len, "Gpt::set_decode_memory: S = %d outside [1, max_len = %d]", S,
               s.cross.max_len);
  const int B = s.cache_B, C = cfg_.n_embd, Ca = s.cross.n_state;
  s.dec_S = S;
  s.dec_mem_len.assign(B, S);
  for (int b = 0; b < B && mem_len; ++b) {
    CHORUS_CHECK(mem_len[b] >= 1 && mem_len[b] <= S, "Gpt::set_decode_memory: mem_len[%d] = %d outside [1, %d]",
                 b, mem_len[b], S);
    s.dec_mem_len[b] = mem_len[b];
  }
  const size_t layer_stride = static_cast<size_t>(B) * s.cross.max_len * 2 * C;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerView<float>& w = s.p.layers[l];
    float* kv = s.x_kv + l * layer_stride;  // (B, max_len, 2C), sequence b at b * max_len rows
    for (int b = 0; b < B; ++b)
      nn::matmul_forward(kv + static_cast<size_t>(b) * s.cross.max_len * 2 * C,
                         memory + static_cast<size_t>(b) * S * Ca, w.xkv_w, w.xkv_b, S, Ca, 2 * C);
  }
}

void Gpt::reorder_cache(const int* src) {
  State& s = *s_;
  CHORUS_CHECK(s.cache_B > 0, "Gpt::reorder_cache: call reset_cache(B) first");
  const int B = s.cache_B, C = cfg_.n_embd;
  for (int b = 0; b < B; ++b)
    CHORUS_CHECK(src[b] >= 0 && src[b] < B, "Gpt::reorder_cache: src[%d] = %d outside [0, %d)", b, src[b], B);
  const size_t ctx = cfg_.context;
  // Gathers rows of `rows` floats per sequence into a copy, then back.
  auto gather = [&](float* base, size_t seq_stride, size_t rows, size_t n_layers, size_t layer_stride) {
    std::vector<float> tmp(static_cast<size_t>(B) * rows);
    for (size_t l = 0; l < n_layers; ++l) {
      float* layer = base + l * layer_stride;
      for (int b = 0; b < B; ++b)
        std::memcpy(tmp.data() + b * rows, layer + static_cast<size_t>(src[b]) * seq_stride, rows * sizeof(float));
      for (int b = 0; b < B; ++b)
        std::memcpy(layer + static_cast<size_t>(b) * seq_stride, tmp.data() + b * rows, rows * sizeof(float));
    }
  };
  const size_t self_stride = static_cast<size_t>(B) * ctx * C;
  gather(s.k_cache, ctx * C, static_cast<size_t>(s.n_cached) * C, cfg_.n_layer, self_stride);
  gather(s.v_cache, ctx * C, static_cast<size_t>(s.n_cached) * C, cfg_.n_layer, self_stride);
  if (s.cross.enabled() && s.dec_S > 0) {
    const size_t seq = static_cast<size_t>(s.cross.max_len) * 2 * C;
    gather(s.x_kv, seq, static_cast<size_t>(s.dec_S) * 2 * C, cfg_.n_layer, static_cast<size_t>(B) * seq);
    std::vector<int> len(B);
    for (int b = 0; b < B; ++b) len[b] = s.dec_mem_len[src[b]];
    s.dec_mem_len = len;
  }
}

void Gpt::set_decode_weights(nn::DecodeWeights format) {
  State& s = *s_;
  s.dec_packed.clear();
  s.dec_lm_head = nn::PackedWeight();
  s.dec_wte = nn::PackedWeight();
  if (format == nn::DecodeWeights::fp32) return;
  CHORUS_CHECK(s.precision == Precision::fp32, "Gpt::set_decode_weights: decoding runs fp32 models, this one is %s",
               precision_name(s.precision));
  CHORUS_CHECK(s.tp == nullptr, "generate runs on one rank: this model is a TP = %d shard", s.tp_size);
  const int C = cfg_.n_embd;
  const auto pack = [&](const float* W, int rows, int cols) { return nn::pack_weight(W, rows, cols, format); };
  s.dec_packed.resize(cfg_.n_layer);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerView<float>& w = s.p.layers[l];
    State::PackedLayer& q = s.dec_packed[l];
    q.attn = pack(w.attn_w, 3 * C, C);
    q.proj = pack(w.proj_w, C, C);
    if (s.cross.enabled()) {
      q.xq = pack(w.xq_w, C, C);
      q.xproj = pack(w.xproj_w, C, C);
    }
    q.fc = pack(w.fc_w, cfg_.mlp_fc_width(), C);
    q.fcproj = pack(w.fcproj_w, C, cfg_.mlp_hidden());
  }
  s.dec_lm_head = pack(s.p.lm_head, cfg_.padded_vocab(), C);
  if (!cfg_.tied_head) s.dec_wte = pack(s.p.wte, cfg_.padded_vocab(), C);
}

nn::DecodeWeights Gpt::decode_weights() const {
  return s_->dec_packed.empty() ? nn::DecodeWeights::fp32 : s_->dec_lm_head.format;
}

bool decode_int8_tensor(const std::string& name) {
  const auto ends = [&](const char* suffix) {
    const size_t n = std::strlen(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  if (name == "wte.weight" || name == "decoder.wte.weight" || name == "lm_head.weight" ||
      name == "decoder.lm_head.weight")
    return true;
  for (const char* s : {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight",
                        ".crossattn.q.weight", ".crossattn.c_proj.weight"})
    if (ends(s)) return name.compare(0, 2, "h.") == 0 || name.compare(0, 10, "decoder.h.") == 0;
  return false;
}

const float* Gpt::decode_step(const int32_t* tokens, int pos) {
  State& s = *s_;
  CHORUS_CHECK(s.tp == nullptr, "generate runs on one rank: this model is a TP = %d shard", s.tp_size);
  CHORUS_CHECK(s.cache_B > 0, "Gpt::decode_step: call reset_cache(B) first");
  CHORUS_CHECK(tokens != nullptr, "Gpt::decode_step: tokens is null");
  CHORUS_CHECK(!s.cross.enabled() || s.dec_S > 0, "Gpt::decode_step: call set_decode_memory() first");
  CHORUS_CHECK(pos >= 0 && pos < cfg_.context, "Gpt::decode_step: pos = %d outside [0, context = %d)", pos,
               cfg_.context);
  CHORUS_CHECK(pos <= s.n_cached, "Gpt::decode_step: pos = %d but only positions [0, %d) are cached", pos,
               s.n_cached);
  const int B = s.cache_B, C = cfg_.n_embd, NH = cfg_.n_head, Vp = cfg_.padded_vocab();
  const int F = cfg_.mlp_hidden(), Fo = cfg_.mlp_fc_width();
  const NormKind nk = cfg_.norm;
  const nn::QkTransform tf = qk_transform_of(cfg_);
  check_tokens(tokens, B, cfg_.vocab_size, "tokens");
  const size_t ctx = cfg_.context;
  const size_t layer_stride = static_cast<size_t>(B) * ctx * C;

  // y = x W^T + b (+ residual) for the B rows: through the packed copy when
  // set_decode_weights made one, else the fp32 weight.
  const bool packed = !s.dec_packed.empty();
  const auto linear = [&](float* out, const float* in, const float* w, const nn::PackedWeight& wq, const float* b,
                          int in_dim, int out_dim, const float* residual) {
    if (packed) nn::matmul_forward_packed(out, in, wq, b, B, residual);
    else nn::matmul_forward(out, in, w, b, B, in_dim, out_dim, residual);
  };
  static const State::PackedLayer kNone;

  // (B, 1) sequence at position pos: wpe row pos (none with rotary
  // positions). With packed weights the token rows are wte's unpacked rows
  // (tied: the LM head's; the model decodes as its packed copy would,
  // wherever it came from).
  const float* wpe_row = s.p.wpe != nullptr ? s.p.wpe + static_cast<size_t>(pos) * C : nullptr;
  if (packed) {
    const nn::PackedWeight& emb = cfg_.tied_head ? s.dec_lm_head : s.dec_wte;
    for (int b = 0; b < B; ++b) {
      float* x = s.dec_x + static_cast<size_t>(b) * C;
      emb.row(tokens[b], x);
      if (wpe_row != nullptr)
        for (int c = 0; c < C; ++c) x[c] += wpe_row[c];
    }
  } else {
    nn::embedding_forward<float>(s.dec_x, tokens, s.p.wte, wpe_row, B, 1, C);
  }
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerView<float>& w = s.p.layers[l];
    const State::PackedLayer& q = packed ? s.dec_packed[l] : kNone;
    float* kc = s.k_cache + l * layer_stride;
    float* vc = s.v_cache + l * layer_stride;
    norm_forward(nk, s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, w.ln1_w, w.ln1_b, B, C);
    linear(s.dec_qkv, s.dec_ln, w.attn_w, q.attn, w.attn_b, C, 3 * C, nullptr);
    if (tf.any()) nn::qk_transform_forward(s.dec_qkv, s.dec_qk_rstd, B, 1, C, NH, tf, pos);
    for (int b = 0; b < B; ++b) {
      const float* row = s.dec_qkv + static_cast<size_t>(b) * 3 * C;
      const size_t at = (static_cast<size_t>(b) * ctx + pos) * C;
      std::memcpy(kc + at, row + C, C * sizeof(float));
      std::memcpy(vc + at, row + 2 * C, C * sizeof(float));
    }
    nn::attention_decode(s.dec_y, s.dec_scores, s.dec_qkv, 3 * static_cast<size_t>(C), kc, vc, ctx * C, B,
                         pos + 1, C, NH);
    linear(s.dec_x, s.dec_y, w.proj_w, q.proj, w.proj_b, C, C, /*residual=*/s.dec_x);
    if (s.cross.enabled()) {
      const size_t seq = static_cast<size_t>(s.cross.max_len) * 2 * C;
      const float* kv = s.x_kv + l * static_cast<size_t>(B) * seq;
      norm_forward(nk, s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, w.lnx_w, w.lnx_b, B, C);
      linear(s.dec_q, s.dec_ln, w.xq_w, q.xq, w.xq_b, C, C, nullptr);
      const nn::AttentionBias bias{s.bias_decode, s.bias_head_w.data()};
      nn::mha_decode(s.dec_y, s.dec_scores, s.dec_q, C, kv, kv + C, 2 * static_cast<size_t>(C), seq,
                     s.dec_mem_len.data(), B, s.dec_S, C, NH, s.bias_decode != nullptr ? &bias : nullptr);
      linear(s.dec_x, s.dec_y, w.xproj_w, q.xproj, w.xproj_b, C, C, /*residual=*/s.dec_x);
    }
    norm_forward(nk, s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, w.ln2_w, w.ln2_b, B, C);
    linear(s.dec_fch, s.dec_ln, w.fc_w, q.fc, w.fc_b, C, Fo, nullptr);
    float* act = cfg_.mlp == MlpKind::swiglu ? s.dec_act : s.dec_fch;
    mlp_activation_forward(cfg_.mlp, act, s.dec_fch, B, F);
    linear(s.dec_x, act, w.fcproj_w, q.fcproj, w.fcproj_b, F, C, /*residual=*/s.dec_x);
  }
  norm_forward(nk, s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, s.p.lnf_w, s.p.lnf_b, B, C);
  linear(s.dec_logits, s.dec_ln, s.p.lm_head, s.dec_lm_head, nullptr, C, Vp, nullptr);
  if (cfg_.logit_softcap > 0.0f) nn::softcap_forward(s.dec_logits, static_cast<size_t>(B) * Vp, cfg_.logit_softcap);
  s.n_cached = pos + 1;
  return s.dec_logits;
}

}  // namespace chorus::models
