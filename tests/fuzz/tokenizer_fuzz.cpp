// libFuzzer target: the tokenizer.
//   - Tokenizer::load on the bytes as a tokenizer JSON file (refused or loaded);
//     a loaded tokenizer must round-trip the rest of the input through
//     encode/decode;
//   - a fixed tokenizer (trained once on a small text) must round-trip the
//     bytes exactly through encode -> decode (any bytes, invalid UTF-8 too),
//     with every id < vocab_size;
//   - decode of the bytes read as ids: accepted exactly when every id is in
//     range.
#include <cstring>

#include "data/tokenizer.h"
#include "fuzz_common.h"

using namespace chorus;

namespace {

const data::Tokenizer& fixed_tokenizer() {
  static const data::Tokenizer tok = [] {
    data::TokenizerTrainOptions opt;
    opt.vocab_size = 256 + 50 + 60;
    opt.languages = {"en", "de"};
    opt.n_threads = 1;
    opt.progress = false;
    return data::Tokenizer::train_texts(
        {"the quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!\n",
         "Der schnelle braune Fuchs springt über den faulen Hund. 123 456 7890 ... ?!\n",
         "ünïcödé “quotes” — dashes, tabs\tand  spaces   and\r\nnewlines 日本語 😀"},
        opt);
  }();
  return tok;
}

void check_round_trip(const data::Tokenizer& tok, std::string_view text) {
  const std::vector<uint32_t> ids = tok.encode(text);
  for (uint32_t id : ids) FUZZ_ASSERT(id < static_cast<uint32_t>(tok.vocab_size()));
  FUZZ_ASSERT(tok.decode(ids) == text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const std::string path = fuzz::write_scratch("tokenizer.json", data, size);
  data::Tokenizer loaded;
  if (fuzz::accepts([&] { loaded = data::Tokenizer::load(path); })) {
    FUZZ_ASSERT(loaded.vocab_size() >= 256);
    check_round_trip(loaded, text.substr(0, 256));
  }

  const data::Tokenizer& tok = fixed_tokenizer();
  check_round_trip(tok, text);

  std::vector<uint32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  bool in_range = true;
  for (uint32_t& id : ids) {
    id %= static_cast<uint32_t>(tok.vocab_size()) + 4;  // mostly valid, sometimes just past the end
    in_range = in_range && id < static_cast<uint32_t>(tok.vocab_size());
  }
  FUZZ_ASSERT(fuzz::accepts([&] { tok.decode(ids); }) == in_range);
  return 0;
}
