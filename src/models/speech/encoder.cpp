// The speech encoder on the CPU backend (see encoder.h): parameter table,
// one activation buffer, the block loop forward and the same loop in reverse.
// Gradient rule as in src/nn: parameter gradients accumulate, activation
// gradients are overwritten. Local (per TP rank) widths: Cl = d/tp attention,
// Fl = 4d/tp MLP, NHl = NH/tp heads.
#include "models/speech/encoder.h"
#include "models/param_storage.h"

#include <cmath>
#include <cstring>
#include <type_traits>

#include "backend/cpu/arena.h"
#include "backend/cpu/buffer.h"
#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/rng.h"
#include "dist/communicator.h"
#include "nn/attention.h"
#include "nn/conv1d.h"
#include "nn/ctc.h"
#include "nn/gelu.h"
#include "nn/layernorm.h"
#include "nn/matmul.h"
#include "nn/parallel_linear.h"
#include "nn/positions.h"
#include "nn/tp_shard.h"

namespace chorus::models {

namespace cpu = chorus::backend::cpu;

void SpeechEncoderConfig::validate() const {
  CHORUS_CHECK(n_mels > 0, "encoder.n_mels: must be > 0, got %d", n_mels);
  CHORUS_CHECK(n_layer > 0, "encoder.n_layer: must be > 0, got %d", n_layer);
  CHORUS_CHECK(n_embd > 0 && n_embd % 2 == 0, "encoder.n_embd: must be even and > 0, got %d", n_embd);
  CHORUS_CHECK(n_head > 0 && n_embd % n_head == 0, "encoder.n_head: n_embd (%d) must be divisible by n_head (%d)",
               n_embd, n_head);
  CHORUS_CHECK(max_frames > 0, "encoder.max_frames: must be > 0, got %d", max_frames);
  CHORUS_CHECK(subsample == 2 || subsample == 4, "encoder.subsample: must be 2 or 4, got %d", subsample);
}

nlohmann::json SpeechEncoderConfig::to_json() const {
  nlohmann::json j = {{"n_mels", n_mels}, {"n_layer", n_layer}, {"n_embd", n_embd}, {"n_head", n_head},
                      {"max_frames", max_frames}};
  if (subsample != 2) j["subsample"] = subsample;  // absent: 2 (checkpoints from before the option)
  return j;
}

SpeechEncoderConfig SpeechEncoderConfig::from_json(const nlohmann::json& j, const std::string& where) {
  SpeechEncoderConfig c;
  try {
    c.n_mels = j.at("n_mels").get<int>();
    c.n_layer = j.at("n_layer").get<int>();
    c.n_embd = j.at("n_embd").get<int>();
    c.n_head = j.at("n_head").get<int>();
    c.max_frames = j.at("max_frames").get<int>();
    c.subsample = j.value("subsample", 2);
  } catch (const nlohmann::json::exception& e) {
    throw Error(strfmt("%s: field 'encoder': %s", where.c_str(), e.what()));
  }
  c.validate();
  return c;
}

namespace {

enum BlockParam { kLn1W, kLn1B, kAttnW, kAttnB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB,
                  kPerBlock };
// kFanIn: N(0, 1/fan_in) for the conv stem, as PyTorch's default Conv1d init
// scales (Whisper trains from it): with GPT-2's N(0, 0.02) the stem's output
// is ~10x smaller than the sinusoidal positions added to it, and the audio
// signal starts drowned.
enum class Init { kNormal, kResidualNormal, kZero, kOne, kFanIn };

template <typename P>
struct BlockView {
  P* ln1_w;     // (d)            blocks.{i}.ln_1.weight
  P* ln1_b;     // (d)
  P* attn_w;    // (3d, d) [3Cl]  blocks.{i}.attn.c_attn.weight  column-parallel q|k|v
  P* attn_b;    // (3d)
  P* proj_w;    // (d, d) [d, Cl] blocks.{i}.attn.c_proj.weight  row-parallel
  P* proj_b;    // (d)
  P* ln2_w;     // (d)
  P* ln2_b;     // (d)
  P* fc_w;      // (4d, d) [Fl]   blocks.{i}.mlp.c_fc.weight  column-parallel
  P* fc_b;      // (4d)
  P* fcproj_w;  // (d, 4d) [d, Fl] blocks.{i}.mlp.c_proj.weight  row-parallel
  P* fcproj_b;  // (d)
};

template <typename P>
struct View {
  P* conv1_w;  // (d, n_mels, 3)  conv1.weight
  P* conv1_b;  // (d)
  P* conv2_w;  // (d, d, 3)       conv2.weight (stride 2)
  P* conv2_b;  // (d)
  std::vector<BlockView<P>> blocks;
  P* lnp_w;    // (d)      ln_post.weight
  P* lnp_b;    // (d)
  P* ctc_w;    // (V, d)   ctc_head.weight
  P* ctc_b;    // (V)      ctc_head.bias
};

template <typename P>
View<P> make_view(P* base, const std::vector<ParamSpec>& table, int n_layer) {
  View<P> v;
  auto at = [&](size_t i) { return base + table[i].offset; };
  v.conv1_w = at(0);
  v.conv1_b = at(1);
  v.conv2_w = at(2);
  v.conv2_b = at(3);
  v.blocks.resize(n_layer);
  for (int l = 0; l < n_layer; ++l) {
    const size_t i = 4 + static_cast<size_t>(l) * kPerBlock;
    BlockView<P>& b = v.blocks[l];
    P** slots[kPerBlock] = {&b.ln1_w, &b.ln1_b, &b.attn_w, &b.attn_b, &b.proj_w, &b.proj_b,
                            &b.ln2_w, &b.ln2_b, &b.fc_w,   &b.fc_b,   &b.fcproj_w, &b.fcproj_b};
    for (int k = 0; k < kPerBlock; ++k) *slots[k] = at(i + k);
  }
  const size_t f = 4 + static_cast<size_t>(n_layer) * kPerBlock;
  v.lnp_w = at(f);
  v.lnp_b = at(f + 1);
  v.ctc_w = at(f + 2);
  v.ctc_b = at(f + 3);
  return v;
}

template <typename T>
struct BlockActs {
  T* ln1;           // (B, S, d)
  float* ln1_mean;  // (B, S)
  float* ln1_rstd;
  T* qkv;           // (B, S, 3Cl)
  T* atty;          // (B, S, Cl)
  T* att;           // (B, NHl, S, S)
  T* res2;          // (B, S, d)
  T* ln2;
  float* ln2_mean;
  float* ln2_rstd;
  T* fch;           // (B, S, Fl)
  T* fch_gelu;
  T* res3;          // (B, S, d)
};

template <typename T>
struct Acts {
  T* x_in = nullptr;     // (B, F, n_mels) features in T
  T* c1 = nullptr;       // (B, F1, d) conv1 output (F1 = F, or ceil(F / 2) with subsample 4)
  T* c1g = nullptr;      // (B, F1, d) GELU, rows past a clip's frames zeroed
  T* c2 = nullptr;       // (B, S, d) conv2 output
  T* x0 = nullptr;       // (B, S, d) GELU + positions
  std::vector<BlockActs<T>> blocks;
  T* mem = nullptr;      // (B, S, d) ln_post output
  float* mem_mean = nullptr;
  float* mem_rstd = nullptr;
  T* logits = nullptr;   // (B, S, V) CTC logits
  T* dlogits = nullptr;  // (B, S, V)
  // backward scratch
  T* dres = nullptr;     // (B, S, d)
  T* dln = nullptr;      // (B, S, d)
  T* datty = nullptr;    // (B, S, Cl)
  T* dqkv = nullptr;     // (B, S, 3Cl)
  T* dfch = nullptr;     // (B, S, Fl)
  T* dc1 = nullptr;      // (B, F1, d)
};

}  // namespace

struct SpeechEncoder::State {
  int max_batch = 0, max_frames = 0, V = 0, blank = 0;
  Precision precision = Precision::fp32;
  dist::Communicator* tp = nullptr;
  int tp_size = 1, tp_rank = 0, NHl = 0, Cl = 0, Fl = 0;
  std::vector<ParamSpec> table;
  std::vector<Init> init;
  cpu::AlignedBuffer params, grads;
  float* pbase = nullptr;
  float* gbase = nullptr;
  size_t n_params = 0;
  View<float> p, g;
  cpu::AlignedBuffer compute_params;
  View<bf16> p_bf16;
  View<fp16> p_fp16;
  bool compute_stale = true;
  cpu::AlignedBuffer acts;
  size_t acts_bytes = 0;
  Acts<float> a_f32;
  Acts<bf16> a_bf16;
  Acts<fp16> a_fp16;
  std::vector<float> positions;  // (n_ctx, d) sinusoids
  // last forward
  int B = 0, F = 0, S = 0;
  std::vector<int> n_frames, n_frames1, mem_len, ctc_len;  // input frames, conv1 rows, memory rows, CTC frames per clip
  bool ctc_ready = false;

