// Byte-level BPE tokenizer: round trips, determinism, compression, special
// tokens, file format validation.
#include "data/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/rng.h"

namespace chorus::data {
namespace {

namespace fs = std::filesystem;

const std::string kTextDir = std::string(CHORUS_SOURCE_DIR) + "/datasets/text/";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

// Bytes [offset, offset + n) of datasets/text/<lang>.txt (may cut a UTF-8
// character in two, which the tokenizer must handle anyway).
std::string text_slice(const std::string& lang, size_t offset, size_t n) {
  const std::string all = read_all(kTextDir + lang + ".txt");
  return offset >= all.size() ? std::string() : all.substr(offset, n);
}

std::vector<std::string> real_corpus() {
  std::vector<std::string> texts;
  for (const char* lang : {"en", "de", "zh", "ru"}) texts.push_back(text_slice(lang, 0, 100 * 1000));
  return texts;
}

TokenizerTrainOptions options(int vocab_size, int n_threads = 0) {
  TokenizerTrainOptions opt;
  opt.vocab_size = vocab_size;
  opt.n_threads = n_threads;
  opt.progress = false;
  return opt;
}

// Trained once per test process (ctest runs each test in its own process).
const Tokenizer& small_tokenizer() {
  static const Tokenizer tok = [] {
    std::vector<std::string> texts = {
        "the quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!\n",
        "Съешь же ещё этих мягких французских булок, да выпей чаю.\n",
        "我能吞下玻璃而不伤身体。我能吞下玻璃而不伤身体。\n",
        "In 1948, 12345 people read 3.14159 numbers; then 2024 more did.\n",
    };
    TokenizerTrainOptions opt = options(256 + 37 + 120);
    return Tokenizer::train_texts(texts, opt);
  }();
  return tok;
}

const Tokenizer& real_tokenizer() {
  static const Tokenizer tok = Tokenizer::train_texts(real_corpus(), options(2048));
  return tok;
}

const std::vector<std::string>& script_samples() {
  static const std::vector<std::string> samples = {
      "Hello, world! It's 2024: 3.14159 is pi.  Two  spaces\tand a tab.\n\nNew paragraph.",
      "Über Größe, façade, naïve café — «quotes» and ¿preguntas? ¡sí!",
      "Съешь же ещё этих мягких французских булок, да выпей чаю.",
      "我能吞下玻璃而不伤身体。联合国大会1948年12月10日通过《世界人权宣言》。",
      "日本語のテキスト、カタカナとひらがな。한국어 텍스트입니다.",
      "مرحبا بالعالم، كيف حالك؟ ١٢٣٤٥",
      "नमस्ते दुनिया। यह एक परीक्षण है। १२३",
      "สวัสดีชาวโลก นี่คือการทดสอบ ๑๒๓",
      "Γειά σου Κόσμε! שלום עולם! می‌خواهم بروم",
      "emoji 👍🏽 family 👨‍👩‍👧 heart ❤️ flag 🇩🇪 done",
      "e\xcc\x81 combining, NBSP\xc2\xa0here, \xe3\x80\x80ideographic space",
      "trailing spaces   \n  \r\n\r\n\t\t  ",
      "",
      " ",
      "a",
  };
  return samples;
}

std::string random_bytes(Rng& rng, size_t n, int mode) {
  std::string s(n, '\0');
  const char* ascii = "abcdefghij ABC 0123 .,;!?\n\t";
  for (auto& c : s) {
    switch (mode) {
      case 0:  // any byte, NULs included
        c = char(rng.below(256));
        break;
      case 1:  // mostly ASCII words and whitespace, some high bytes
        c = rng.below(8) == 0 ? char(0x80 + rng.below(128)) : ascii[rng.below(27)];
        break;
      default:  // lead bytes and continuation bytes mixed: lots of invalid UTF-8
        c = char(rng.below(2) ? 0xC0 + rng.below(64) : 0x80 + rng.below(64));
        if (rng.below(10) == 0) c = '\0';
        break;
    }
  }
  return s;
}

void expect_round_trip(const Tokenizer& tok, const std::string& s) {
  const std::vector<uint32_t> ids = tok.encode(s);
  for (uint32_t id : ids) ASSERT_LT(id, uint32_t(tok.vocab_size()));
  ASSERT_EQ(tok.decode(ids), s) << "round trip failed for a string of " << s.size() << " bytes";
}

// Textbook BPE on one pre-token: merge the lowest-rank pair everywhere, left
// to right, and repeat. The reference the heap-based encoder must match.
std::vector<uint32_t> reference_bpe(const std::string& s, const std::vector<std::pair<uint32_t, uint32_t>>& merges) {
  std::vector<uint32_t> ids(s.begin(), s.end());
  for (auto& id : ids) id &= 0xFF;
  while (ids.size() > 1) {
    size_t best = merges.size();
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      for (size_t r = 0; r < best; ++r) {
        if (merges[r].first == ids[i] && merges[r].second == ids[i + 1]) {
          best = r;
          break;
        }
      }
    }
    if (best == merges.size()) break;
    std::vector<uint32_t> out;
    for (size_t i = 0; i < ids.size();) {
      if (i + 1 < ids.size() && ids[i] == merges[best].first && ids[i + 1] == merges[best].second) {
        out.push_back(256 + uint32_t(best));
        i += 2;
      } else {
        out.push_back(ids[i++]);
      }
    }
    ids = std::move(out);
  }
  return ids;
}

class TokenizerFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("chorus_tokenizer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Saves the small tokenizer, lets `edit` change its JSON, writes the result
  // to a new file and expects load() to throw naming the file and every needle.
  void expect_corrupt(const std::string& name, const std::function<void(nlohmann::json&)>& edit,
                      std::initializer_list<const char*> needles) {
    const std::string good = path("good.json");
    small_tokenizer().save(good);
    nlohmann::json j = nlohmann::json::parse(read_all(good));
    edit(j);
    const std::string bad = path(name);
    write_all(bad, j.dump(1));
    expect_load_error(bad, needles);
  }
  void expect_load_error(const std::string& file, std::initializer_list<const char*> needles) {
    try {
      Tokenizer::load(file);
      FAIL() << "load(" << file << ") did not throw";
    } catch (const chorus::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << msg;
      for (const char* n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
  }

  fs::path dir_;
};

// ---- round trips -----------------------------------------------------------------

TEST(Tokenizer, RoundTripsRandomBytes) {
  Rng rng(1234);
  for (const Tokenizer* tok : {&small_tokenizer(), &real_tokenizer()}) {
    for (int i = 0; i < 300; ++i) expect_round_trip(*tok, random_bytes(rng, rng.below(600), i % 3));
    expect_round_trip(*tok, std::string(1000, '\0'));
    std::string all_bytes;
    for (int b = 0; b < 256; ++b) all_bytes += char(b);
    expect_round_trip(*tok, all_bytes);
  }
}

TEST(Tokenizer, RoundTripsScripts) {
  for (const Tokenizer* tok : {&small_tokenizer(), &real_tokenizer()}) {
    std::string joined;
    for (const auto& s : script_samples()) {
      expect_round_trip(*tok, s);
      joined += s;
    }
    expect_round_trip(*tok, joined);
  }
}

TEST(Tokenizer, RoundTripsEveryDatasetLanguage) {
  const Tokenizer& tok = real_tokenizer();
  for (const auto& lang : default_languages()) {
    const std::string s = text_slice(lang, 1000, 20 * 1000);  // starts mid-character for some scripts
    ASSERT_FALSE(s.empty()) << lang;
    expect_round_trip(tok, s);
  }
}

TEST(Tokenizer, LongChunksRoundTripAndMatchReferenceBpe) {
  const Tokenizer& tok = real_tokenizer();
  // Huge single pre-tokens must not be quadratic.
  std::string han;
  for (int i = 0; i < 20000; ++i) han += "国";
  expect_round_trip(tok, han);
  expect_round_trip(tok, std::string(200000, 'a'));
  expect_round_trip(tok, std::string(100000, ' '));
  expect_round_trip(tok, std::string(100000, '7'));

  // The encoder agrees with textbook BPE on single pre-tokens.
  const nlohmann::json j = nlohmann::json::parse([&] {
    const std::string p = (fs::temp_directory_path() / ("chorus_tok_ref_" + std::to_string(::getpid()))).string();
    tok.save(p);
    std::string s = read_all(p);
    fs::remove(p);
    return s;
  }());
  std::vector<std::pair<uint32_t, uint32_t>> merges;
  for (const auto& m : j.at("merges")) merges.emplace_back(m[0].get<uint32_t>(), m[1].get<uint32_t>());
  Rng rng(7);
  std::vector<std::string> words = {" the", " international", "Verantwortung", " человечества", "世界人权宣言",
                                    std::string(257, 'e'), " aaaaaaaaaaaaaaaaaaaaaaa"};
  for (int i = 0; i < 200; ++i) {
    std::string w = rng.below(2) ? " " : "";
    const size_t n = 1 + rng.below(40);
    for (size_t k = 0; k < n; ++k) w += char("etaoinshrdlucmfw"[rng.below(16)]);
    words.push_back(w);
  }
  for (const auto& w : words) EXPECT_EQ(tok.encode(w), reference_bpe(w, merges)) << "'" << w << "'";
}

TEST(Tokenizer, TokensRespectPreTokenBoundaries) {
  const Tokenizer& tok = real_tokenizer();
  const std::string text = text_slice("en", 150 * 1000, 30 * 1000);
  for (uint32_t id : tok.encode(text)) {
    const std::string& t = tok.token_bytes(id);
    // A space appears only as the first byte of a word token, or in an all-space token.
    const bool all_space = std::all_of(t.begin(), t.end(), [](char c) { return c == ' '; });
    if (!all_space) {
      EXPECT_EQ(t.find(' ', 1), std::string::npos) << "'" << t << "'";
    }
    // Letters and digits are never mixed; at most 3 digits per token.
    const auto n_digits = std::count_if(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
    const auto n_alpha = std::count_if(t.begin(), t.end(), [](char c) { return std::isalpha((unsigned char)c); });
    EXPECT_LE(n_digits, 3) << "'" << t << "'";
    EXPECT_TRUE(n_digits == 0 || n_alpha == 0) << "'" << t << "'";
  }
}

// ---- training ------------------------------------------------------------------

TEST(Tokenizer, TrainingIsDeterministicAcrossRunsAndThreads) {
  const std::vector<std::string> texts = real_corpus();
  const Tokenizer a = Tokenizer::train_texts(texts, options(1024, 1));
  const Tokenizer b = Tokenizer::train_texts(texts, options(1024, 2));
  const Tokenizer c = Tokenizer::train_texts(texts, options(1024, 2));
  const Tokenizer d = Tokenizer::train_texts(texts, options(1024, 3));
  EXPECT_EQ(a.hash().size(), 64u);
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_EQ(b.hash(), c.hash());
  EXPECT_EQ(a.hash(), d.hash());
  EXPECT_EQ(a.vocab_size(), 1024);
  for (int id = 0; id < a.vocab_size(); ++id) ASSERT_EQ(a.token_bytes(id), d.token_bytes(id)) << id;
  const std::string sample = text_slice("de", 200 * 1000, 5000);
  EXPECT_EQ(a.encode(sample), b.encode(sample));
  // A different vocab size gives a different identity.
  EXPECT_NE(a.hash(), real_tokenizer().hash());
}

TEST(Tokenizer, TrainFromFilesEqualsTrainFromMemory) {
  const std::vector<std::string> texts = real_corpus();
  const fs::path dir = fs::temp_directory_path() / ("chorus_tok_files_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<std::string> files;
  for (size_t i = 0; i < texts.size(); ++i) {
    files.push_back((dir / ("part" + std::to_string(i) + ".txt")).string());
    write_all(files.back(), texts[i]);
  }
  const Tokenizer from_files = Tokenizer::train(files, options(2048, 2));
  fs::remove_all(dir);
  EXPECT_EQ(from_files.hash(), real_tokenizer().hash());
}

TEST(Tokenizer, Compresses) {
  auto tokens_per_byte = [](const Tokenizer& tok, const std::string& s) {
    return double(tok.encode(s).size()) / double(s.size());
  };
  // Held-out text: bytes 150k.. are not in any training slice (which end at 100k).
  const std::string en = text_slice("en", 150 * 1000, 100 * 1000);
  const std::string zh = text_slice("zh", 150 * 1000, 100 * 1000);
  const Tokenizer english = Tokenizer::train_texts({text_slice("en", 0, 100 * 1000)}, options(2048));
  EXPECT_LT(tokens_per_byte(english, en), 0.4) << "English-only tokenizer on English";  // ~0.33
  const Tokenizer& tok = real_tokenizer();  // the 2048 ids shared by en/de/zh/ru
  ASSERT_EQ(tok.vocab_size(), 2048);
  EXPECT_LT(tokens_per_byte(tok, en), 0.45) << "en/de/zh/ru tokenizer on English";  // ~0.40
  EXPECT_LT(tokens_per_byte(tok, zh), 0.6) << "en/de/zh/ru tokenizer on Chinese";
  // The most frequent English words are single tokens.
  EXPECT_EQ(tok.encode(" the").size(), 1u);
  EXPECT_EQ(tok.encode(" and").size(), 1u);
}

TEST(Tokenizer, VocabTooSmallThrows) {
  TokenizerTrainOptions opt = options(256 + 5);
  opt.languages = {"en"};  // 5 specials
  EXPECT_THROW(Tokenizer::train_texts({"hello hello"}, opt), chorus::Error);
  opt.vocab_size = 256 + 5 + 1;
  const Tokenizer tok = Tokenizer::train_texts({"hello hello"}, opt);
  EXPECT_EQ(tok.vocab_size(), 256 + 5 + 1);
  EXPECT_THROW(Tokenizer::train_texts({"x"}, options(256 + 37)), chorus::Error);  // 37 default specials
  EXPECT_THROW(Tokenizer::train_texts({"x"}, options(0)), chorus::Error);
}

TEST(Tokenizer, TinyCorpusStopsEarly) {
  const Tokenizer tok = Tokenizer::train_texts({"ab ab"}, options(1000));
  // Chunks "ab", " ab": merge (a,b), then (' ', ab); then no pair is left.
  EXPECT_EQ(tok.vocab_size(), 256 + 2 + 37);
  expect_round_trip(tok, "ab ab abc");
  const Tokenizer empty = Tokenizer::train_texts({}, options(1000));
  EXPECT_EQ(empty.vocab_size(), 256 + 37);
  expect_round_trip(empty, "anything at all \xff");
}

TEST(Tokenizer, UnreadableTrainingFileThrowsNamingIt) {
  const std::string missing = "/nonexistent/chorus/no_such_file.txt";
  try {
    Tokenizer::train({kTextDir + "en.txt", missing}, options(1000));
    FAIL() << "no throw";
  } catch (const chorus::Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, BadLanguageCodesThrow) {
  TokenizerTrainOptions opt = options(1000);
  opt.languages = {"en", "en"};
  EXPECT_THROW(Tokenizer::train_texts({"x"}, opt), chorus::Error);
  opt.languages = {"e|n"};
  EXPECT_THROW(Tokenizer::train_texts({"x"}, opt), chorus::Error);
}

// ---- special tokens and lookups --------------------------------------------------------

TEST(Tokenizer, DefaultLanguages) {
  const auto& langs = default_languages();
  ASSERT_EQ(langs.size(), 33u);
  const std::vector<std::string> head = {"en", "de", "fr", "es", "it", "pt", "ru", "zh"};
  EXPECT_TRUE(std::equal(head.begin(), head.end(), langs.begin()));
  EXPECT_TRUE(std::is_sorted(langs.begin() + 8, langs.end()));
  for (const auto& l : langs) EXPECT_TRUE(fs::exists(kTextDir + l + ".txt")) << l;
  auto sorted = langs;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
}

TEST(Tokenizer, SpecialTokens) {
  const Tokenizer& tok = real_tokenizer();
  ASSERT_EQ(tok.languages(), default_languages());
  std::vector<std::string> names = {"<|endoftext|>", "<|startoftranscript|>"};
  for (const auto& l : default_languages()) names.push_back("<|" + l + "|>");
  names.push_back("<|transcribe|>");
  names.push_back("<|notimestamps|>");
  const uint32_t first = uint32_t(tok.vocab_size() - int(names.size()));
  for (size_t i = 0; i < names.size(); ++i) {
    const uint32_t id = tok.special(names[i]);
    EXPECT_EQ(id, first + i) << names[i];  // fixed order, after the merges
    EXPECT_EQ(tok.token_bytes(id), names[i]);
    EXPECT_EQ(tok.decode(std::vector<uint32_t>{id}), names[i]);
  }
  EXPECT_EQ(tok.eot(), first);
  EXPECT_THROW(tok.special("<|xx|>"), chorus::Error);
  EXPECT_THROW(tok.special("endoftext"), chorus::Error);

  // Special strings in text are plain bytes, never special ids.
  const std::string text = "a<|endoftext|>b <|de|><|transcribe|>";
  const auto ids = tok.encode(text);
  for (uint32_t id : ids) EXPECT_LT(id, first);
  EXPECT_EQ(tok.decode(ids), text);

  const std::vector<uint32_t> prompt = {tok.special("<|startoftranscript|>"), tok.special("<|de|>"),
                                        tok.special("<|transcribe|>"), tok.special("<|notimestamps|>")};
  EXPECT_EQ(tok.decode(prompt), "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>");
}

TEST(Tokenizer, CustomLanguages) {
  TokenizerTrainOptions opt = options(256 + 6 + 10);
  opt.languages = {"sw", "en"};
  const Tokenizer tok = Tokenizer::train_texts({"habari yako, hello there"}, opt);
  EXPECT_EQ(tok.languages(), opt.languages);
  EXPECT_EQ(tok.special("<|sw|>") + 1, tok.special("<|en|>"));
  EXPECT_EQ(tok.special("<|notimestamps|>"), uint32_t(tok.vocab_size() - 1));
  EXPECT_THROW(tok.special("<|de|>"), chorus::Error);
}

TEST(Tokenizer, OutOfRangeIdsThrow) {
  const Tokenizer& tok = small_tokenizer();
  const uint32_t n = uint32_t(tok.vocab_size());
  EXPECT_THROW(tok.decode(std::vector<uint32_t>{1, n}), chorus::Error);
  EXPECT_THROW(tok.token_bytes(n), chorus::Error);
  EXPECT_NO_THROW(tok.token_bytes(n - 1));
  EXPECT_THROW(Tokenizer().encode("x"), chorus::Error);
}

TEST(Tokenizer, EncodeIsThreadSafe) {
  const Tokenizer& tok = real_tokenizer();
  std::vector<std::string> texts;
  for (const char* lang : {"en", "de", "zh", "ru", "ar", "ja"}) texts.push_back(text_slice(lang, 0, 30 * 1000));
  std::vector<std::vector<uint32_t>> serial, parallel(texts.size());
  for (const auto& t : texts) serial.push_back(tok.encode(t));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < texts.size(); ++i) threads.emplace_back([&, i] { parallel[i] = tok.encode(texts[i]); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(serial, parallel);
}

// ---- save / load ----------------------------------------------------------------------

TEST_F(TokenizerFiles, SaveLoadRoundTrip) {
  const Tokenizer& tok = real_tokenizer();
  const std::string p = path("tok.json");
  tok.save(p);
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  const Tokenizer back = Tokenizer::load(p);
  EXPECT_EQ(back.hash(), tok.hash());
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_EQ(back.languages(), tok.languages());
  EXPECT_EQ(back.eot(), tok.eot());
  for (const auto& s : script_samples()) EXPECT_EQ(back.encode(s), tok.encode(s));
  const std::string en = text_slice("en", 0, 20000);
  EXPECT_EQ(back.encode(en), tok.encode(en));

  const nlohmann::json j = nlohmann::json::parse(read_all(p));
  EXPECT_EQ(j.at("format"), "chorus-bpe");
  EXPECT_EQ(j.at("version"), 1);
  EXPECT_EQ(j.at("vocab_size"), tok.vocab_size());
  EXPECT_EQ(j.at("hash"), tok.hash());
  EXPECT_EQ(j.at("specials").size(), 37u);

  // Saving over an existing file replaces it.
  small_tokenizer().save(p);
  EXPECT_EQ(Tokenizer::load(p).hash(), small_tokenizer().hash());
}

// add-language: a new <|xx|> token after every old id (the old ids and the
// encoding unchanged), its own hash, the old tokenizers recorded as ancestors
// and verified on load.
TEST_F(TokenizerFiles, WithLanguageAppendsATokenAndRecordsItsAncestors) {
  const Tokenizer& tok = real_tokenizer();
  const Tokenizer one = tok.with_language("af");
  const Tokenizer two = one.with_language("zu");
  EXPECT_EQ(one.vocab_size(), tok.vocab_size() + 1);
  EXPECT_EQ(one.special("<|af|>"), static_cast<uint32_t>(tok.vocab_size()));
  EXPECT_EQ(two.special("<|zu|>"), static_cast<uint32_t>(tok.vocab_size() + 1));
  for (const auto& sp : tok.specials()) EXPECT_EQ(two.special(sp), tok.special(sp)) << sp;
  for (const auto& s : script_samples()) EXPECT_EQ(two.encode(s), tok.encode(s));
  EXPECT_NE(one.hash(), tok.hash());
  EXPECT_NE(two.hash(), one.hash());
  EXPECT_EQ(two.languages().back(), "zu");
  ASSERT_EQ(two.ancestors().size(), 2u);
  EXPECT_EQ(two.vocab_size_of(tok.hash()), tok.vocab_size());
  EXPECT_EQ(two.vocab_size_of(one.hash()), one.vocab_size());
  EXPECT_EQ(two.vocab_size_of(two.hash()), two.vocab_size());
  EXPECT_EQ(tok.vocab_size_of(one.hash()), 0) << "an ancestor does not know its descendants";
  const std::string p = path("two.json");
  two.save(p);
  const Tokenizer back = Tokenizer::load(p);
  EXPECT_EQ(back.hash(), two.hash());
  ASSERT_EQ(back.ancestors().size(), 2u);
  EXPECT_EQ(back.ancestors()[0].hash, tok.hash());
  EXPECT_EQ(back.ancestors()[1].vocab_size, one.vocab_size());
  EXPECT_THROW(tok.with_language(tok.languages().front()), chorus::Error);
  EXPECT_THROW(tok.with_language("Xx1"), chorus::Error);
  // A forged ancestor is refused by name.
  nlohmann::json j = nlohmann::json::parse(read_all(p));
  j["extends"][0]["hash"] = std::string(64, 'a');
  write_all(path("forged.json"), j.dump(1));
  expect_load_error(path("forged.json"), {"extends[0]"});
}

TEST_F(TokenizerFiles, LoadRejectsEditedMerge) {
  // A merge that references an id not yet defined.
  expect_corrupt("undefined.json", [](nlohmann::json& j) { j["merges"][0] = {100000, 1}; }, {"merges[0]"});
  expect_corrupt("forward.json", [](nlohmann::json& j) { j["merges"][3] = {256 + 3, 1}; }, {"merges[3]"});
  expect_corrupt("shape.json", [](nlohmann::json& j) { j["merges"][2] = {1, 2, 3}; }, {"merges[2]"});
  // A well-formed but edited merge list is caught by the hash.
  expect_corrupt("edited.json", [](nlohmann::json& j) { j["merges"][5] = {250, 251}; }, {"hash"});
  expect_corrupt("edited_lang.json", [](nlohmann::json& j) { j["languages"][0] = "xx"; }, {"hash"});
}

TEST_F(TokenizerFiles, LoadRejectsBadFiles) {
  const std::string good = path("good.json");
  small_tokenizer().save(good);
  const std::string text = read_all(good);

  const std::string truncated = path("truncated.json");
  write_all(truncated, text.substr(0, text.size() / 2));
  expect_load_error(truncated, {"invalid JSON"});
  const std::string garbage = path("garbage.json");
  write_all(garbage, "not json at all {");
  expect_load_error(garbage, {"invalid JSON"});
  expect_load_error(path("does_not_exist.json"), {"cannot read"});

  expect_corrupt("no_hash.json", [](nlohmann::json& j) { j.erase("hash"); }, {"'hash'", "missing"});
  expect_corrupt("no_merges.json", [](nlohmann::json& j) { j.erase("merges"); }, {"'merges'", "missing"});
  expect_corrupt("no_specials.json", [](nlohmann::json& j) { j.erase("specials"); }, {"'specials'"});
  expect_corrupt("no_languages.json", [](nlohmann::json& j) { j.erase("languages"); }, {"'languages'"});
  expect_corrupt("no_vocab.json", [](nlohmann::json& j) { j.erase("vocab_size"); }, {"'vocab_size'"});
  expect_corrupt("version.json", [](nlohmann::json& j) { j["version"] = 2; }, {"'version'"});
  expect_corrupt("format.json", [](nlohmann::json& j) { j["format"] = "gpt2-bpe"; }, {"'format'"});
  expect_corrupt("vocab.json", [](nlohmann::json& j) { j["vocab_size"] = j["vocab_size"].get<int>() + 1; },
                 {"'vocab_size'"});
  expect_corrupt("special.json", [](nlohmann::json& j) { j["specials"][1] = 7; }, {"specials[1]"});
  expect_corrupt("dup_special.json", [](nlohmann::json& j) { j["specials"][1] = j["specials"][0]; },
                 {"specials[1]"});
  expect_corrupt("array.json", [](nlohmann::json& j) { j = nlohmann::json::array({1, 2}); }, {"object"});
}

// Found by tests/fuzz: the error message printed the deep value with a
// recursive dump and overflowed the stack (a crash, not a refusal).
TEST_F(TokenizerFiles, LoadRefusesDeeplyNestedJson) {
  const std::string deep = path("deep.json");
  const size_t depth = 200000;
  write_all(deep, "{\"format\": \"chorus-bpe\", \"version\": 1, \"merges\": [" + std::string(depth, '[') +
                      std::string(depth, ']') + "]}");
  expect_load_error(deep, {"deep.json", "invalid JSON", "nested deeper than 64 levels"});
}

}  // namespace
}  // namespace chorus::data
