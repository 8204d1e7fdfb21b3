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

#include <climits>
#include <cmath>
#include <cstring>

#include "backend/cpu/buffer.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include "nn/attention.h"
#include "nn/encoder.h"
#include "nn/gelu.h"
#include "nn/layernorm.h"
#include "nn/matmul.h"
#include "nn/parallel_linear.h"
#include "nn/tp_shard.h"
#include "nn/vocab_parallel.h"

namespace chorus::models {

namespace cpu = chorus::backend::cpu;

void GptConfig::validate() const {
  CHORUS_CHECK(n_layer > 0, "GptConfig.n_layer: must be > 0, got %d", n_layer);
  CHORUS_CHECK(n_embd > 0, "GptConfig.n_embd: must be > 0, got %d", n_embd);
  CHORUS_CHECK(n_head > 0, "GptConfig.n_head: must be > 0, got %d", n_head);
  CHORUS_CHECK(n_embd % n_head == 0, "GptConfig.n_head: n_embd (%d) must be divisible by n_head (%d)", n_embd,
               n_head);
  CHORUS_CHECK(vocab_size > 0, "GptConfig.vocab_size: must be > 0, got %d", vocab_size);
  CHORUS_CHECK(vocab_size <= INT_MAX - 64, "GptConfig.vocab_size: %d is too large", vocab_size);
  CHORUS_CHECK(context > 0, "GptConfig.context: must be > 0, got %d", context);
  CHORUS_CHECK(n_embd <= INT_MAX / 4, "GptConfig.n_embd: %d is too large", n_embd);
}

namespace {

// Per-layer tensors, in the order they appear in the parameter table.
enum LayerParam {
  kLn1W,
  kLn1B,
  kAttnW,
  kAttnB,
  kAttnProjW,
  kAttnProjB,
  kLn2W,
  kLn2B,
  kFcW,
  kFcB,
  kFcProjW,
  kFcProjB,
  kParamsPerLayer
};

// How init_weights fills a tensor (a tag in the table, not a name match).
enum class Init { kNormal, kResidualNormal, kZero, kOne };

// Pointers of one block's tensors into params() or grads().
// Shapes are global (TP = 1); with TP > 1 the local shard in brackets.
struct LayerView {
  float* ln1_w;     // (C)      h.{i}.ln_1.weight
  float* ln1_b;     // (C)      h.{i}.ln_1.bias
  float* attn_w;    // (3C, C)  [3Cl, C]  h.{i}.attn.c_attn.weight  column-parallel, q|k|v
  float* attn_b;    // (3C)     [3Cl]     h.{i}.attn.c_attn.bias
  float* proj_w;    // (C, C)   [C, Cl]   h.{i}.attn.c_proj.weight  row-parallel
  float* proj_b;    // (C)      h.{i}.attn.c_proj.bias
  float* ln2_w;     // (C)      h.{i}.ln_2.weight
  float* ln2_b;     // (C)      h.{i}.ln_2.bias
  float* fc_w;      // (4C, C)  [Fl, C]   h.{i}.mlp.c_fc.weight  column-parallel
  float* fc_b;      // (4C)     [Fl]      h.{i}.mlp.c_fc.bias
  float* fcproj_w;  // (C, 4C)  [C, Fl]   h.{i}.mlp.c_proj.weight  row-parallel
  float* fcproj_b;  // (C)      h.{i}.mlp.c_proj.bias
};

struct ModelView {
  float* wte = nullptr;  // (Vp, C) [Vl, C]  wte.weight, vocab-parallel (rows >= V stay zero)
  float* wpe = nullptr;  // (ctx, C)  wpe.weight
  std::vector<LayerView> layers;
  float* lnf_w = nullptr;  // (C)       ln_f.weight
  float* lnf_b = nullptr;  // (C)       ln_f.bias
};

// Saved forward activations of one block (pointers into the activation buffer).
struct LayerActs {
  float* ln1;       // (B, T, C)
  float* ln1_mean;  // (B, T)
  float* ln1_rstd;  // (B, T)
  float* qkv;       // (B, T, 3Cl) local heads' q | k | v
  float* atty;      // (B, T, Cl)  local heads' attention output before c_proj
  float* att;       // (B, NH/tp, T, T) softmax probabilities of the local heads
  float* res2;      // (B, T, C)   x + attn(ln_1(x))
  float* ln2;       // (B, T, C)
  float* ln2_mean;  // (B, T)
  float* ln2_rstd;  // (B, T)
  float* fch;       // (B, T, Fl)  c_fc output (local columns)
  float* fch_gelu;  // (B, T, Fl)
  float* res3;      // (B, T, C)   block output
};

}  // namespace

struct Gpt::State {
  int max_batch = 0;
  int max_seq = 0;
  // Tensor parallelism: tp == nullptr when the group is one rank.
  dist::Communicator* tp = nullptr;
  int tp_size = 1;
  int tp_rank = 0;
  int n_head_local = 0;  // NH / tp
  int attn_local = 0;    // Cl = C / tp
  int mlp_local = 0;     // Fl = 4C / tp
  nn::VocabRange vocab;  // this rank's rows of wte / columns of the logits
  std::vector<ParamSpec> table;
  std::vector<Init> init;  // one per table entry
  cpu::AlignedBuffer params;
  cpu::AlignedBuffer grads;
  ModelView p;  // views into params
  ModelView g;  // the same views into grads