  template <typename T>
  Acts<T>& acts_of() {
    if constexpr (std::is_same_v<T, float>) return a_f32;
    else if constexpr (std::is_same_v<T, bf16>) return a_bf16;
    else return a_fp16;
  }
  template <typename T>
  const View<T>& weights_of() {
    if constexpr (std::is_same_v<T, float>) return p;
    else if constexpr (std::is_same_v<T, bf16>) return p_bf16;
    else return p_fp16;
  }
};

namespace {

// The sizes the activation table is laid out from (see Acts).
struct ActDims {
  int L = 0;
  size_t BF = 0, BF1 = 0, BS = 0, n_mels = 0, d = 0, Cl = 0, Fl = 0, att = 0, V = 0;
};

// Lays out the activation table of dtype T in `arena` (nothing is allocated).
template <typename T>
void lay_out_acts(Acts<T>& a, cpu::Arena& arena, const ActDims& x) {
  const size_t BF = x.BF, BS = x.BS, d = x.d, Cl = x.Cl, Fl = x.Fl, V = x.V;
  arena.add(&a.x_in, BF * x.n_mels);
  arena.add(&a.c1, x.BF1 * d);
  arena.add(&a.c1g, x.BF1 * d);
  arena.add(&a.c2, BS * d);
  arena.add(&a.x0, BS * d);
  a.blocks.resize(x.L);
  for (auto& b : a.blocks) {
    arena.add(&b.ln1, BS * d);
    arena.add(&b.ln1_mean, BS);
    arena.add(&b.ln1_rstd, BS);
    arena.add(&b.qkv, BS * 3 * Cl);
    arena.add(&b.atty, BS * Cl);
    arena.add(&b.att, x.att);
    arena.add(&b.res2, BS * d);
    arena.add(&b.ln2, BS * d);
    arena.add(&b.ln2_mean, BS);
    arena.add(&b.ln2_rstd, BS);
    arena.add(&b.fch, BS * Fl);
    arena.add(&b.fch_gelu, BS * Fl);
    arena.add(&b.res3, BS * d);
  }
  arena.add(&a.mem, BS * d);
  arena.add(&a.mem_mean, BS);
  arena.add(&a.mem_rstd, BS);
  arena.add(&a.logits, BS * V);
  arena.add(&a.dlogits, BS * V);
  arena.add(&a.dres, BS * d);
  arena.add(&a.dln, BS * d);
  arena.add(&a.datty, BS * Cl);
  arena.add(&a.dqkv, BS * 3 * Cl);
  arena.add(&a.dfch, BS * Fl);
  arena.add(&a.dc1, x.BF1 * d);
}

template <typename T>
void bind_acts(Acts<T>& a, cpu::AlignedBuffer& buf, size_t& bytes, const ActDims& x) {
  cpu::Arena arena;
  lay_out_acts(a, arena, x);
  bytes = arena.bytes();
  buf = cpu::AlignedBuffer((bytes + sizeof(float) - 1) / sizeof(float));
  arena.bind(buf.data());
}

size_t act_bytes_for(Precision precision, const ActDims& x) {
  cpu::Arena arena;
  switch (precision) {
    case Precision::bf16: {
      Acts<bf16> a;
      lay_out_acts(a, arena, x);
      break;
    }
    case Precision::fp16: {
      Acts<fp16> a;
      lay_out_acts(a, arena, x);
      break;
    }
    case Precision::fp32: {
      Acts<float> a;
      lay_out_acts(a, arena, x);
      break;
    }
  }
  return arena.bytes();
}

// What the constructor checks before sizing anything; returns the local
// widths (NH/tp, Cl, Fl) under TP = n_tp.
struct LocalWidths {
  int n_head = 0, attn = 0, mlp = 0;
};
LocalWidths check_shape(const SpeechEncoderConfig& cfg, int ctc_vocab, int ctc_blank, int max_batch,
                        int max_frames, int n_tp) {
  cfg.validate();
  CHORUS_CHECK(max_batch > 0, "SpeechEncoder: max_batch must be > 0, got %d", max_batch);
  CHORUS_CHECK(max_frames > 0 && max_frames <= cfg.max_frames,
               "SpeechEncoder: max_frames must be in [1, encoder.max_frames = %d], got %d", cfg.max_frames,
               max_frames);
  CHORUS_CHECK(ctc_vocab > 0 && ctc_blank >= 0 && ctc_blank < ctc_vocab,
               "SpeechEncoder: CTC vocabulary %d with blank %d", ctc_vocab, ctc_blank);
  const int64_t d = cfg.n_embd;
  CHORUS_CHECK(cfg.n_head % n_tp == 0, "SpeechEncoder: TP = %d does not divide encoder n_head = %d", n_tp,
               cfg.n_head);
  CHORUS_CHECK(4 * d % n_tp == 0, "SpeechEncoder: TP = %d does not divide the MLP width %lld", n_tp,
               static_cast<long long>(4 * d));
  return {cfg.n_head / n_tp, static_cast<int>(d / n_tp), static_cast<int>(4 * d / n_tp)};
}

ActDims act_dims(const SpeechEncoderConfig& cfg, int ctc_vocab, int max_batch, int max_frames,
                 const LocalWidths& w) {
  const int max_S = cfg.out_len(max_frames);
  ActDims x;
  x.L = cfg.n_layer;
  x.BF = static_cast<size_t>(max_batch) * max_frames;
  x.BF1 = static_cast<size_t>(max_batch) * (cfg.conv1_stride() == 2 ? (max_frames + 1) / 2 : max_frames);
  x.BS = static_cast<size_t>(max_batch) * max_S;
  x.n_mels = cfg.n_mels;
  x.d = cfg.n_embd;
  x.Cl = w.attn;
  x.Fl = w.mlp;
  x.att = static_cast<size_t>(max_batch) * w.n_head * max_S * max_S;
  x.V = static_cast<size_t>(ctc_vocab) * cfg.ctc_upsample();  // logit columns per memory row
  return x;
}

// The parameter table (this rank's shards under TP = n_tp) and each tensor's init.
struct Table {
  std::vector<ParamSpec> specs;
  std::vector<Init> init;
  size_t n_params = 0;
};
Table build_table(const SpeechEncoderConfig& cfg, int ctc_vocab, int n_tp) {
  const int64_t d = cfg.n_embd, M = cfg.n_mels, V = ctc_vocab;
  Table t;
  size_t offset = 0;
  constexpr bool kHidden = true;  // ParamSpec::hidden_matrix (Muon's tensors)
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay, Init init, int tp_axis = -1,
                 int tp_parts = 1, bool hidden_matrix = false) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.global_shape = shape;
    spec.shape = nn::local_shape(nn::ShardSpec{std::move(shape), tp_axis, tp_parts}, n_tp);
    spec.numel = 1;
    for (int64_t x : spec.shape) spec.numel *= static_cast<size_t>(x);
    spec.offset = offset;
    spec.decay = decay;
    spec.tp_axis = tp_axis;
    spec.tp_parts = tp_parts;
    spec.hidden_matrix = hidden_matrix;
    offset += spec.numel;
    t.specs.push_back(std::move(spec));
    t.init.push_back(init);
  };
  add("conv1.weight", {d, M, 3}, true, Init::kFanIn);
  add("conv1.bias", {d}, false, Init::kZero);
  add("conv2.weight", {d, d, 3}, true, Init::kFanIn);
  add("conv2.bias", {d}, false, Init::kZero);
  for (int l = 0; l < cfg.n_layer; ++l) {
    const std::string h = "blocks." + std::to_string(l) + ".";
    add(h + "ln_1.weight", {d}, false, Init::kOne);
    add(h + "ln_1.bias", {d}, false, Init::kZero);
    add(h + "attn.c_attn.weight", {3 * d, d}, true, Init::kNormal, 0, 3, kHidden);
    add(h + "attn.c_attn.bias", {3 * d}, false, Init::kZero, 0, 3);
    add(h + "attn.c_proj.weight", {d, d}, true, Init::kResidualNormal, 1, 1, kHidden);
    add(h + "attn.c_proj.bias", {d}, false, Init::kZero);
    add(h + "ln_2.weight", {d}, false, Init::kOne);
    add(h + "ln_2.bias", {d}, false, Init::kZero);
    add(h + "mlp.c_fc.weight", {4 * d, d}, true, Init::kNormal, 0, 1, kHidden);
    add(h + "mlp.c_fc.bias", {4 * d}, false, Init::kZero, 0);
    add(h + "mlp.c_proj.weight", {d, 4 * d}, true, Init::kResidualNormal, 1, 1, kHidden);
    add(h + "mlp.c_proj.bias", {d}, false, Init::kZero);
  }
  add("ln_post.weight", {d}, false, Init::kOne);
  add("ln_post.bias", {d}, false, Init::kZero);
  const int64_t U = cfg.ctc_upsample();  // row r's logits are CTC frames U r .. U r + U - 1
  add("ctc_head.weight", {U * V, d}, true, Init::kNormal);
  add("ctc_head.bias", {U * V}, false, Init::kZero);

