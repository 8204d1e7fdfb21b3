// A Chorus tokenizer in the Hugging Face `tokenizers` JSON format
// (tokenizer.json), for the people who load our models elsewhere
// (docs/RELIABILITY.md): `tokenizers.Tokenizer.from_file` or
// transformers' PreTrainedTokenizerFast give the ids Chorus gives.
//
// The construction: no normalizer; pre-tokenizer Sequence[Split(the regex of
// pretokenizer_regex(), Isolated), ByteLevel(add_prefix_space false,
// use_regex false)]; model BPE over GPT-2's byte-to-unicode alphabet with our
// vocabulary (ids unchanged) and merges in rank order; ByteLevel decoder; no
// post-processor (Chorus adds no tokens when encoding). The special tokens
// are added_tokens (special, not normalized) with their Chorus ids.
//
// Where the two differ (and cannot agree):
//   - text with invalid UTF-8: `tokenizers` takes only valid strings;
//   - special-token strings inside text: Hugging Face turns "<|endoftext|>"
//     into its id, Chorus's encode() spells it out in bytes; Chorus puts the
//     ids between the texts itself (documents, speech prompts), which is what
//     the Hugging Face result of the joined text equals.
#pragma once

#include <string>

#include "data/tokenizer.h"

namespace chorus::data {

// tokenizer.json. Throws chorus::Error when two ids have the same bytes (a
// Hugging Face vocabulary maps each string to one id), naming both.
std::string huggingface_tokenizer_json(const Tokenizer& tok);

// tokenizer_config.json for transformers' AutoTokenizer: PreTrainedTokenizerFast,
// <|endoftext|> as bos/eos/unk, model_max_length = context, no clean-up of
// spaces on decode, the language and task tokens as additional special tokens.
std::string huggingface_tokenizer_config_json(const Tokenizer& tok, int context);

}  // namespace chorus::data
