#include "train/generate.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace chorus::train {

uint32_t sample_logits(const float* logits, int vocab_size, float temperature, int top_k, float u,
                       std::vector<std::pair<float, uint32_t>>& scratch) {
  if (temperature <= 0.0f) {
    return static_cast<uint32_t>(std::max_element(logits, logits + vocab_size) - logits);
  }
  scratch.resize(static_cast<size_t>(vocab_size));
  for (int i = 0; i < vocab_size; ++i) scratch[i] = {logits[i] / temperature, static_cast<uint32_t>(i)};
  size_t k = (top_k > 0 && top_k < vocab_size) ? static_cast<size_t>(top_k) : scratch.size();
  auto by_value = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::partial_sort(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(k), scratch.end(), by_value);
  const float max_logit = scratch[0].first;
  double total = 0.0;
  for (size_t i = 0; i < k; ++i) total += std::exp(static_cast<double>(scratch[i].first - max_logit));
  double target = static_cast<double>(u) * total, acc = 0.0;
  for (size_t i = 0; i < k; ++i) {
    acc += std::exp(static_cast<double>(scratch[i].first - max_logit));
    if (acc > target) return scratch[i].second;
  }
  return scratch[k - 1].second;
}

std::vector<uint32_t> generate(models::Gpt& model, const std::vector<uint32_t>& prompt,
                               const GenerateOptions& opt, uint32_t stop_token,
                               const std::function<void(uint32_t)>& on_token) {
  const auto& cfg = model.config();
  CHORUS_CHECK(!prompt.empty(), "prompt: must hold at least one token");
  CHORUS_CHECK(static_cast<int>(prompt.size()) < cfg.context,
               "prompt: %zu tokens do not fit the context of %d", prompt.size(), cfg.context);
  for (uint32_t id : prompt)
    CHORUS_CHECK(id < static_cast<uint32_t>(cfg.vocab_size), "prompt: token %u >= vocab size %d", id,
                 cfg.vocab_size);
  Rng rng(opt.seed, 0x67656eull);
  std::vector<std::pair<float, uint32_t>> scratch;
  std::vector<uint32_t> out;
  model.reset_cache(1);
  const float* logits = nullptr;
  int pos = 0;
  for (uint32_t id : prompt) {
    int32_t tok = static_cast<int32_t>(id);
    logits = model.decode_step(&tok, pos++);
  }
  while (static_cast<int>(out.size()) < opt.max_new_tokens && pos < cfg.context) {
    uint32_t next = sample_logits(logits, cfg.vocab_size, opt.temperature, opt.top_k, rng.uniform(), scratch);
    if (next == stop_token) break;
    out.push_back(next);
    if (on_token) on_token(next);
    if (pos >= cfg.context) break;
    int32_t tok = static_cast<int32_t>(next);
    logits = model.decode_step(&tok, pos++);
  }
  return out;
}

}  // namespace chorus::train