  t.n_params = offset;
  return t;
}

// Zeroes rows t >= len[b] of x (B, Tn, C).
template <typename T>
void zero_padding(T* x, const int* len, int B, int Tn, int C) {
  for (int b = 0; b < B; ++b)
    if (len[b] < Tn)
      std::memset(static_cast<void*>(x + (static_cast<size_t>(b) * Tn + len[b]) * C), 0,
                  static_cast<size_t>(Tn - len[b]) * C * sizeof(T));
}

template <typename T>
void add_into(T* dst, const T* src, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) dst[i] = from_f32<T>(to_f32(dst[i]) + to_f32(src[i]));
}

}  // namespace

SpeechEncoder::SpeechEncoder(const SpeechEncoderConfig& cfg, int ctc_vocab, int ctc_blank, int max_batch,
                             int max_frames, dist::Communicator* tp, Precision precision)
    : cfg_(cfg), s_(std::make_unique<State>()) {
  State& s = *s_;
  if (tp != nullptr && tp->size() > 1) {
    s.tp = tp;
    s.tp_size = tp->size();
    s.tp_rank = tp->rank();
  }
  const LocalWidths w = check_shape(cfg_, ctc_vocab, ctc_blank, max_batch, max_frames, s.tp_size);
  s.max_batch = max_batch;
  s.max_frames = max_frames;
  s.V = ctc_vocab;
  s.blank = ctc_blank;
  s.precision = precision;
  s.NHl = w.n_head;
  s.Cl = w.attn;
  s.Fl = w.mlp;
  const int64_t d = cfg_.n_embd;

  Table table = build_table(cfg_, ctc_vocab, s.tp_size);
  s.table = std::move(table.specs);
  s.init = std::move(table.init);
  allocate_param_storage(s, table.n_params, precision, [&](auto* base) { return make_view(base, s.table, cfg_.n_layer); });
  const ActDims dims = act_dims(cfg_, ctc_vocab, max_batch, max_frames, w);
  switch (precision) {
    case Precision::fp32: bind_acts(s.a_f32, s.acts, s.acts_bytes, dims); break;
    case Precision::bf16: bind_acts(s.a_bf16, s.acts, s.acts_bytes, dims); break;
    case Precision::fp16: bind_acts(s.a_fp16, s.acts, s.acts_bytes, dims); break;
  }
  s.positions.resize(static_cast<size_t>(cfg_.n_ctx()) * d);
  nn::sinusoidal_positions(s.positions.data(), cfg_.n_ctx(), static_cast<int>(d));
}

