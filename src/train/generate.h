// Sampling text from a GPT with its KV cache: temperature and top-k
// (temperature 0 = greedy). Decoding policy lives here, apart from the model math.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/gpt/gpt.h"

namespace chorus::train {

struct GenerateOptions {
  int max_new_tokens = 200;
  float temperature = 0.8f;   // 0 = greedy (argmax)
  int top_k = 40;             // 0 = whole vocabulary
  uint64_t seed = 1;
};

// Feeds `prompt` (non-empty, ids < vocab_size) through the model's KV cache,
// then samples up to max_new_tokens ids, stopping early at stop_token (not
// included in the result; UINT32_MAX never stops) or at the model's context length. on_token, when
// set, is called with each new id as it is produced (streaming output).
// The model must have been built with max_batch >= 1.
std::vector<uint32_t> generate(models::Gpt& model, const std::vector<uint32_t>& prompt,
                               const GenerateOptions& opt, uint32_t stop_token,
                               const std::function<void(uint32_t)>& on_token = {});

// Samples one id from logits[0, vocab_size) with temperature / top-k using u,
// a uniform draw in [0, 1). Exposed for tests.
uint32_t sample_logits(const float* logits, int vocab_size, float temperature, int top_k, float u,
                       std::vector<std::pair<float, uint32_t>>& scratch);

}  // namespace chorus::train
