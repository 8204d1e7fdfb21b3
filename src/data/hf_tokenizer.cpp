// Hugging Face tokenizer.json writer; see hf_tokenizer.h for the construction.
#include "data/hf_tokenizer.h"

#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace chorus::data {

namespace {

using ordered_json = nlohmann::ordered_json;

// GPT-2's bytes_to_unicode (openai/gpt-2 src/encoder.py): '!'..'~', 0xA1..0xAC
// and 0xAE..0xFF stand for themselves; the other bytes, in order, become
// U+0100, U+0101, ... Returned as UTF-8.
std::string byte_char(unsigned char b) {
  auto prints = [](unsigned c) { return (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE; };
  unsigned cp = b;
  if (!prints(b)) {
    cp = 256;
    for (unsigned c = 0; c < b; ++c) cp += !prints(c);
  }
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else {  // < 0x800
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string byte_level(const std::string& bytes) {
  std::string s;
  for (char c : bytes) s += byte_char(static_cast<unsigned char>(c));
  return s;
}

ordered_json added_token(uint32_t id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

}  // namespace

std::string huggingface_tokenizer_json(const Tokenizer& tok) {
  const auto& merges = tok.merges();
  const uint32_t n_specials_begin = 256 + uint32_t(merges.size());
  ordered_json vocab = ordered_json::object();
  std::map<std::string, uint32_t> seen;
  for (uint32_t id = 0; id < uint32_t(tok.vocab_size()); ++id) {
    const std::string s = id < n_specials_begin ? byte_level(tok.token_bytes(id)) : tok.token_bytes(id);
    auto [it, fresh] = seen.emplace(s, id);
    CHORUS_CHECK(
        fresh,
        "Hugging Face export of tokenizer %.16s...: ids %u and %u are the same string '%s'; a Hugging "
        "Face vocabulary maps each string to one id, so this tokenizer has no exact tokenizer.json",
        tok.hash().c_str(), it->second, id, s.c_str());
    vocab[s] = id;
  }
  ordered_json merge_list = ordered_json::array();
  for (const auto& [a, b] : merges)
    merge_list.push_back(byte_level(tok.token_bytes(a)) + " " + byte_level(tok.token_bytes(b)));
  ordered_json added = ordered_json::array();
  for (uint32_t i = 0; i < tok.specials().size(); ++i)
    added.push_back(added_token(n_specials_begin + i, tok.specials()[i]));
  const ordered_json byte_level_step = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};

  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"},
                           {"pattern", {{"Regex", pretokenizer_regex()}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          byte_level_step}}};
  j["post_processor"] = nullptr;
  j["decoder"] = byte_level_step;
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merge_list}};
  return j.dump(1) + "\n";
}

std::string huggingface_tokenizer_config_json(const Tokenizer& tok, int context) {
  std::vector<std::string> extra;
  for (const auto& s : tok.specials())
    if (s != "<|endoftext|>") extra.push_back(s);
  const ordered_json j = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                          {"bos_token", "<|endoftext|>"},
                          {"eos_token", "<|endoftext|>"},
                          {"unk_token", "<|endoftext|>"},
                          {"additional_special_tokens", extra},
                          {"model_max_length", context},
                          {"clean_up_tokenization_spaces", false}};
  return j.dump(2) + "\n";
}

}  // namespace chorus::data