SpeechEncoder::~SpeechEncoder() = default;

void SpeechEncoder::init_weights(uint64_t seed) {
  State& s = *s_;
  const float std_normal = 0.02f;
  const float std_residual = 0.02f / std::sqrt(2.0f * static_cast<float>(cfg_.n_layer));
  const size_t n_tensors = s.table.size();
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < n_tensors; ++i) {
    const ParamSpec& spec = s.table[i];
    const bool sharded = s.tp != nullptr && spec.tp_axis >= 0;
    size_t n = 1;
    for (int64_t x : spec.global_shape) n *= static_cast<size_t>(x);
    std::vector<float> global;
    if (sharded) global.resize(n);
    float* w = sharded ? global.data() : s.pbase + spec.offset;
    Rng rng(seed, 1 + i);
    const size_t fan_in = spec.global_shape.size() == 3 ? static_cast<size_t>(spec.global_shape[1] * spec.global_shape[2])
                                                        : 1;
    const float std_fan_in = 1.0f / std::sqrt(static_cast<float>(fan_in));
    for (size_t j = 0; j < n; ++j) {
      switch (s.init[i]) {
        case Init::kFanIn: w[j] = std_fan_in * rng.normal(); break;
        case Init::kNormal: w[j] = std_normal * rng.normal(); break;
        case Init::kResidualNormal: w[j] = std_residual * rng.normal(); break;
        case Init::kZero: w[j] = 0.0f; break;
        case Init::kOne: w[j] = 1.0f; break;
      }
    }
    if (sharded)
      nn::slice_shard(nn::ShardSpec{spec.global_shape, spec.tp_axis, spec.tp_parts}, s.tp_rank, s.tp_size,
                      global.data(), s.pbase + spec.offset);
  }
  s.compute_stale = true;
}

