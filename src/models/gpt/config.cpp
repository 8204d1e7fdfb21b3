// GptConfig checks and the architecture options' names and JSON, apart from
// the model code so that parsers of configs and manifests (and the fuzz
// targets of tests/fuzz) link without the model.
#include <climits>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/strfmt.h"
#include "models/gpt/gpt.h"

namespace chorus::models {

const char* pos_name(PosKind k) { return k == PosKind::rotary ? "rotary" : "learned"; }
const char* norm_name(NormKind k) { return k == NormKind::rmsnorm ? "rmsnorm" : "layernorm"; }
const char* mlp_name(MlpKind k) {
  switch (k) {
    case MlpKind::relu2: return "relu2";
    case MlpKind::swiglu: return "swiglu";
    case MlpKind::gelu: break;
  }
  return "gelu";
}

PosKind parse_pos(const std::string& s, const std::string& field) {
  if (s == "learned") return PosKind::learned;
  CHORUS_CHECK(s == "rotary", "%s: expected learned or rotary, got '%s'", field.c_str(), s.c_str());
  return PosKind::rotary;
}
NormKind parse_norm(const std::string& s, const std::string& field) {
  if (s == "layernorm") return NormKind::layernorm;
  CHORUS_CHECK(s == "rmsnorm", "%s: expected layernorm or rmsnorm, got '%s'", field.c_str(), s.c_str());
  return NormKind::rmsnorm;
}
MlpKind parse_mlp(const std::string& s, const std::string& field) {
  if (s == "gelu") return MlpKind::gelu;
  if (s == "relu2") return MlpKind::relu2;
  CHORUS_CHECK(s == "swiglu", "%s: expected gelu, relu2 or swiglu, got '%s'", field.c_str(), s.c_str());
  return MlpKind::swiglu;
}

std::string GptConfig::arch_name() const {
  if (is_gpt2()) return "gpt2";
  std::string s;
  auto add = [&](const std::string& w) { s += (s.empty() ? "" : " ") + w; };
  if (pos != PosKind::learned) add(pos_name(pos));
  if (norm != NormKind::layernorm) add(norm_name(norm));
  if (qk_norm) add("qk-norm");
  if (mlp != MlpKind::gelu) add(mlp_name(mlp));
  if (!tied_head) add("untied");
  if (logit_softcap > 0.0f) add(strfmt("softcap=%g", static_cast<double>(logit_softcap)));
  return s;
}

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
  CHORUS_CHECK(pos != PosKind::rotary || (n_embd / n_head) % 2 == 0,
               "GptConfig.pos: rotary needs an even head size, n_embd / n_head = %d", n_embd / n_head);
  CHORUS_CHECK(std::isfinite(logit_softcap) && logit_softcap >= 0.0f,
               "GptConfig.logit_softcap: must be >= 0 (0 = off), got %g", static_cast<double>(logit_softcap));
  CHORUS_CHECK(std::isfinite(rope_theta) && rope_theta > 1.0f, "GptConfig.rope_theta: must be > 1, got %g",
               static_cast<double>(rope_theta));
}

nlohmann::json gpt_arch_to_json(const GptConfig& c) {
  if (c.is_gpt2()) return nlohmann::json::object();
  return {{"pos", pos_name(c.pos)},         {"norm", norm_name(c.norm)},
          {"qk_norm", c.qk_norm},           {"mlp", mlp_name(c.mlp)},
          {"tied_head", c.tied_head},       {"logit_softcap", c.logit_softcap},
          {"rope_theta", c.rope_theta}};
}

void gpt_arch_from_json(GptConfig& c, const nlohmann::json& j, const std::string& where) {
  CHORUS_CHECK(j.is_object(), "%s: field 'arch' must be an object, got %s", where.c_str(), j.dump().c_str());
  auto str = [&](const char* key) -> std::string {
    const auto& v = j.at(key);
    CHORUS_CHECK(v.is_string(), "%s: field 'arch.%s' must be a string, got %s", where.c_str(), key, v.dump().c_str());
    return v.get<std::string>();
  };
  auto boolean = [&](const char* key) {
    const auto& v = j.at(key);
    CHORUS_CHECK(v.is_boolean(), "%s: field 'arch.%s' must be true or false, got %s", where.c_str(), key,
                 v.dump().c_str());
    return v.get<bool>();
  };
  auto number = [&](const char* key) {
    const auto& v = j.at(key);
    CHORUS_CHECK(v.is_number(), "%s: field 'arch.%s' must be a number, got %s", where.c_str(), key, v.dump().c_str());
    return v.get<float>();
  };
  for (const auto& [key, v] : j.items()) {
    (void)v;
    CHORUS_CHECK(key == "pos" || key == "norm" || key == "qk_norm" || key == "mlp" || key == "tied_head" ||
                     key == "logit_softcap" || key == "rope_theta",
                 "%s: field 'arch.%s' is unknown (a newer chorus wrote it?)", where.c_str(), key.c_str());
  }
  const std::string at = where + ": field 'arch.";
  if (j.contains("pos")) c.pos = parse_pos(str("pos"), at + "pos'");
  if (j.contains("norm")) c.norm = parse_norm(str("norm"), at + "norm'");
  if (j.contains("qk_norm")) c.qk_norm = boolean("qk_norm");
  if (j.contains("mlp")) c.mlp = parse_mlp(str("mlp"), at + "mlp'");
  if (j.contains("tied_head")) c.tied_head = boolean("tied_head");
  if (j.contains("logit_softcap")) c.logit_softcap = number("logit_softcap");
  if (j.contains("rope_theta")) c.rope_theta = number("rope_theta");
}

}  // namespace chorus::models