  // Activation buffer, sized once for (max_batch, max_seq).
  cpu::AlignedBuffer acts;
  std::vector<LayerActs> layer_acts;
  float* encoded = nullptr;   // (B, T, C)
  float* lnf = nullptr;       // (B, T, C)
  float* lnf_mean = nullptr;  // (B, T)
  float* lnf_rstd = nullptr;  // (B, T)
  float* logits = nullptr;    // (B, T, Vl) local columns; backward overwrites it with dlogits
  float* losses = nullptr;    // (B, T)
  float* lse = nullptr;       // (B, T) log-sum-exp of each row of the (global) logits
  float* ce_stats = nullptr;  // (2, B, T) parallel cross-entropy scratch (TP > 1 only)
  // Backward scratch, reused by every layer.
  float* dres = nullptr;         // (B, T, C) residual-stream gradient
  float* dln = nullptr;          // (B, T, C) gradient at a layernorm output
  float* datty = nullptr;        // (B, T, Cl)
  float* dqkv = nullptr;         // (B, T, 3Cl)
  float* dfch = nullptr;         // (B, T, Fl)
  float* datt = nullptr;         // (B, NH/tp, T, T)
  std::vector<int32_t> tokens;   // (B, T) copy of the last forward's input
  std::vector<int32_t> targets;  // (B, T)
  int B = 0;
  int T = 0;
  bool backward_ready = false;  // a forward with targets whose logits are intact

  // KV cache and decode scratch (allocated by reset_cache).
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
  float* dec_fch = nullptr;     // (B, 4C)
  float* dec_logits = nullptr;  // (B, Vp)
  float* dec_scores = nullptr;  // (B, NH, ctx)
};

namespace {

ModelView make_view(float* base, const std::vector<ParamSpec>& table, int n_layer) {
  ModelView v;
  auto at = [&](size_t i) { return base + table[i].offset; };
  v.wte = at(0);
  v.wpe = at(1);
  v.layers.resize(n_layer);
  for (int l = 0; l < n_layer; ++l) {
    const size_t i = 2 + static_cast<size_t>(l) * kParamsPerLayer;
    LayerView& lv = v.layers[l];
    lv.ln1_w = at(i + kLn1W);
    lv.ln1_b = at(i + kLn1B);
    lv.attn_w = at(i + kAttnW);
    lv.attn_b = at(i + kAttnB);
    lv.proj_w = at(i + kAttnProjW);
    lv.proj_b = at(i + kAttnProjB);
    lv.ln2_w = at(i + kLn2W);
    lv.ln2_b = at(i + kLn2B);
    lv.fc_w = at(i + kFcW);
    lv.fc_b = at(i + kFcB);
    lv.fcproj_w = at(i + kFcProjW);
    lv.fcproj_b = at(i + kFcProjB);
  }
  const size_t f = 2 + static_cast<size_t>(n_layer) * kParamsPerLayer;
  v.lnf_w = at(f);
  v.lnf_b = at(f + 1);
  return v;
}

// Lays out named (pointer, numel) slots in one buffer, each slot starting on
// a 64-byte boundary.
class Arena {
 public:
  void add(float** slot, size_t numel) {
    slots_.push_back({slot, total_});
    total_ += (numel + 15) / 16 * 16;
  }
  size_t total() const { return total_; }
  void bind(float* base) const {
    for (const auto& s : slots_) *s.slot = base + s.offset;
  }

