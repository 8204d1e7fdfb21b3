// The Hugging Face tokenizer.json of a Chorus tokenizer (data/hf_tokenizer.h):
// an independent reader written from the format's description
// (hf_tokenizer_check.py, no Chorus code) splits a multilingual text with
// special tokens and odd characters into the same pre-tokens, gets the same
// ids as Chorus and decodes them back to the text.
#include "data/hf_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "common/process.h"
#include "core/error.h"

namespace chorus::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_all(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_all(const fs::path& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

// The first whole lines of datasets/text/<lang>.txt, about n bytes.
std::string head_lines(const std::string& lang, size_t n) {
  const std::string all = read_all(std::string(CHORUS_SOURCE_DIR) + "/datasets/text/" + lang + ".txt");
  const size_t end = all.find('\n', std::min(n, all.size() - 1));
  return all.substr(0, end == std::string::npos ? all.size() : end + 1);
}

struct Segment {
  std::string text;
  bool special = false;  // a special token's string, which Chorus puts in as its id
};

// Every language's text behind its <|xx|> token, documents separated by
// <|endoftext|>, a speech prompt, and characters at each pre-tokenizer rule.
std::vector<Segment> sample() {
  std::vector<Segment> s;
  for (const auto& lang : default_languages()) {
    s.push_back({"<|" + lang + "|>", true});
    s.push_back({head_lines(lang, 300)});
    s.push_back({"<|endoftext|>", true});
  }
  for (const char* t : {"<|startoftranscript|>", "<|de|>", "<|transcribe|>", "<|notimestamps|>"})
    s.push_back({t, true});
  s.push_back({" Guten Tag, wie geht's?"});
  s.push_back({"<|endoftext|>", true});
  s.push_back({std::string("  two spaces, \t\ttabs, \t mixed \t word,   three, trailing   \n   \n\r\n\r\n"
                           "\v\f form feeds\t\n end  ") +
               std::string(1, '\0') +
               "nul \x01\x02\x7f control, C1 \u0085, nbsp a\u00a0b, x\u00d7y\u00f7z"
               " 1234567 890 12 a1b22c333d4444 \u0661\u0662\u0663\u0664 \u0966\u0967\u0968\u0969 "
               "\uff11\uff12\uff13\uff14 1\u03012\u03013\u03014\u0301 "
               "e\u0301\u0301 \u0301abc  \u0301x \u0301 caf\u00e9 "
               "\U0001F469\u200d\U0001F469\u200d\U0001F467 \U0001F44D\U0001F3FD \u263A\uFE0F "
               "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F "
               "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \u65e5\u672c\u8a9eabc\u4e2d\u6587123"
               "\u30ab\u30bf\u30ab\u30ca \uff76\uff80\uff76\uff85 \U00020000\U00020001 "
               "\ud55c\uad6d\uc5b4 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u2028 \ufffd \ue000 \U0010FFFF"
               " \u3001\u3002\u300c\u300d (\u00bfqu\u00e9?) \u060c\u061f <|notaspecial|> <|endoftext <"});
  s.push_back({"<|endoftext|>", true});
  s.push_back({"|> end"});
  return s;
}

TEST(HuggingFaceTokenizer, AnIndependentReaderGetsChorusPretokensAndIdsAndDecodesBack) {
  if (chorus::testing::sh("/usr/bin/python3 -c 'import json, re'").code != 0)
    GTEST_SKIP() << "/usr/bin/python3 is not available";
  std::vector<std::string> corpus;
  for (const auto& lang : default_languages()) corpus.push_back(head_lines(lang, 6000));
  TokenizerTrainOptions opt;
  opt.vocab_size = 3000;
  opt.progress = false;
  const Tokenizer tok = Tokenizer::train_texts(corpus, opt);
  ASSERT_EQ(tok.vocab_size(), 3000);

  const fs::path dir = fs::temp_directory_path() / ("chorus_hf_tok_" + std::to_string(getpid()));
  fs::create_directories(dir);
  write_all(dir / "tokenizer.json", huggingface_tokenizer_json(tok));
  std::string text;
  std::vector<uint32_t> ids;
  std::vector<std::string> pieces;
  for (const Segment& seg : sample()) {
    text += seg.text;
    if (seg.special) {
      ids.push_back(tok.special(seg.text));
      continue;
    }
    const auto e = tok.encode(seg.text);
    ids.insert(ids.end(), e.begin(), e.end());
    for (auto p : Tokenizer::pretokens(seg.text)) pieces.emplace_back(p);
  }
  write_all(dir / "text.txt", text);

  const std::string args =
      chorus::strfmt(" %s %s", (dir / "tokenizer.json").c_str(), (dir / "text.txt").c_str());
  const std::string checks = std::string(CHORUS_SOURCE_DIR) + "/tests/data/hf_tokenizer_check";
  const auto r = chorus::testing::sh("/usr/bin/python3 " + checks + ".py" + args);
  // Hugging Face's own library too, where its npm package is on NODE_PATH.
  const bool have_hf = chorus::testing::sh("node -e \"require('@anush008/tokenizers')\"").code == 0;
  const auto hf = have_hf ? chorus::testing::sh("node " + checks + ".js" + args) : chorus::testing::Result{};
  fs::remove_all(dir);
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j.at("gaps"), 0) << "the regex must match every character";
  const auto theirs_pieces = j.at("pieces").get<std::vector<std::string>>();
  ASSERT_EQ(theirs_pieces.size(), pieces.size());
  for (size_t i = 0; i < pieces.size(); ++i) ASSERT_EQ(theirs_pieces[i], pieces[i]) << "pre-token " << i;
  const auto theirs = j.at("ids").get<std::vector<uint32_t>>();
  ASSERT_EQ(theirs.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    ASSERT_EQ(theirs[i], ids[i]) << "id " << i << " ('" << tok.token_bytes(ids[i]) << "')";
  EXPECT_TRUE(j.at("roundtrip").get<bool>());
  EXPECT_LT(ids.size(), text.size() / 2) << "the merges must really be used";
  std::printf("[ hf      ] %zu bytes, %zu pre-tokens, %zu ids agree\n", text.size(), pieces.size(),
              ids.size());
  if (!have_hf) {
    std::printf(
        "[ hf      ] Hugging Face tokenizers (npm @anush008/tokenizers on NODE_PATH) not found: not run\n");
    return;
  }
  ASSERT_EQ(hf.code, 0) << hf.out;
  const json h = json::parse(hf.out);
  EXPECT_EQ(h.at("ids").get<std::vector<uint32_t>>(), ids) << "Hugging Face tokenizers";
  EXPECT_TRUE(h.at("roundtrip").get<bool>()) << "Hugging Face tokenizers";
  std::printf("[ hf      ] Hugging Face tokenizers: the same %zu ids, decoded back\n", h.at("ids").size());
}

TEST(HuggingFaceTokenizer, KeepsChorusIdsAndNamesTheSpecials) {
  TokenizerTrainOptions opt;
  opt.vocab_size = 256 + 37 + 40;
  opt.progress = false;
  const Tokenizer tok = Tokenizer::train_texts({"hello hello world world, the the the\n"}, opt);
  const json j = json::parse(huggingface_tokenizer_json(tok));
  const json& vocab = j.at("model").at("vocab");
  EXPECT_EQ(vocab.size(), size_t(tok.vocab_size()));
  EXPECT_EQ(vocab.at("\u0120"), 32) << "' ' is GPT-2's U+0120";
  EXPECT_EQ(vocab.at("a"), 'a');
  EXPECT_EQ(vocab.at("\u0100"), 0);
  EXPECT_EQ(vocab.at("\u00ff"), 255);
  EXPECT_EQ(j.at("model").at("merges").size(), tok.merges().size());
  ASSERT_EQ(j.at("added_tokens").size(), tok.specials().size());
  EXPECT_EQ(j.at("added_tokens")[0].at("content"), "<|endoftext|>");
  EXPECT_EQ(j.at("added_tokens")[0].at("id"), tok.eot());
  EXPECT_TRUE(j.at("added_tokens")[0].at("special").get<bool>());
  EXPECT_EQ(vocab.at("<|endoftext|>"), tok.eot());
  const json cfg = json::parse(huggingface_tokenizer_config_json(tok, 64));
  EXPECT_EQ(cfg.at("eos_token"), "<|endoftext|>");
  EXPECT_EQ(cfg.at("model_max_length"), 64);
  EXPECT_EQ(cfg.at("additional_special_tokens").size(), tok.specials().size() - 1);
}

TEST(HuggingFaceTokenizer, TwoIdsWithTheSameBytesAreRefusedNamingBoth) {
  // merges: (a, b) -> 256, (256, c) -> 257 "abc", (b, c) -> 258, (a, 258) -> 259 "abc" again
  const fs::path path = fs::temp_directory_path() / ("chorus_hf_dup_" + std::to_string(getpid()) + ".json");
  auto file = [&](const std::string& hash) {
    return "{\"format\": \"chorus-bpe\", \"version\": 1, \"vocab_size\": 262, \"merges\": [[97, 98], [256, "
           "99], "
           "[98, 99], [97, 258]], \"specials\": [\"<|endoftext|>\", \"<|x|>\"], \"languages\": [\"x\"], "
           "\"hash\": \"" +
           hash + "\"}";
  };
  write_all(path, file("0"));
  std::string hash;
  try {
    Tokenizer::load(path.string());
  } catch (const Error& e) {  // the message names the real hash of these merges
    std::smatch m;
    const std::string what = e.what();
    ASSERT_TRUE(std::regex_search(what, m, std::regex("hash to \"([0-9a-f]+)\""))) << what;
    hash = m[1];
  }
  write_all(path, file(hash));
  const Tokenizer tok = Tokenizer::load(path.string());
  fs::remove(path);
  try {
    huggingface_tokenizer_json(tok);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ids 257 and 259 are the same string 'abc'"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace chorus::data
