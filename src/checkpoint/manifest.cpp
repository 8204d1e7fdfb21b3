#include "checkpoint/manifest.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <ctime>
#include <map>

#include "checkpoint/durable.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/json_parse.h"

namespace chorus::checkpoint {

using nlohmann::json;

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "something else";
  }
}

// Typed, checked access to one JSON object; errors name the file and the
// dotted field path.
class Fields {
 public:
  Fields(const json& obj, std::string where, std::string path)
      : obj_(obj), where_(std::move(where)), path_(std::move(path)) {
    CHORUS_CHECK(obj_.is_object(), "checkpoint manifest '%s': field '%s': expected an object, found %s",
                 where_.c_str(), path_.empty() ? "(root)" : path_.c_str(), type_name(obj_));
  }
  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const json& at(const std::string& key, const char* expected) const {
    auto it = obj_.find(key);
    CHORUS_CHECK(it != obj_.end(), "checkpoint manifest '%s': field '%s' is missing (expected %s)",
                 where_.c_str(), name(key).c_str(), expected);
    return *it;
  }
  [[noreturn]] void bad(const std::string& key, const char* expected, const json& v) const {
    CHORUS_FAIL("checkpoint manifest '%s': field '%s': expected %s, found %s", where_.c_str(),
                name(key).c_str(), expected, type_name(v));
  }
  int64_t i64(const std::string& key) const {
    const json& v = at(key, "an integer");
    if (v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
      return v.get<int64_t>();
    bad(key, "an integer", v);
  }
  int i32(const std::string& key, int64_t lo = INT32_MIN, int64_t hi = INT32_MAX) const {
    const int64_t v = i64(key);
    CHORUS_CHECK(v >= lo && v <= hi,
                 "checkpoint manifest '%s': field '%s' is %lld, expected a value in [%lld, %lld]",
                 where_.c_str(), name(key).c_str(), static_cast<long long>(v), static_cast<long long>(lo),
                 static_cast<long long>(hi));
    return static_cast<int>(v);
  }
  uint64_t u64(const std::string& key) const {
    const json& v = at(key, "a non-negative integer");
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
    bad(key, "a non-negative integer", v);
  }
  double f64(const std::string& key) const {
    const json& v = at(key, "a number");
    if (v.is_number()) return v.get<double>();
    bad(key, "a number", v);
  }
  // A value outside the float range would become Inf, which the next save
  // writes as null (found by tests/fuzz/manifest_fuzz.cpp).
  float f32(const std::string& key) const {
    const double v = f64(key);
    CHORUS_CHECK(std::abs(v) <= FLT_MAX,
                 "checkpoint manifest '%s': field '%s' is %g, expected a float (|x| <= %g)", where_.c_str(),
                 name(key).c_str(), v, static_cast<double>(FLT_MAX));
    return static_cast<float>(v);
  }
  bool boolean(const std::string& key) const {
    const json& v = at(key, "a boolean");
    if (v.is_boolean()) return v.get<bool>();
    bad(key, "a boolean", v);
  }
  std::string str(const std::string& key) const {
    const json& v = at(key, "a string");
    if (v.is_string()) return v.get<std::string>();
    bad(key, "a string", v);
  }
  Fields object(const std::string& key) const { return Fields(at(key, "an object"), where_, name(key)); }
  const json& array(const std::string& key) const {
    const json& v = at(key, "an array");
    if (!v.is_array()) bad(key, "an array", v);
    return v;
  }
  const std::string& where() const { return where_; }
  bool has(const std::string& key) const { return obj_.contains(key); }

 private:
  const json& obj_;
  std::string where_, path_;
};

std::string hex16(uint64_t v) { return strfmt("%016llx", static_cast<unsigned long long>(v)); }

uint64_t parse_hex16(const std::string& s, const std::string& where, const std::string& field) {
  CHORUS_CHECK(s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos,
               "checkpoint manifest '%s': field '%s': expected 16 lowercase hex digits, found '%s'",
               where.c_str(), field.c_str(), s.c_str());
  return std::stoull(s, nullptr, 16);
}

std::string self_hash(json j) {
  j.erase("manifest_sha256");
  return sha256_hex(j.dump());
}

}  // namespace