 private:
  struct Slot {
    float** slot;
    size_t offset;
  };
  std::vector<Slot> slots_;
  size_t total_ = 0;
};

void check_tokens(const int32_t* ids, size_t n, int vocab, const char* what) {
  for (size_t i = 0; i < n; ++i) {
    CHORUS_CHECK(ids[i] >= 0 && ids[i] < vocab, "Gpt: %s[%zu] = %d is outside the vocabulary [0, %d)", what,
                 i, ids[i], vocab);
  }
}

}  // namespace

Gpt::Gpt(const GptConfig& cfg, int max_batch, int max_seq) : Gpt(cfg, max_batch, max_seq, nullptr) {}

Gpt::Gpt(const GptConfig& cfg, int max_batch, int max_seq, dist::Communicator* tp)
    : cfg_(cfg), s_(std::make_unique<State>()) {
  cfg_.validate();
  CHORUS_CHECK(max_batch > 0, "Gpt: max_batch must be > 0, got %d", max_batch);
  CHORUS_CHECK(max_seq > 0 && max_seq <= cfg_.context, "Gpt: max_seq must be in [1, context = %d], got %d",
               cfg_.context, max_seq);
  State& s = *s_;
  s.max_batch = max_batch;
  s.max_seq = max_seq;

  const int64_t L = cfg_.n_layer, C = cfg_.n_embd, Vp = cfg_.padded_vocab(), ctx = cfg_.context;
  if (tp != nullptr && tp->size() > 1) {
    s.tp = tp;
    s.tp_size = tp->size();
    s.tp_rank = tp->rank();
  }
  const int n_tp = s.tp_size;
  CHORUS_CHECK(cfg_.n_head % n_tp == 0,
               "Gpt: TP = %d does not divide n_head = %d (heads are split across TP ranks)", n_tp,
               cfg_.n_head);
  CHORUS_CHECK(4 * C % n_tp == 0, "Gpt: TP = %d does not divide the MLP width 4 * n_embd = %lld", n_tp,
               static_cast<long long>(4 * C));
  CHORUS_CHECK(Vp % n_tp == 0, "Gpt: TP = %d does not divide the padded vocabulary %lld", n_tp,
               static_cast<long long>(Vp));
  s.n_head_local = cfg_.n_head / n_tp;
  s.attn_local = static_cast<int>(C / n_tp);
  s.mlp_local = static_cast<int>(4 * C / n_tp);
  s.vocab.size = static_cast<int>(Vp / n_tp);
  s.vocab.begin = s.tp_rank * s.vocab.size;
  s.vocab.vocab = cfg_.vocab_size;

  size_t offset = 0;
  // tp_axis / tp_parts describe the Megatron split (nn/tp_shard.h); `shape`,
  // `numel` and `offset` are this rank's shard (TP = 1: shape == global_shape).
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay, Init init, int tp_axis = -1,
                 int tp_parts = 1) {
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
    offset += spec.numel;
    s.table.push_back(std::move(spec));
    s.init.push_back(init);
  };
  // Table order = buffer order: embeddings, then each block's tensors
  // contiguously (a layer is one flat range), then the final LayerNorm.
  add("wte.weight", {Vp, C}, true, Init::kNormal, 0);  // vocab-parallel
  add("wpe.weight", {ctx, C}, true, Init::kNormal);
  for (int64_t l = 0; l < L; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    add(h + "ln_1.weight", {C}, false, Init::kOne);
    add(h + "ln_1.bias", {C}, false, Init::kZero);
    add(h + "attn.c_attn.weight", {3 * C, C}, true, Init::kNormal, 0, 3);  // column-parallel, q|k|v
    add(h + "attn.c_attn.bias", {3 * C}, false, Init::kZero, 0, 3);
    add(h + "attn.c_proj.weight", {C, C}, true, Init::kResidualNormal, 1);  // row-parallel
    add(h + "attn.c_proj.bias", {C}, false, Init::kZero);
    add(h + "ln_2.weight", {C}, false, Init::kOne);
    add(h + "ln_2.bias", {C}, false, Init::kZero);
    add(h + "mlp.c_fc.weight", {4 * C, C}, true, Init::kNormal, 0);  // column-parallel
    add(h + "mlp.c_fc.bias", {4 * C}, false, Init::kZero, 0);
    add(h + "mlp.c_proj.weight", {C, 4 * C}, true, Init::kResidualNormal, 1);  // row-parallel
    add(h + "mlp.c_proj.bias", {C}, false, Init::kZero);
  }
  add("ln_f.weight", {C}, false, Init::kOne);
  add("ln_f.bias", {C}, false, Init::kZero);

