// GptConfig checks, apart from the model code so that parsers of configs and
// manifests (and the fuzz targets of tests/fuzz) link without the model.
#include <climits>

#include "core/error.h"
#include "models/gpt/gpt.h"

namespace chorus::models {

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

}  // namespace chorus::models