uint64_t Manifest::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files) n += f.bytes;
  return n;
}

const RankRng* Manifest::rng_of(int world_rank) const {
  for (const auto& r : rng)
    if (r.world_rank == world_rank) return &r;
  return nullptr;
}

void sort_files(std::vector<FileRecord>& files) {
  std::sort(files.begin(), files.end(), [](const FileRecord& a, const FileRecord& b) {
    if (a.kind != b.kind) return a.kind == "model";
    return std::make_pair(a.tp_rank, a.dp_rank) < std::make_pair(b.tp_rank, b.dp_rank);
  });
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json manifest_to_json(const Manifest& m) {
  json j;
  j["format"] = kManifestFormat;
  j["format_version"] = m.format_version;
  j["created"] = m.created;
  j["model_type"] = m.model_type;
  if (!m.model_extra.is_null()) j["model_extra"] = m.model_extra;
  j["model"] = {{"n_layer", m.model.n_layer},
                {"n_embd", m.model.n_embd},
                {"n_head", m.model.n_head},
                {"vocab_size", m.model.vocab_size},
                {"padded_vocab", m.model.padded_vocab()},
                {"context", m.model.context}};
  if (!m.model.is_gpt2()) j["model"]["arch"] = models::gpt_arch_to_json(m.model);
  j["tokenizer"] = {{"hash", m.tokenizer_hash}, {"eot_token", m.eot_token}};
  j["step"] = m.step;
  j["tokens_seen"] = m.tokens_seen;
  j["sampler"] = {{"consumed", m.sampler.consumed},
                  {"seed", m.sampler.seed},
                  {"seq_len", m.sampler.seq_len},
                  {"samples_per_step", m.sampler.samples_per_step}};
  j["schedule"] = {{"position", m.schedule.position},
                   {"max_lr", m.schedule.max_lr},
                   {"min_lr", m.schedule.min_lr},
                   {"warmup", m.schedule.warmup},
                   {"total_steps", m.schedule.total_steps},
                   {"kind", m.schedule.kind},
                   {"decay_frac", m.schedule.decay_frac}};
  j["optimizer"] = {{"type", m.optimizer.type},
                    {"t", m.optimizer.t},
                    {"beta1", m.optimizer.beta1},
                    {"beta2", m.optimizer.beta2},
                    {"eps", m.optimizer.eps},
                    {"weight_decay", m.optimizer.weight_decay},
                    {"grad_clip", m.optimizer.grad_clip},
                    {"masters", "model"}};
  if (m.optimizer.type == "muon") {
    j["optimizer"]["muon_lr"] = m.optimizer.muon_lr;
    j["optimizer"]["muon_momentum"] = m.optimizer.muon_momentum;
    j["optimizer"]["muon_nesterov"] = m.optimizer.muon_nesterov;
    if (m.optimizer.muon_tensors >= 0) {
      j["optimizer"]["muon_tensors"] = m.optimizer.muon_tensors;
      j["optimizer"]["muon_floats"] = m.optimizer.muon_floats;
    }
  }
  j["loss_scaler"] = {{"enabled", m.loss_scaler.enabled},
                      {"scale", m.loss_scaler.scale},
                      {"good_steps", m.loss_scaler.good_steps},
                      {"skipped_steps", m.loss_scaler.skipped_steps}};
  j["precision"] = m.precision;
  j["layout"] = {
      {"tp", m.layout.tp}, {"dp", m.layout.dp}, {"zero", m.layout.zero}, {"world", m.layout.world()}};
  json rng = json::array();
  for (const auto& r : m.rng)
    rng.push_back({{"world_rank", r.world_rank},
                   {"dp_rank", r.dp_rank},
                   {"tp_rank", r.tp_rank},
                   {"state", {hex16(r.state[0]), hex16(r.state[1]), hex16(r.state[2]), hex16(r.state[3])}}});
  j["rng"] = rng;
  json tensors = json::array();
  for (const auto& t : m.tensors)
    tensors.push_back(
        {{"name", t.name}, {"shape", t.global_shape}, {"tp_axis", t.tp_axis}, {"tp_parts", t.tp_parts}});
  j["tensors"] = tensors;
  json files = json::array();
  for (const auto& f : m.files) {
    json e = {
        {"path", f.path}, {"kind", f.kind}, {"tp_rank", f.tp_rank}, {"bytes", f.bytes}, {"sha256", f.sha256}};
    if (f.kind == "optimizer") {
      e["dp_rank"] = f.dp_rank;
      e["flat_begin"] = f.flat_begin;
      e["flat_end"] = f.flat_end;
      e["flat_numel"] = f.flat_numel;
    }
    files.push_back(e);
  }
  j["files"] = files;
  j["run"] = m.run.is_null() ? json::object() : m.run;
  j["manifest_sha256"] = self_hash(j);
  return j;
}

Manifest manifest_from_json(const json& j, const std::string& where) {
  Fields root(j, where, "");
  const std::string format = root.str("format");
  CHORUS_CHECK(format == kManifestFormat, "checkpoint manifest '%s': field 'format' is '%s', expected '%s'",
               where.c_str(), format.c_str(), kManifestFormat);
  Manifest m;
  m.format_version = root.i32("format_version");
  CHORUS_CHECK(
      m.format_version == kManifestVersion,
      "checkpoint manifest '%s': field 'format_version' is %d, this build reads version %d (HINT: %s)",
      where.c_str(), m.format_version, kManifestVersion,
      m.format_version > kManifestVersion ? "a newer chorus wrote it; upgrade chorus"
                                          : "an older chorus wrote it; no converter exists");
  const std::string want_hash = root.str("manifest_sha256");
  const std::string got_hash = self_hash(j);
  if (want_hash != got_hash)
    throw CorruptCheckpoint(
        strfmt("checkpoint manifest '%s': field 'manifest_sha256' is %s but the manifest hashes to "
               "%s: the manifest is corrupt or was edited",
               where.c_str(), want_hash.c_str(), got_hash.c_str()));
  m.created = root.str("created");

  if (root.has("model_type")) {
    m.model_type = root.str("model_type");
    CHORUS_CHECK(m.model_type == "gpt" || m.model_type == "speech",
                 "checkpoint manifest '%s': field 'model_type' is '%s', expected gpt or speech", where.c_str(),
                 m.model_type.c_str());
  }
  if (auto it = j.find("model_extra"); it != j.end()) m.model_extra = *it;
  Fields model = root.object("model");
  m.model.n_layer = model.i32("n_layer", 1);
  m.model.n_embd = model.i32("n_embd", 1);
  m.model.n_head = model.i32("n_head", 1);
  m.model.vocab_size = model.i32("vocab_size", 1);
  m.model.context = model.i32("context", 1);
  if (const auto& jm = j.at("model"); jm.contains("arch"))
    models::gpt_arch_from_json(m.model, jm.at("arch"), "checkpoint manifest '" + where + "', model");
  try {
    m.model.validate();
  } catch (const Error& e) {
    throw Error(strfmt("checkpoint manifest '%s': field 'model': %s", where.c_str(), e.what()));
  }
  const int padded = model.i32("padded_vocab", 1);
  CHORUS_CHECK(padded == m.model.padded_vocab(),
               "checkpoint manifest '%s': field 'model.padded_vocab' is %d, expected %d for vocab_size %d",
               where.c_str(), padded, m.model.padded_vocab(), m.model.vocab_size);
  Fields tok = root.object("tokenizer");
  m.tokenizer_hash = tok.str("hash");
  m.eot_token = tok.i64("eot_token");
  m.step = root.i64("step");
  CHORUS_CHECK(m.step >= 0, "checkpoint manifest '%s': field 'step' is %lld, expected >= 0", where.c_str(),
               static_cast<long long>(m.step));
  m.tokens_seen = root.u64("tokens_seen");

  Fields s = root.object("sampler");
  m.sampler.consumed = s.u64("consumed");
  m.sampler.seed = s.u64("seed");
  m.sampler.seq_len = s.i32("seq_len", 1);
  m.sampler.samples_per_step = s.u64("samples_per_step");
  Fields sc = root.object("schedule");
  m.schedule.position = sc.i64("position");
  m.schedule.max_lr = sc.f32("max_lr");
  m.schedule.min_lr = sc.f32("min_lr");
  m.schedule.warmup = sc.i64("warmup");
  m.schedule.total_steps = sc.i64("total_steps");
  if (sc.has("kind")) m.schedule.kind = sc.str("kind");
  CHORUS_CHECK(m.schedule.kind == "cosine" || m.schedule.kind == "wsd",
               "checkpoint manifest '%s': field 'schedule.kind' is '%s', expected 'cosine' or 'wsd'", where.c_str(),
               m.schedule.kind.c_str());
  if (sc.has("decay_frac")) m.schedule.decay_frac = sc.f64("decay_frac");
  Fields o = root.object("optimizer");
  if (o.has("type")) m.optimizer.type = o.str("type");
  CHORUS_CHECK(m.optimizer.type == "adamw" || m.optimizer.type == "muon",
               "checkpoint manifest '%s': field 'optimizer.type' is '%s', expected 'adamw' or 'muon'", where.c_str(),
               m.optimizer.type.c_str());
  if (m.optimizer.type == "muon") {
    m.optimizer.muon_lr = o.f32("muon_lr");
    m.optimizer.muon_momentum = o.f32("muon_momentum");
    if (o.has("muon_nesterov")) m.optimizer.muon_nesterov = o.boolean("muon_nesterov");
    if (o.has("muon_tensors")) {
      m.optimizer.muon_tensors = o.i64("muon_tensors");
      m.optimizer.muon_floats = o.i64("muon_floats");
      CHORUS_CHECK(m.optimizer.muon_tensors >= 0 && m.optimizer.muon_floats >= 0,
                   "checkpoint manifest '%s': fields 'optimizer.muon_tensors' / 'muon_floats' must be >= 0",
                   where.c_str());
    }
  }
  m.optimizer.t = o.i64("t");
  m.optimizer.beta1 = o.f32("beta1");
  m.optimizer.beta2 = o.f32("beta2");
  m.optimizer.eps = o.f32("eps");
  m.optimizer.weight_decay = o.f32("weight_decay");
  m.optimizer.grad_clip = o.f32("grad_clip");
  Fields ls = root.object("loss_scaler");
  m.loss_scaler.enabled = ls.boolean("enabled");
  m.loss_scaler.scale = ls.f64("scale");
  // Written since mixed precision; older manifests (fp32 runs) lack them.
  if (ls.has("good_steps")) m.loss_scaler.good_steps = ls.i64("good_steps");
  if (ls.has("skipped_steps")) m.loss_scaler.skipped_steps = ls.i64("skipped_steps");
  if (root.has("precision")) {
    m.precision = root.str("precision");
    CHORUS_CHECK(m.precision == "fp32" || m.precision == "bf16" || m.precision == "fp16",
                 "checkpoint manifest '%s': field 'precision' is '%s', expected fp32, bf16 or fp16", where.c_str(),
                 m.precision.c_str());
  }
  Fields lay = root.object("layout");
  m.layout.tp = lay.i32("tp", 1);
  m.layout.dp = lay.i32("dp", 1, INT32_MAX / m.layout.tp);  // tp x dp fits an int (world())
  m.layout.zero = lay.i32("zero", 0, 1);
  CHORUS_CHECK(lay.i32("world", 1) == m.layout.world(),
               "checkpoint manifest '%s': field 'layout.world' is %d, expected tp x dp = %d", where.c_str(),
               lay.i32("world", 1), m.layout.world());

  const json& rng = root.array("rng");
  for (size_t i = 0; i < rng.size(); ++i) {
    Fields r(rng[i], where, strfmt("rng[%zu]", i));
    RankRng rr;
    rr.world_rank = r.i32("world_rank", 0);
    rr.dp_rank = r.i32("dp_rank", 0);
    rr.tp_rank = r.i32("tp_rank", 0);
    const json& st = r.array("state");
    CHORUS_CHECK(st.size() == 4,
                 "checkpoint manifest '%s': field 'rng[%zu].state': expected 4 words, found %zu",
                 where.c_str(), i, st.size());
    for (size_t w = 0; w < 4; ++w) {
      const std::string field = strfmt("rng[%zu].state[%zu]", i, w);
      CHORUS_CHECK(st[w].is_string(), "checkpoint manifest '%s': field '%s': expected a hex string",
                   where.c_str(), field.c_str());
      rr.state[w] = parse_hex16(st[w].get<std::string>(), where, field);
    }
    m.rng.push_back(rr);
  }

  const json& tensors = root.array("tensors");
  CHORUS_CHECK(!tensors.empty(), "checkpoint manifest '%s': field 'tensors' is empty", where.c_str());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Fields t(tensors[i], where, strfmt("tensors[%zu]", i));
    TensorInfo ti;
    ti.name = t.str("name");
    const json& shape = t.array("shape");
    CHORUS_CHECK(
        shape.size() >= 1 && shape.size() <= 3,
        "checkpoint manifest '%s': field 'tensors[%zu].shape': expected 1 to 3 dimensions, found %zu",
        where.c_str(), i, shape.size());
    for (const auto& d : shape) {
      CHORUS_CHECK(d.is_number_integer() && d.get<int64_t>() > 0,
                   "checkpoint manifest '%s': field 'tensors[%zu].shape': expected positive integers",
                   where.c_str(), i);
      ti.global_shape.push_back(d.get<int64_t>());
    }
    ti.tp_axis = t.i32("tp_axis", -1, static_cast<int64_t>(shape.size()) - 1);
    ti.tp_parts = t.i32("tp_parts", 1);
    m.tensors.push_back(std::move(ti));
  }

  const json& files = root.array("files");
  for (size_t i = 0; i < files.size(); ++i) {
    Fields f(files[i], where, strfmt("files[%zu]", i));
    FileRecord r;
    r.path = f.str("path");
    CHORUS_CHECK(!r.path.empty() && r.path.find('/') == std::string::npos && r.path != "." && r.path != "..",
                 "checkpoint manifest '%s': field 'files[%zu].path' is '%s', expected a plain file name",
                 where.c_str(), i, r.path.c_str());
    r.kind = f.str("kind");
    CHORUS_CHECK(r.kind == "model" || r.kind == "optimizer",
                 "checkpoint manifest '%s': field 'files[%zu].kind' is '%s', expected 'model' or 'optimizer'",
                 where.c_str(), i, r.kind.c_str());
    r.tp_rank = f.i32("tp_rank", 0);
    r.bytes = f.u64("bytes");
    r.sha256 = f.str("sha256");
    CHORUS_CHECK(r.sha256.size() == 64 && r.sha256.find_first_not_of("0123456789abcdef") == std::string::npos,
                 "checkpoint manifest '%s': field 'files[%zu].sha256': expected 64 lowercase hex digits",
                 where.c_str(), i);
    if (r.kind == "optimizer") {
      r.dp_rank = f.i32("dp_rank", 0);
      r.flat_begin = f.u64("flat_begin");
      r.flat_end = f.u64("flat_end");
      r.flat_numel = f.u64("flat_numel");
    }
    m.files.push_back(std::move(r));
  }
  auto it = j.find("run");
  if (it != j.end()) m.run = *it;
  return m;
}