  s.params = cpu::AlignedBuffer(offset);
  s.grads = cpu::AlignedBuffer(offset);
  s.p = make_view(s.params.data(), s.table, cfg_.n_layer);
  s.g = make_view(s.grads.data(), s.table, cfg_.n_layer);

  // Activation table: every saved tensor and backward scratch, for (max_batch,
  // max_seq); the TP-split ones at their local width.
  const size_t N = static_cast<size_t>(max_batch) * max_seq;
  const size_t NHl = s.n_head_local, Cl = s.attn_local, Fl = s.mlp_local, Vl = s.vocab.size;
  const size_t att = static_cast<size_t>(max_batch) * NHl * max_seq * max_seq;
  Arena arena;
  s.layer_acts.resize(cfg_.n_layer);
  arena.add(&s.encoded, N * C);
  for (auto& la : s.layer_acts) {
    arena.add(&la.ln1, N * C);
    arena.add(&la.ln1_mean, N);
    arena.add(&la.ln1_rstd, N);
    arena.add(&la.qkv, N * 3 * Cl);
    arena.add(&la.atty, N * Cl);
    arena.add(&la.att, att);
    arena.add(&la.res2, N * C);
    arena.add(&la.ln2, N * C);
    arena.add(&la.ln2_mean, N);
    arena.add(&la.ln2_rstd, N);
    arena.add(&la.fch, N * Fl);
    arena.add(&la.fch_gelu, N * Fl);
    arena.add(&la.res3, N * C);
  }
  arena.add(&s.lnf, N * C);
  arena.add(&s.lnf_mean, N);
  arena.add(&s.lnf_rstd, N);
  arena.add(&s.logits, N * Vl);  // never (N, Vp) with TP > 1
  arena.add(&s.losses, N);
  arena.add(&s.lse, N);
  if (s.tp != nullptr) arena.add(&s.ce_stats, 2 * N);
  arena.add(&s.dres, N * C);
  arena.add(&s.dln, N * C);
  arena.add(&s.datty, N * Cl);
  arena.add(&s.dqkv, N * 3 * Cl);
  arena.add(&s.dfch, N * Fl);
  arena.add(&s.datt, att);
  s.acts = cpu::AlignedBuffer(arena.total());
  arena.bind(s.acts.data());
  s.tokens.assign(N, 0);
  s.targets.assign(N, 0);
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
    float* w = sharded ? global.data() : s.params.data() + spec.offset;
    size_t n = n_global;
    if (i == 0) {  // wte: real vocabulary rows only; padded rows stay zero
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
                      global.data(), s.params.data() + spec.offset);
  }
}