std::span<float> SpeechEncoder::params() {
  s_->compute_stale = true;
  return {s_->pbase, s_->n_params};
}
std::span<float> SpeechEncoder::grads() { return {s_->gbase, s_->n_params}; }
const std::vector<ParamSpec>& SpeechEncoder::param_table() const { return s_->table; }
size_t SpeechEncoder::n_params() const { return s_->n_params; }
void SpeechEncoder::zero_grad() { cpu::fill(s_->gbase, 0.0f, s_->n_params); }
int SpeechEncoder::ctc_vocab() const { return s_->V; }
int SpeechEncoder::ctc_blank() const { return s_->blank; }
const int* SpeechEncoder::memory_len() const { return s_->mem_len.data(); }
int SpeechEncoder::memory_rows() const { return s_->S; }

void SpeechEncoder::adopt_storage(float* params, float* grads) {
  adopt_param_storage(*s_, params, grads, [&](auto* base) { return make_view(base, s_->table, cfg_.n_layer); });
}

GptMemory SpeechEncoder::memory_use() const {
  GptMemory m = param_memory(s_->n_params, s_->precision);
  m.activation_bytes = s_->acts_bytes;
  return m;
}

double SpeechEncoder::flops(int B, int F) const { return speech_encoder_flops(cfg_, s_->V, B, F); }