void write_manifest(const std::string& path, const Manifest& m) {
  write_file_durable(path, manifest_to_json(m).dump(1) + "\n");
}

Manifest read_manifest(const std::string& path) {
  std::string text;
  try {
    text = read_small_file(path);
  } catch (const Error& e) {
    throw CorruptCheckpoint(strfmt("checkpoint manifest '%s' cannot be read (incomplete checkpoint?): %s",
                                   path.c_str(), e.what()));
  }
  json j;
  try {
    j = parse_json(text);
  } catch (const std::exception& e) {  // json::exception, or chorus::Error: too deep
    throw CorruptCheckpoint(strfmt("checkpoint manifest '%s': not valid JSON (truncated or corrupt?): %s",
                                   path.c_str(), e.what()));
  }
  return manifest_from_json(j, path);
}

void check_complete(const Manifest& m, const std::string& where) {
  m.layout.validate("checkpoint manifest '" + where + "'");
  size_t n_local = 0;
  try {
    local_offsets(m.tensors, m.layout.tp, &n_local);
  } catch (const Error& e) {
    throw Error(strfmt("checkpoint manifest '%s': the tensor table cannot be split over tp %d: %s",
                       where.c_str(), m.layout.tp, e.what()));
  }
  std::map<std::string, int> seen;
  for (const auto& f : m.files) {
    CHORUS_CHECK(++seen[f.path] == 1, "checkpoint manifest '%s': file '%s' is listed twice", where.c_str(),
                 f.path.c_str());
    CHORUS_CHECK(f.tp_rank < m.layout.tp,
                 "checkpoint manifest '%s': file '%s' has tp_rank %d but the layout has tp %d", where.c_str(),
                 f.path.c_str(), f.tp_rank, m.layout.tp);
  }
  for (int t = 0; t < m.layout.tp; ++t) {
    int n_model = 0;
    std::vector<const FileRecord*> opt;
    for (const auto& f : m.files) {
      if (f.tp_rank != t) continue;
      if (f.kind == "model")
        ++n_model;
      else
        opt.push_back(&f);
    }
    CHORUS_CHECK(n_model == 1,
                 "checkpoint manifest '%s': expected one model file for TP rank %d, found %d (missing "
                 "shard)",
                 where.c_str(), t, n_model);
    const int want_opt = m.layout.zero == 1 ? m.layout.dp : 1;
    CHORUS_CHECK(static_cast<int>(opt.size()) == want_opt,
                 "checkpoint manifest '%s': expected %d optimizer file(s) for TP rank %d (%s), found %zu "
                 "(missing shard)",
                 where.c_str(), want_opt, t, m.layout.describe().c_str(), opt.size());
    std::sort(opt.begin(), opt.end(),
              [](const FileRecord* a, const FileRecord* b) { return a->dp_rank < b->dp_rank; });
    for (size_t i = 0; i < opt.size(); ++i) {
      const FileRecord& f = *opt[i];
      const FlatRange want = optimizer_range(n_local, m.layout, static_cast<int>(i));
      CHORUS_CHECK(
          f.dp_rank == static_cast<int>(i) && f.flat_numel == n_local && f.flat_begin == want.begin &&
              f.flat_end == want.end,
          "checkpoint manifest '%s': optimizer file '%s' (tp %d dp %d) holds [%llu, %llu) of %llu floats, "
          "expected DP rank %zu's [%zu, %zu) of %zu under %s",
          where.c_str(), f.path.c_str(), f.tp_rank, f.dp_rank, static_cast<unsigned long long>(f.flat_begin),
          static_cast<unsigned long long>(f.flat_end), static_cast<unsigned long long>(f.flat_numel), i,
          want.begin, want.end, n_local, m.layout.describe().c_str());
    }
  }
}