std::span<float> Gpt::params() { return {s_->params.data(), s_->params.size()}; }
std::span<float> Gpt::grads() { return {s_->grads.data(), s_->grads.size()}; }
const std::vector<ParamSpec>& Gpt::param_table() const { return s_->table; }
size_t Gpt::n_params() const { return s_->params.size(); }
int Gpt::tp_size() const { return s_->tp_size; }
int Gpt::tp_rank() const { return s_->tp_rank; }
int Gpt::vocab_begin() const { return s_->vocab.begin; }
int Gpt::local_vocab() const { return s_->vocab.size; }

size_t Gpt::n_flop_params() const {
  size_t n_global = 0;  // the whole model's parameters, whatever this rank holds
  for (const ParamSpec& p : s_->table) {
    size_t n = 1;
    for (int64_t d : p.global_shape) n *= static_cast<size_t>(d);
    n_global += n;
  }
  const size_t C = cfg_.n_embd;
  return n_global - static_cast<size_t>(cfg_.padded_vocab() - cfg_.vocab_size) * C -
         static_cast<size_t>(cfg_.context) * C;
}

double Gpt::flops_per_token(int T) const {
  return 6.0 * static_cast<double>(n_flop_params()) +
         12.0 * cfg_.n_layer * static_cast<double>(cfg_.n_embd) * static_cast<double>(T);
}

size_t Gpt::activation_bytes() const { return s_->acts.size() * sizeof(float); }

float Gpt::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  State& s = *s_;
  CHORUS_CHECK(tokens != nullptr, "Gpt::forward: tokens is null");
  CHORUS_CHECK(B > 0 && B <= s.max_batch, "Gpt::forward: B = %d outside [1, max_batch = %d]", B, s.max_batch);
  CHORUS_CHECK(T > 0 && T <= s.max_seq, "Gpt::forward: T = %d outside [1, max_seq = %d]", T, s.max_seq);
  const int C = cfg_.n_embd, V = cfg_.vocab_size;
  const int NHl = s.n_head_local, Cl = s.attn_local, Fl = s.mlp_local, Vl = s.vocab.size;
  const int N = B * T;
  check_tokens(tokens, N, V, "tokens");
  if (targets != nullptr) check_tokens(targets, N, V, "targets");
  std::memcpy(s.tokens.data(), tokens, N * sizeof(int32_t));
  if (targets != nullptr) std::memcpy(s.targets.data(), targets, N * sizeof(int32_t));
  s.B = B;
  s.T = T;
  s.backward_ready = false;

  // Every activation that enters a LayerNorm or the residual stream is
  // replicated (identical on every TP rank); qkv, atty, fch are local columns.
  nn::vocab_parallel_embedding_forward(s.encoded, s.tokens.data(), s.p.wte, s.p.wpe, s.vocab, B, T, C, s.tp);
  const float* x = s.encoded;  // (B, T, C) residual stream entering the block
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerView& w = s.p.layers[l];
    const LayerActs& a = s.layer_acts[l];
    nn::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b, N, C);
    nn::column_parallel_forward(a.qkv, a.ln1, w.attn_w, w.attn_b, N, C, 3 * Cl);
    nn::attention_forward(a.atty, a.att, a.qkv, B, T, Cl, NHl);  // the local heads only
    nn::row_parallel_forward(a.res2, a.atty, w.proj_w, w.proj_b, N, Cl, C, /*residual=*/x, s.tp);
    nn::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, w.ln2_w, w.ln2_b, N, C);
    nn::column_parallel_forward(a.fch, a.ln2, w.fc_w, w.fc_b, N, C, Fl);
    nn::gelu_forward(a.fch_gelu, a.fch, static_cast<size_t>(N) * Fl);
    nn::row_parallel_forward(a.res3, a.fch_gelu, w.fcproj_w, w.fcproj_b, N, Fl, C, /*residual=*/a.res2, s.tp);
    x = a.res3;
  }
  nn::layernorm_forward(s.lnf, s.lnf_mean, s.lnf_rstd, x, s.p.lnf_w, s.p.lnf_b, N, C);
  // LM head tied to the vocab-parallel wte: this rank's (N, Vl) columns only.
  nn::column_parallel_forward(s.logits, s.lnf, s.p.wte, nullptr, N, C, Vl);
  if (targets == nullptr) return 0.0f;
  nn::vocab_parallel_cross_entropy_forward(s.losses, s.lse, s.ce_stats, s.logits, s.targets.data(), N,
                                           s.vocab, s.tp);
  s.backward_ready = true;
  return static_cast<float>(cpu::sum_double(s.losses, N) / N);
}

