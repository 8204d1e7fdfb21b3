#include "checkpoint/tools.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "checkpoint/durable.h"
#include "checkpoint/shard_file.h"
#include "checkpoint/state.h"
#include "checkpoint/weights.h"
#include "core/error.h"
#include "core/hash.h"

namespace chorus::checkpoint {

namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "checkpoint digests and safetensors assume little-endian");

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

std::string mb(uint64_t bytes) { return strfmt("%.2f MB", static_cast<double>(bytes) / 1e6); }

std::string split_str(const TensorInfo& t) {
  if (t.tp_axis < 0) return "replicated";
  return strfmt("split on axis %d%s", t.tp_axis,
                t.tp_parts > 1 ? strfmt(" in %d parts", t.tp_parts).c_str() : "");
}

struct Loaded {
  std::string dir;
  Manifest manifest;
};

Loaded load_manifest(const std::string& path) {
  Loaded l;
  l.dir = resolve_checkpoint_dir(path);
  const std::string mpath = (fs::path(l.dir) / "manifest.json").string();
  l.manifest = read_manifest(mpath);
  check_complete(l.manifest, mpath);
  return l;
}

struct View {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
  size_t numel;
};

std::string digest(std::vector<View> views) {
  std::sort(views.begin(), views.end(), [](const View& a, const View& b) { return a.name < b.name; });
  Sha256 h;
  for (const auto& v : views) {
    h.update(v.name);
    const char zero = 0;
    h.update(&zero, 1);
    const uint64_t nd = v.shape.size();
    h.update(&nd, sizeof nd);
    h.update(v.shape.data(), v.shape.size() * sizeof(int64_t));
    h.update(v.data, v.numel * sizeof(float));
  }
  return h.hex_digest();
}

std::string temp_name(const fs::path& p) { return p.string() + ".tmp"; }

void write_durable_rename(const fs::path& path, const std::string& bytes) {
  const std::string tmp = temp_name(path);
  write_file_durable(tmp, bytes);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  CHORUS_CHECK(!ec, "export: cannot rename '%s' to '%s': %s", tmp.c_str(), path.c_str(),
               ec.message().c_str());
}

}  // namespace

std::string inspect(const std::string& path, bool list_tensors) {
  const Loaded l = load_manifest(path);
  const Manifest& m = l.manifest;
  size_t n_global = 0;
  global_offsets(m.tensors, &n_global);
  std::string s;
  s += strfmt("checkpoint %s\n", l.dir.c_str());
  s += strfmt("  format       %s version %d, written %s\n", kManifestFormat, m.format_version,
              m.created.c_str());
  s += strfmt("  step         %lld (tokens seen %llu)\n", static_cast<long long>(m.step),
              static_cast<unsigned long long>(m.tokens_seen));
  s += strfmt(
      "  model        GPT L%d d%d h%d vocab %d (padded %d) context %d: %.2fM parameters, %zu tensors\n",
      m.model.n_layer, m.model.n_embd, m.model.n_head, m.model.vocab_size, m.model.padded_vocab(),
      m.model.context, static_cast<double>(n_global) / 1e6, m.tensors.size());
  s += strfmt("  tokenizer    %s (<|endoftext|> = %lld)\n", m.tokenizer_hash.c_str(),
              static_cast<long long>(m.eot_token));
  s += strfmt("  layout       %s (world %d)\n", m.layout.describe().c_str(), m.layout.world());
  s += strfmt("  sampler      %llu samples of %d tokens consumed, seed %llu, %llu samples per step\n",
              static_cast<unsigned long long>(m.sampler.consumed), m.sampler.seq_len,
              static_cast<unsigned long long>(m.sampler.seed),
              static_cast<unsigned long long>(m.sampler.samples_per_step));
  s += strfmt("  schedule     position %lld of %lld, lr %g -> %g, warmup %lld\n",
              static_cast<long long>(m.schedule.position), static_cast<long long>(m.schedule.total_steps),
              m.schedule.max_lr, m.schedule.min_lr, static_cast<long long>(m.schedule.warmup));
  s += strfmt("  optimizer    %s t=%lld beta1 %g beta2 %g eps %g weight-decay %g grad-clip %g\n",
              m.optimizer.type.c_str(), static_cast<long long>(m.optimizer.t), m.optimizer.beta1,
              m.optimizer.beta2, m.optimizer.eps, m.optimizer.weight_decay, m.optimizer.grad_clip);
  s += strfmt("  precision    %s (weights stored as fp32 masters)\n", m.precision.c_str());
  s += strfmt("  loss scaler  %s (scale %g, %lld steps skipped)\n", m.loss_scaler.enabled ? "on" : "off",
              m.loss_scaler.scale, static_cast<long long>(m.loss_scaler.skipped_steps));
  s += strfmt("  rng          %zu rank state(s)\n", m.rng.size());
  s += strfmt("  files        %zu, %s\n", m.files.size(), mb(m.total_bytes()).c_str());
  for (const auto& f : m.files) {
    std::string role = f.kind == "model" ? strfmt("model      tp %d", f.tp_rank)
                                         : strfmt("optimizer  tp %d dp %d [%llu, %llu) of %llu", f.tp_rank,
                                                  f.dp_rank, static_cast<unsigned long long>(f.flat_begin),
                                                  static_cast<unsigned long long>(f.flat_end),
                                                  static_cast<unsigned long long>(f.flat_numel));
    s += strfmt("    %-22s %-48s %12s  sha256 %.16s...\n", f.path.c_str(), role.c_str(), mb(f.bytes).c_str(),
                f.sha256.c_str());
  }
  if (list_tensors) {
    s += strfmt("  tensors      %zu\n", m.tensors.size());
    for (const auto& t : m.tensors)
      s += strfmt("    %-28s %-14s %-26s local %s\n", t.name.c_str(), shape_str(t.global_shape).c_str(),
                  split_str(t).c_str(), shape_str(nn::local_shape(t.spec(), m.layout.tp)).c_str());
  }
  return s;
}