void check_matches_run(const Manifest& m, const std::string& where, const models::GptConfig& c,
                       const std::string& tokenizer_hash, const std::string& model_type,
                       const nlohmann::json& model_extra) {
  CHORUS_CHECK(m.model_type == model_type,
               "checkpoint '%s': field 'model_type' is '%s' but this run trains a '%s' model", where.c_str(),
               m.model_type.c_str(), model_type.c_str());
  CHORUS_CHECK(model_extra.is_null() || m.model_extra == model_extra,
               "checkpoint '%s': field 'model_extra' is %s but this run's model is %s (a checkpoint resumes only the "
               "model it was saved from)",
               where.c_str(), m.model_extra.dump().c_str(), model_extra.dump().c_str());
  auto same = [&](const char* field, int ckpt, int run) {
    CHORUS_CHECK(
        ckpt == run,
        "checkpoint '%s': field 'model.%s' is %d but this run's model has %d (a checkpoint resumes only the "
        "model it was saved from)",
        where.c_str(), field, ckpt, run);
  };
  same("n_layer", m.model.n_layer, c.n_layer);
  same("n_embd", m.model.n_embd, c.n_embd);
  same("n_head", m.model.n_head, c.n_head);
  same("vocab_size", m.model.vocab_size, c.vocab_size);
  same("context", m.model.context, c.context);
  CHORUS_CHECK(m.model.arch_name() == c.arch_name() && models::gpt_arch_to_json(m.model) == models::gpt_arch_to_json(c),
               "checkpoint '%s': field 'model.arch' is %s (%s) but this run's model is %s (%s) (a checkpoint resumes "
               "only the model it was saved from)",
               where.c_str(), m.model.arch_name().c_str(), models::gpt_arch_to_json(m.model).dump().c_str(),
               c.arch_name().c_str(), models::gpt_arch_to_json(c).dump().c_str());
  CHORUS_CHECK(
      tokenizer_hash.empty() || m.tokenizer_hash == tokenizer_hash,
      "checkpoint '%s': field 'tokenizer.hash' is %s but this run's tokenizer has hash %s (resume with the "
      "tokenizer the checkpoint was trained with)",
      where.c_str(), m.tokenizer_hash.c_str(), tokenizer_hash.c_str());
}