const float* Gpt::logits() const { return s_->logits; }

void Gpt::backward(float loss_scale) {
  State& s = *s_;
  CHORUS_CHECK(s.backward_ready,
               "Gpt::backward: needs a forward with targets first, and runs once per forward (it reuses the "
               "logits buffer)");
  s.backward_ready = false;
  const int B = s.B, T = s.T, N = B * T;
  const int C = cfg_.n_embd;
  const int NHl = s.n_head_local, Cl = s.attn_local, Fl = s.mlp_local, Vl = s.vocab.size;

  // Mean over N positions, times the caller's scale. dlogits overwrite logits.
  float* dlogits = s.logits;
  nn::vocab_parallel_cross_entropy_backward(dlogits, s.logits, s.lse, s.targets.data(), loss_scale / N, N,
                                            s.vocab);
  nn::column_parallel_backward(s.dln, s.g.wte, nullptr, dlogits, s.lnf, s.p.wte, N, C, Vl, s.tp);
  const float* x_last = s.layer_acts.back().res3;
  nn::layernorm_backward(s.dres, s.g.lnf_w, s.g.lnf_b, s.dln, x_last, s.p.lnf_w, s.lnf_mean, s.lnf_rstd, N,
                         C);

  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const LayerView& w = s.p.layers[l];
    const LayerView& g = s.g.layers[l];
    const LayerActs& a = s.layer_acts[l];
    const float* x = l == 0 ? s.encoded : s.layer_acts[l - 1].res3;
    // s.dres holds d(res3); the MLP branch and the skip both receive it.
    // dres and dln are replicated (the column-parallel backward all-reduces dln).
    nn::row_parallel_backward(s.dfch, g.fcproj_w, g.fcproj_b, s.dres, a.fch_gelu, w.fcproj_w, N, Fl, C);
    nn::gelu_backward(s.dfch, a.fch, s.dfch, static_cast<size_t>(N) * Fl);
    nn::column_parallel_backward(s.dln, g.fc_w, g.fc_b, s.dfch, a.ln2, w.fc_w, N, C, Fl, s.tp);
    nn::layernorm_backward(s.dres, g.ln2_w, g.ln2_b, s.dln, a.res2, w.ln2_w, a.ln2_mean, a.ln2_rstd, N, C,
                           /*dresidual=*/s.dres);  // now d(res2)
    nn::row_parallel_backward(s.datty, g.proj_w, g.proj_b, s.dres, a.atty, w.proj_w, N, Cl, C);
    nn::attention_backward(s.dqkv, s.datt, s.datty, a.qkv, a.att, B, T, Cl, NHl);
    nn::column_parallel_backward(s.dln, g.attn_w, g.attn_b, s.dqkv, a.ln1, w.attn_w, N, C, 3 * Cl, s.tp);
    nn::layernorm_backward(s.dres, g.ln1_w, g.ln1_b, s.dln, x, w.ln1_w, a.ln1_mean, a.ln1_rstd, N, C,
                           /*dresidual=*/s.dres);  // now d(x)
  }
  nn::vocab_parallel_embedding_backward(s.g.wte, s.g.wpe, s.dres, s.tokens.data(), s.vocab, B, T, C);
}