std::vector<std::string> verify(const std::string& path, std::string* dir_out) {
  Loaded l;
  try {
    l = load_manifest(path);
  } catch (const std::exception& e) {
    return {e.what()};
  }
  if (dir_out) *dir_out = l.dir;
  auto problems = check_all_files(l.dir, l.manifest);
  if (!problems.empty()) return problems;
  try {
    read_global(l.dir, l.manifest, true);  // every shape, attribute and slice
    return check_finite(l.dir, l.manifest);
  } catch (const std::exception& e) {
    return {e.what()};
  }
}

std::string hash(const std::string& path, bool with_optimizer, const std::string& prefix) {
  // The name a tensor is digested under ("" = left out).
  auto named = [&](const std::string& name) { return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : ""; };
  auto checked = [&](const std::vector<View>& views) {
    CHORUS_CHECK(!views.empty(), "hash: no tensor of '%s' has a name starting with '%s'", path.c_str(), prefix.c_str());
    return digest(views);
  };
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    CHORUS_CHECK(!with_optimizer, "hash: '%s' is a weights file: it holds no optimizer state", path.c_str());
    auto tensors = read_weights_tensors(path);
    std::vector<View> views;
    for (const auto& t : tensors)
      if (const std::string n = named(t.name); !n.empty()) views.push_back({n, t.shape, t.data.data(), t.data.size()});
    return checked(views);
  }
  const Loaded l = load_manifest(path);
  const GlobalState g = read_global(l.dir, l.manifest, with_optimizer);
  std::vector<View> views;
  for (size_t i = 0; i < l.manifest.tensors.size(); ++i) {
    const TensorInfo& t = l.manifest.tensors[i];
    const std::string n = named(t.name);
    if (n.empty()) continue;
    views.push_back({n, t.global_shape, g.params.data() + g.offsets[i], t.global_numel()});
    if (with_optimizer) {
      views.push_back({"exp_avg/" + n, t.global_shape, g.exp_avg.data() + g.offsets[i], t.global_numel()});
      views.push_back({"exp_avg_sq/" + n, t.global_shape, g.exp_avg_sq.data() + g.offsets[i], t.global_numel()});
    }
  }
  return checked(views);
}