GptMemory speech_encoder_memory(const SpeechEncoderConfig& cfg, int ctc_vocab, int ctc_blank, int max_batch,
                                int max_frames, int tp_size, Precision precision) {
  CHORUS_CHECK(tp_size >= 1, "SpeechEncoder: TP must be >= 1, got %d", tp_size);
  const LocalWidths w = check_shape(cfg, ctc_vocab, ctc_blank, max_batch, max_frames, tp_size);
  GptMemory m = param_memory(build_table(cfg, ctc_vocab, tp_size).n_params, precision);
  m.activation_bytes = act_bytes_for(precision, act_dims(cfg, ctc_vocab, max_batch, max_frames, w));
  return m;
}

double speech_encoder_flops(const SpeechEncoderConfig& cfg, int ctc_vocab, int B, int F) {
  const double d = cfg.n_embd, S = cfg.out_len(F), L = cfg.n_layer;
  const double F1 = cfg.conv1_stride() == 2 ? (F + 1) / 2 : F;
  const double conv = 2.0 * B * (F1 * d * cfg.n_mels * 3 + S * d * d * 3);
  const double blocks = 2.0 * B * S * L * (12 * d * d) + 2.0 * B * L * 2 * S * S * d;
  const double ctc = 2.0 * B * S * d * ctc_vocab * cfg.ctc_upsample();
  return 3.0 * (conv + blocks + ctc);  // forward + backward (2x)
}

const void* SpeechEncoder::memory() const {
  switch (s_->precision) {
    case Precision::bf16: return s_->a_bf16.mem;
    case Precision::fp16: return s_->a_fp16.mem;
    case Precision::fp32: break;
  }
  return s_->a_f32.mem;
}

void SpeechEncoder::memory_f32(float* out) const {
  const size_t n = static_cast<size_t>(s_->B) * s_->S * cfg_.n_embd;
  switch (s_->precision) {
    case Precision::fp32: convert(out, s_->a_f32.mem, n); break;
    case Precision::bf16: convert(out, s_->a_bf16.mem, n); break;
    case Precision::fp16: convert(out, s_->a_fp16.mem, n); break;
  }
}

void SpeechEncoder::forward(const float* feats, const int* n_frames, int B, int F) {
  State& s = *s_;
  CHORUS_CHECK(feats != nullptr && n_frames != nullptr, "SpeechEncoder::forward: null input");
  CHORUS_CHECK(B > 0 && B <= s.max_batch, "SpeechEncoder::forward: B = %d outside [1, %d]", B, s.max_batch);
  CHORUS_CHECK(F > 0 && F <= s.max_frames, "SpeechEncoder::forward: F = %d frames outside [1, %d]", F,
               s.max_frames);
  s.B = B;
  s.F = F;
  s.S = cfg_.out_len(F);
  s.n_frames.assign(n_frames, n_frames + B);
  s.n_frames1.resize(B);
  s.mem_len.resize(B);
  s.ctc_len.resize(B);
  for (int b = 0; b < B; ++b) {
    CHORUS_CHECK(n_frames[b] >= 1 && n_frames[b] <= F, "SpeechEncoder::forward: n_frames[%d] = %d outside [1, %d]",
                 b, n_frames[b], F);
    s.mem_len[b] = cfg_.out_len(n_frames[b]);
    s.ctc_len[b] = cfg_.ctc_upsample() * s.mem_len[b];
    s.n_frames1[b] = cfg_.conv1_stride() == 2 ? (n_frames[b] + 1) / 2 : n_frames[b];
  }
  s.ctc_ready = false;
  if (s.compute_stale) {
    if (s.precision == Precision::bf16) convert(s.p_bf16.conv1_w, s.pbase, s.n_params);
    if (s.precision == Precision::fp16) convert(s.p_fp16.conv1_w, s.pbase, s.n_params);
    s.compute_stale = false;
  }
  switch (s.precision) {
    case Precision::bf16: forward_typed<bf16>(feats); return;
    case Precision::fp16: forward_typed<fp16>(feats); return;
    case Precision::fp32: forward_typed<float>(feats); return;
  }
}