void check_tensors_match(const Manifest& m, const std::string& where, const std::vector<TensorInfo>& model) {
  CHORUS_CHECK(m.tensors.size() == model.size(),
               "checkpoint '%s': field 'tensors' lists %zu tensors but the model has %zu", where.c_str(),
               m.tensors.size(), model.size());
  auto shape_str = [](const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + ")";
  };
  for (size_t i = 0; i < model.size(); ++i) {
    const auto &a = m.tensors[i], &b = model[i];
    CHORUS_CHECK(a.name == b.name, "checkpoint '%s': tensors[%zu] is '%s' but the model's is '%s'",
                 where.c_str(), i, a.name.c_str(), b.name.c_str());
    CHORUS_CHECK(a.global_shape == b.global_shape,
                 "checkpoint '%s': tensor '%s' has global shape %s, the model %s", where.c_str(),
                 a.name.c_str(), shape_str(a.global_shape).c_str(), shape_str(b.global_shape).c_str());
    CHORUS_CHECK(a.tp_axis == b.tp_axis && a.tp_parts == b.tp_parts,
                 "checkpoint '%s': tensor '%s' is split on axis %d in %d part(s), the model on axis %d in %d",
                 where.c_str(), a.name.c_str(), a.tp_axis, a.tp_parts, b.tp_axis, b.tp_parts);
  }
}

}  // namespace chorus::checkpoint