Manifest reshard(const std::string& src, const std::string& out, const Layout& target) {
  target.validate("reshard");
  const Loaded l = load_manifest(src);
  const Manifest& m = l.manifest;
  const GlobalState g = read_global(l.dir, m, true);
  for (const auto& t : m.tensors) {
    try {
      nn::local_shape(t.spec(), target.tp);
    } catch (const Error& e) {
      CHORUS_FAIL("reshard: tensor '%s' %s cannot be split over tp %d: %s", t.name.c_str(),
                  shape_str(t.global_shape).c_str(), target.tp, e.what());
    }
  }
  std::error_code ec;
  CHORUS_CHECK(!fs::exists(out, ec), "reshard: output '%s' already exists (choose a new directory)",
               out.c_str());
  const fs::path tmp = temp_name(out);
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);

  Manifest nm = m;
  nm.layout = target;
  nm.files.clear();
  nm.created = utc_now();
  if (target.world() != m.layout.world()) {
    nm.rng.clear();
  } else {
    for (auto& r : nm.rng) {
      r.dp_rank = r.world_rank / target.tp;
      r.tp_rank = r.world_rank % target.tp;
    }
  }
  size_t n_local = 0;
  const auto loff = local_offsets(m.tensors, target.tp, &n_local);
  std::vector<float> params(n_local), em(n_local), ev(n_local);
  auto record = [&](FileRecord r) {
    const FileDigest d = digest_file((tmp / r.path).string());
    fsync_path((tmp / r.path).string());
    r.bytes = d.bytes;
    r.sha256 = d.sha256;
    nm.files.push_back(r);
  };
  for (int t = 0; t < target.tp; ++t) {
    cut_rank(m.tensors, g, target.tp, t, {0, n_local}, params, em, ev);
    FileRecord r;
    r.kind = "model";
    r.tp_rank = t;
    r.path = model_file_name(t);
    write_model_file((tmp / r.path).string(), m.tensors, loff, params.data(), t, target.tp, m.step);
    record(r);
    for (int d = 0; d < target.dp; ++d) {
      if (!stores_optimizer_file(target, d)) continue;
      const FlatRange range = optimizer_range(n_local, target, d);
      FileRecord o;
      o.kind = "optimizer";
      o.tp_rank = t;
      o.dp_rank = d;
      o.path = optimizer_file_name(t, d);
      o.flat_begin = range.begin;
      o.flat_end = range.end;
      o.flat_numel = n_local;
      write_optimizer_file((tmp / o.path).string(), m.tensors, loff, n_local, range, em.data() + range.begin,
                           ev.data() + range.begin, target, t, d, m.step);
      record(o);
    }
  }
  sort_files(nm.files);
  check_complete(nm, tmp.string());
  write_manifest((tmp / "manifest.json").string(), nm);
  fsync_path(tmp.string());
  fs::rename(tmp, out, ec);
  CHORUS_CHECK(!ec, "reshard: cannot rename '%s' to '%s': %s", tmp.c_str(), out.c_str(),
               ec.message().c_str());
  const fs::path parent = fs::absolute(out).parent_path();
  fsync_path(parent.string());
  return nm;
}

void export_weights(const std::string& src, const std::string& out) {
  const Loaded l = load_manifest(src);
  const GlobalState g = read_global(l.dir, l.manifest, false);
  std::vector<WeightsTensorView> views;
  for (size_t i = 0; i < l.manifest.tensors.size(); ++i) {
    const TensorInfo& t = l.manifest.tensors[i];
    views.push_back({t.name, t.global_shape, g.params.data() + g.offsets[i]});
  }
  write_weights_file(out, l.manifest.model, l.manifest.tokenizer_hash, views);
}