template <typename T>
void SpeechEncoder::forward_typed(const float* feats) {
  State& s = *s_;
  const View<T>& p = s.weights_of<T>();
  Acts<T>& A = s.acts_of<T>();
  const int B = s.B, F = s.F, S = s.S, d = cfg_.n_embd, M = cfg_.n_mels, Cl = s.Cl, Fl = s.Fl, NHl = s.NHl;
  const int N = B * S;
  const int s1 = cfg_.conv1_stride(), F1 = s1 == 2 ? (F + 1) / 2 : F;
  convert(A.x_in, feats, static_cast<size_t>(B) * F * M);
  nn::conv1d_forward(A.c1, A.x_in, p.conv1_w, p.conv1_b, B, F, M, d, 3, s1, 1);
  nn::gelu_forward(A.c1g, A.c1, static_cast<size_t>(B) * F1 * d);
  zero_padding(A.c1g, s.n_frames1.data(), B, F1, d);  // as the zero padding of a clip on its own
  nn::conv1d_forward(A.c2, A.c1g, p.conv2_w, p.conv2_b, B, F1, d, d, 3, 2, 1);
  nn::gelu_forward(A.x0, A.c2, static_cast<size_t>(N) * d);
  nn::add_positions(A.x0, s.positions.data(), B, S, d);
  const T* x = A.x0;
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const BlockView<T>& w = p.blocks[l];
    const BlockActs<T>& a = A.blocks[l];
    nn::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, w.ln1_w, w.ln1_b, N, d);
    nn::column_parallel_forward(a.qkv, a.ln1, w.attn_w, w.attn_b, N, d, 3 * Cl);
    const size_t stride = 3 * static_cast<size_t>(Cl);
    nn::mha_forward(a.atty, a.att, a.qkv, stride, a.qkv + Cl, a.qkv + 2 * Cl, stride, s.mem_len.data(), B, S, S, Cl,
                    NHl, /*causal=*/false);
    nn::row_parallel_forward(a.res2, a.atty, w.proj_w, w.proj_b, N, Cl, d, /*residual=*/x, s.tp);
    nn::layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, w.ln2_w, w.ln2_b, N, d);
    nn::column_parallel_forward(a.fch, a.ln2, w.fc_w, w.fc_b, N, d, Fl);
    nn::gelu_forward(a.fch_gelu, a.fch, static_cast<size_t>(N) * Fl);
    nn::row_parallel_forward(a.res3, a.fch_gelu, w.fcproj_w, w.fcproj_b, N, Fl, d, /*residual=*/a.res2, s.tp);
    x = a.res3;
  }
  nn::layernorm_forward(A.mem, A.mem_mean, A.mem_rstd, x, p.lnp_w, p.lnp_b, N, d);
  nn::matmul_forward(A.logits, A.mem, p.ctc_w, p.ctc_b, N, d, s.V * cfg_.ctc_upsample());
}

float SpeechEncoder::ctc_loss(const int32_t* targets, const int* tgt_off, const int* tgt_len, float grad_scale,
                              int* n_infeasible) {
  State& s = *s_;
  const int B = s.B;
  std::vector<float> losses(B), scales(B);
  for (int b = 0; b < B; ++b) scales[b] = grad_scale / (static_cast<float>(B) * std::max(1, tgt_len[b]));
  auto run = [&](auto& A) {
    nn::ctc_loss(losses.data(), A.dlogits, A.logits, s.ctc_len.data(), targets, tgt_off, tgt_len, scales.data(), B,
                 ctc_rows(), s.V, s.blank);
  };
  switch (s.precision) {
    case Precision::fp32: run(s.a_f32); break;
    case Precision::bf16: run(s.a_bf16); break;
    case Precision::fp16: run(s.a_fp16); break;
  }
  double total = 0.0;
  int bad = 0;
  for (int b = 0; b < B; ++b) {
    if (!std::isfinite(losses[b])) {
      ++bad;
      continue;
    }
    total += losses[b] / std::max(1, tgt_len[b]);
  }
  if (n_infeasible) *n_infeasible = bad;
  s.ctc_ready = true;
  return static_cast<float>(total / B);
}

const int* SpeechEncoder::ctc_len() const { return s_->ctc_len.data(); }
int SpeechEncoder::ctc_rows() const { return cfg_.ctc_upsample() * s_->S; }

void SpeechEncoder::ctc_log_probs(int b, float* out) const {
  const State& s = *s_;
  const int rows = ctc_rows();
  const size_t n = static_cast<size_t>(rows) * s.V;
  const size_t off = static_cast<size_t>(b) * n;
  switch (s.precision) {
    case Precision::fp32: convert(out, s.a_f32.logits + off, n); break;
    case Precision::bf16: convert(out, s.a_bf16.logits + off, n); break;
    case Precision::fp16: convert(out, s.a_fp16.logits + off, n); break;
  }
  for (int t = 0; t < rows; ++t) {  // log-softmax per frame
    float* row = out + static_cast<size_t>(t) * s.V;
    float mx = row[0];
    for (int v = 1; v < s.V; ++v) mx = std::max(mx, row[v]);
    double z = 0.0;
    for (int v = 0; v < s.V; ++v) z += std::exp(static_cast<double>(row[v] - mx));
    const float lz = mx + static_cast<float>(std::log(z));
    for (int v = 0; v < s.V; ++v) row[v] -= lz;
  }
}