void Gpt::zero_grad() { cpu::fill(s_->grads.data(), 0.0f, s_->grads.size()); }

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
    Arena arena;
    arena.add(&s.k_cache, L * b * ctx * C);
    arena.add(&s.v_cache, L * b * ctx * C);
    arena.add(&s.dec_x, b * C);
    arena.add(&s.dec_ln, b * C);
    arena.add(&s.dec_mean, b);
    arena.add(&s.dec_rstd, b);
    arena.add(&s.dec_qkv, b * 3 * C);
    arena.add(&s.dec_y, b * C);
    arena.add(&s.dec_fch, b * 4 * C);
    arena.add(&s.dec_logits, b * Vp);
    arena.add(&s.dec_scores, b * NH * ctx);
    s.cache = cpu::AlignedBuffer();  // free the old one first
    s.cache = cpu::AlignedBuffer(arena.total());
    arena.bind(s.cache.data());
    s.cache_B = B;
  }
  s.n_cached = 0;
}

const float* Gpt::decode_step(const int32_t* tokens, int pos) {
  State& s = *s_;
  CHORUS_CHECK(s.tp == nullptr, "generate runs on one rank: this model is a TP = %d shard", s.tp_size);
  CHORUS_CHECK(s.cache_B > 0, "Gpt::decode_step: call reset_cache(B) first");
  CHORUS_CHECK(tokens != nullptr, "Gpt::decode_step: tokens is null");
  CHORUS_CHECK(pos >= 0 && pos < cfg_.context, "Gpt::decode_step: pos = %d outside [0, context = %d)", pos,
               cfg_.context);
  CHORUS_CHECK(pos <= s.n_cached, "Gpt::decode_step: pos = %d but only positions [0, %d) are cached", pos,
               s.n_cached);
  const int B = s.cache_B, C = cfg_.n_embd, NH = cfg_.n_head, Vp = cfg_.padded_vocab();
  check_tokens(tokens, B, cfg_.vocab_size, "tokens");
  const size_t ctx = cfg_.context;
  const size_t layer_stride = static_cast<size_t>(B) * ctx * C;

  // (B, 1) sequence at position pos: wpe row pos.
  nn::encoder_forward(s.dec_x, tokens, s.p.wte, s.p.wpe + static_cast<size_t>(pos) * C, B, 1, C);
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerView& w = s.p.layers[l];
    float* kc = s.k_cache + l * layer_stride;
    float* vc = s.v_cache + l * layer_stride;
    nn::layernorm_forward(s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, w.ln1_w, w.ln1_b, B, C);
    nn::matmul_forward(s.dec_qkv, s.dec_ln, w.attn_w, w.attn_b, B, C, 3 * C);
    for (int b = 0; b < B; ++b) {
      const float* row = s.dec_qkv + static_cast<size_t>(b) * 3 * C;
      const size_t at = (static_cast<size_t>(b) * ctx + pos) * C;
      std::memcpy(kc + at, row + C, C * sizeof(float));
      std::memcpy(vc + at, row + 2 * C, C * sizeof(float));
    }
    nn::attention_decode(s.dec_y, s.dec_scores, s.dec_qkv, 3 * static_cast<size_t>(C), kc, vc, ctx * C, B,
                         pos + 1, C, NH);
    nn::matmul_forward(s.dec_x, s.dec_y, w.proj_w, w.proj_b, B, C, C, /*residual=*/s.dec_x);
    nn::layernorm_forward(s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, w.ln2_w, w.ln2_b, B, C);
    nn::matmul_forward(s.dec_fch, s.dec_ln, w.fc_w, w.fc_b, B, C, 4 * C);
    nn::gelu_forward(s.dec_fch, s.dec_fch, static_cast<size_t>(B) * 4 * C);
    nn::matmul_forward(s.dec_x, s.dec_fch, w.fcproj_w, w.fcproj_b, B, 4 * C, C, /*residual=*/s.dec_x);
  }
  nn::layernorm_forward(s.dec_ln, s.dec_mean, s.dec_rstd, s.dec_x, s.p.lnf_w, s.p.lnf_b, B, C);
  nn::matmul_forward(s.dec_logits, s.dec_ln, s.p.wte, nullptr, B, C, Vp);
  s.n_cached = pos + 1;
  return s.dec_logits;
}

}  // namespace chorus::models