void export_safetensors(const std::string& src, const std::string& out_dir, Precision dtype,
                        const ExportTokenizer* tokenizer) {
  const Loaded l = load_manifest(src);
  const Manifest& m = l.manifest;
  CHORUS_CHECK(m.model.is_gpt2(),
               "export: checkpoint '%s' is a GPT with %s (field 'model.arch' of its manifest): the GPT-2 safetensors "
               "layout cannot express %s; export it with `chorus checkpoint export --format chorus` for chorus "
               "generate / finetune-speech",
               l.dir.c_str(), m.model.arch_name().c_str(),
               m.model.pos != models::PosKind::learned          ? "rotary positions"
               : m.model.norm != models::NormKind::layernorm    ? "RMSNorm"
               : m.model.qk_norm                                ? "QK-norm"
               : m.model.mlp != models::MlpKind::gelu           ? "this MLP"
               : !m.model.tied_head                             ? "an untied LM head"
                                                                : "logit soft-capping");
  CHORUS_CHECK(!tokenizer || tokenizer->hash == m.tokenizer_hash,
               "tokenizer: '%s' has hash %s but the checkpoint '%s' was trained with tokenizer %s; give the "
               "run's tokenizer (--tokenizer)",
               tokenizer->source.c_str(), tokenizer->hash.c_str(), l.dir.c_str(), m.tokenizer_hash.c_str());
  const GlobalState g = read_global(l.dir, m, false);
  // GPT-2's Conv1D layers store (in, out); ours are Linear (out, in).
  auto conv1d = [](const std::string& name) {
    for (const char* s :
         {".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"})
      if (name.size() > std::strlen(s) &&
          name.compare(name.size() - std::strlen(s), std::string::npos, s) == 0)
        return true;
    return false;
  };
  struct Out {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> data;
  };
  std::vector<Out> outs;
  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const TensorInfo& t = m.tensors[i];
    const float* p = g.params.data() + g.offsets[i];
    Out o;
    o.name = t.name;
    if (t.name == "wte.weight") {
      const int64_t V = m.model.vocab_size, C = t.global_shape[1];
      o.shape = {V, C};
      o.data.assign(p, p + V * C);
    } else if (conv1d(t.name)) {
      CHORUS_CHECK(t.global_shape.size() == 2, "export: '%s' is not a matrix", t.name.c_str());
      const int64_t R = t.global_shape[0], C = t.global_shape[1];
      o.shape = {C, R};
      o.data.resize(static_cast<size_t>(R * C));
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c) o.data[static_cast<size_t>(c * R + r)] = p[r * C + c];
    } else {
      o.shape = t.global_shape;
      o.data.assign(p, p + t.global_numel());
    }
    outs.push_back(std::move(o));
  }
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"},
                            {"producer", "chorus checkpoint export"},
                            {"chorus_step", std::to_string(m.step)},
                            {"chorus_tokenizer_hash", m.tokenizer_hash}};
  CHORUS_CHECK(dtype == Precision::fp32 || dtype == Precision::bf16, "export: --dtype must be fp32 or bf16, got %s",
               precision_name(dtype));
  const bool half = dtype == Precision::bf16;
  const size_t elem = half ? sizeof(bf16) : sizeof(float);
  uint64_t off = 0;
  for (const auto& o : outs) {
    const uint64_t n = o.data.size() * elem;
    header[o.name] = {{"dtype", half ? "BF16" : "F32"}, {"shape", o.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // data starts 8-byte aligned
  std::string bytes;
  bytes.reserve(8 + h.size() + off);
  const uint64_t hlen = h.size();
  bytes.append(reinterpret_cast<const char*>(&hlen), 8);
  bytes += h;
  std::vector<bf16> rounded;
  for (const auto& o : outs) {
    if (half) {
      rounded.resize(o.data.size());
      convert(rounded.data(), o.data.data(), o.data.size());
      bytes.append(reinterpret_cast<const char*>(rounded.data()), rounded.size() * sizeof(bf16));
    } else {
      bytes.append(reinterpret_cast<const char*>(o.data.data()), o.data.size() * sizeof(float));
    }
  }

  json config = {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"vocab_size", m.model.vocab_size},
      {"n_positions", m.model.context},
      {"n_ctx", m.model.context},
      {"n_embd", m.model.n_embd},
      {"n_layer", m.model.n_layer},
      {"n_head", m.model.n_head},
      {"n_inner", nullptr},
      {"activation_function", "gelu_new"},
      {"resid_pdrop", 0.0},
      {"embd_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"layer_norm_epsilon", 1e-5},
      {"initializer_range", 0.02},
      {"scale_attn_weights", true},
      {"use_cache", true},
      {"tie_word_embeddings", true},
      {"torch_dtype", "float32"},
      {"chorus", {{"step", m.step}, {"tokens_seen", m.tokens_seen}, {"tokenizer_hash", m.tokenizer_hash}}}};
  if (m.eot_token >= 0) {
    config["bos_token_id"] = m.eot_token;
    config["eos_token_id"] = m.eot_token;
  }
  fs::create_directories(out_dir);
  write_durable_rename(fs::path(out_dir) / "model.safetensors", bytes);
  write_durable_rename(fs::path(out_dir) / "config.json", config.dump(2) + "\n");
  if (tokenizer)
    for (const auto& [name, contents] : tokenizer->files)
      write_durable_rename(fs::path(out_dir) / name, contents);
  fsync_path(out_dir);
}

}  // namespace chorus::checkpoint