void SpeechEncoder::backward(const void* dmemory, bool with_ctc) {
  State& s = *s_;
  CHORUS_CHECK(!with_ctc || s.ctc_ready, "SpeechEncoder::backward: call ctc_loss() after forward first");
  switch (s.precision) {
    case Precision::bf16: backward_typed<bf16>(dmemory, with_ctc); break;
    case Precision::fp16: backward_typed<fp16>(dmemory, with_ctc); break;
    case Precision::fp32: backward_typed<float>(dmemory, with_ctc); break;
  }
  s.ctc_ready = false;
}

template <typename T>
void SpeechEncoder::backward_typed(const void* dmemory_v, bool with_ctc) {
  State& s = *s_;
  const View<T>& p = s.weights_of<T>();
  Acts<T>& A = s.acts_of<T>();
  const int B = s.B, F = s.F, S = s.S, d = cfg_.n_embd, M = cfg_.n_mels, Cl = s.Cl, Fl = s.Fl, NHl = s.NHl;
  const int N = B * S;
  const T* dmemory = static_cast<const T*>(dmemory_v);
  // d memory = CTC head's input gradient + the decoder's.
  if (with_ctc) {
    nn::matmul_backward(A.dln, s.g.ctc_w, s.g.ctc_b, A.dlogits, A.mem, p.ctc_w, N, d, s.V * cfg_.ctc_upsample());
    if (dmemory) add_into(A.dln, dmemory, static_cast<size_t>(N) * d);
  } else if (dmemory) {
    std::memcpy(static_cast<void*>(A.dln), dmemory, static_cast<size_t>(N) * d * sizeof(T));
  } else {
    std::memset(static_cast<void*>(A.dln), 0, static_cast<size_t>(N) * d * sizeof(T));
  }
  const T* x_last = A.blocks.back().res3;
  nn::layernorm_backward<T>(A.dres, s.g.lnp_w, s.g.lnp_b, A.dln, x_last, p.lnp_w, A.mem_mean, A.mem_rstd, N, d);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const BlockView<T>& w = p.blocks[l];
    const BlockView<float>& g = s.g.blocks[l];
    const BlockActs<T>& a = A.blocks[l];
    const T* x = l == 0 ? A.x0 : A.blocks[l - 1].res3;
    nn::row_parallel_backward(A.dfch, g.fcproj_w, g.fcproj_b, A.dres, a.fch_gelu, w.fcproj_w, N, Fl, d);
    nn::gelu_backward<T>(A.dfch, a.fch, A.dfch, static_cast<size_t>(N) * Fl);
    nn::column_parallel_backward(A.dln, g.fc_w, g.fc_b, A.dfch, a.ln2, w.fc_w, N, d, Fl, s.tp);
    nn::layernorm_backward<T>(A.dres, g.ln2_w, g.ln2_b, A.dln, a.res2, w.ln2_w, a.ln2_mean, a.ln2_rstd, N, d,
                              /*dresidual=*/A.dres);
    nn::row_parallel_backward(A.datty, g.proj_w, g.proj_b, A.dres, a.atty, w.proj_w, N, Cl, d);
    const size_t stride = 3 * static_cast<size_t>(Cl);
    nn::mha_backward(A.dqkv, stride, A.dqkv + Cl, A.dqkv + 2 * Cl, stride, A.datty, a.qkv, stride, a.qkv + Cl,
                     a.qkv + 2 * Cl, stride, a.att, s.mem_len.data(), B, S, S, Cl, NHl, /*causal=*/false);
    nn::column_parallel_backward(A.dln, g.attn_w, g.attn_b, A.dqkv, a.ln1, w.attn_w, N, d, 3 * Cl, s.tp);
    nn::layernorm_backward<T>(A.dres, g.ln1_w, g.ln1_b, A.dln, x, w.ln1_w, a.ln1_mean, a.ln1_rstd, N, d,
                              /*dresidual=*/A.dres);
  }
  // A.dres = d x0 (positions are constant); through GELU into d c2.
  nn::gelu_backward<T>(A.dres, A.c2, A.dres, static_cast<size_t>(N) * d);
  const int s1 = cfg_.conv1_stride(), F1 = s1 == 2 ? (F + 1) / 2 : F;
  nn::conv1d_backward(A.dc1, s.g.conv2_w, s.g.conv2_b, A.dres, A.c1g, p.conv2_w, B, F1, d, d, 3, 2, 1);
  zero_padding(A.dc1, s.n_frames1.data(), B, F1, d);  // those rows were set to 0, not computed
  nn::gelu_backward<T>(A.dc1, A.c1, A.dc1, static_cast<size_t>(B) * F1 * d);
  nn::conv1d_backward<T>(nullptr, s.g.conv1_w, s.g.conv1_b, A.dc1, A.x_in, p.conv1_w, B, F, M, d, 3, s1, 1);
}

}  // namespace chorus::models
