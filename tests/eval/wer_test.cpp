// WER / CER: hand-computed edit distances, empty sides, the normaliser's
// rules (wer.h), and pooled vs per-language totals.
#include "eval/wer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

using chorus::eval::char_edits;
using chorus::eval::edit_counts;
using chorus::eval::EditCounts;
using chorus::eval::ErrorRates;
using chorus::eval::is_unsegmented;
using chorus::eval::normalize_text;
using chorus::eval::normalized_chars;
using chorus::eval::normalized_words;
using chorus::eval::word_edits;

namespace {

void expect_counts(const EditCounts& e, int64_t s, int64_t i, int64_t d, int64_t n) {
  EXPECT_EQ(e.substitutions, s);
  EXPECT_EQ(e.insertions, i);
  EXPECT_EQ(e.deletions, d);
  EXPECT_EQ(e.ref_length, n);
}

// Plain full-matrix Levenshtein distance, the reference for the property test.
int64_t levenshtein(const std::u32string& a, const std::u32string& b) {
  std::vector<std::vector<int64_t>> d(a.size() + 1, std::vector<int64_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = int64_t(i);
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = int64_t(j);
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j)
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
  return d[a.size()][b.size()];
}

}  // namespace

TEST(EditCounts, KittenSitting) {
  // k->s, e->i, +g
  expect_counts(edit_counts(U"kitten", U"sitting"), 2, 1, 0, 6);
  expect_counts(char_edits("kitten", "sitting", "en"), 2, 1, 0, 6);
  // the reverse: s->k, i->e, -g
  expect_counts(edit_counts(U"sitting", U"kitten"), 2, 0, 1, 7);
  expect_counts(edit_counts(U"flaw", U"lawn"), 0, 1, 1, 4);
  EXPECT_DOUBLE_EQ(edit_counts(U"kitten", U"sitting").rate(), 3.0 / 6.0);
}

TEST(EditCounts, Words) {
  // sat->sit, "the" deleted
  const EditCounts e = word_edits("The cat sat on the mat.", "the cat sit on mat");
  expect_counts(e, 1, 0, 1, 6);
  EXPECT_DOUBLE_EQ(e.rate(), 2.0 / 6.0);
  expect_counts(word_edits("the cat sat", "oh the cat sat down"), 0, 2, 0, 3);
  expect_counts(edit_counts(std::vector<std::string>{"a", "b"}, std::vector<std::string>{"b", "a"}), 2, 0, 0,
                2);
}

TEST(EditCounts, CyrillicWordsAndCharacters) {
  expect_counts(word_edits("Мама мыла раму.", "мама мыла рамку"), 1, 0, 0, 3);
  // "раму" -> "рамку": one inserted "к"; 4 + 1 + 4 + 1 + 4 = 14 characters with the two spaces
  const EditCounts c = char_edits("Мама мыла раму.", "мама мыла рамку", "ru");
  expect_counts(c, 0, 1, 0, 14);
  EXPECT_DOUBLE_EQ(c.rate(), 1.0 / 14.0);
  // a lost word boundary is one character error for a segmented language
  expect_counts(char_edits("мама мыла", "мамамыла", "ru"), 0, 0, 1, 9);
}

TEST(EditCounts, HanziCharactersIgnoreSpaces) {
  // 气->汽, +啊; punctuation and spaces do not count
  const EditCounts c = char_edits("今天天气很好。", "今天 天汽很好啊！", "zh");
  expect_counts(c, 1, 1, 0, 6);
  EXPECT_DOUBLE_EQ(c.rate(), 2.0 / 6.0);
  // the words of an unsegmented language are its characters: WER == CER
  expect_counts(word_edits("今天天气很好。", "今天 天汽很好啊！", "zh"), 1, 1, 0, 6);
  expect_counts(char_edits("今天天气很好", "今天 天气 很好", "zh"), 0, 0, 0, 6);
  expect_counts(
      char_edits("人人生而自由，在尊严和权利上一律平等。", "人人生而自由在尊严和权力上一律平等", "zh-CN"), 1,
      0, 0, 17);
}

TEST(EditCounts, EmptyHypothesis) {
  const EditCounts e = word_edits("one two three", "");
  expect_counts(e, 0, 0, 3, 3);
  EXPECT_DOUBLE_EQ(e.rate(), 1.0);
  expect_counts(char_edits("abc", "", "en"), 0, 0, 3, 3);
}

TEST(EditCounts, EmptyReference) {
  // rate = insertions / 1 when there is nothing to say
  const EditCounts e = word_edits("", "two words");
  expect_counts(e, 0, 2, 0, 0);
  EXPECT_DOUBLE_EQ(e.rate(), 2.0);
  expect_counts(char_edits("", "ab", "en"), 0, 2, 0, 0);
  EXPECT_DOUBLE_EQ(char_edits("", "ab", "en").rate(), 2.0);
  // punctuation only normalises to nothing
  EXPECT_DOUBLE_EQ(word_edits("«…»", "").rate(), 0.0);
}

TEST(EditCounts, BothEmpty) {
  const EditCounts e = word_edits("", "");
  expect_counts(e, 0, 0, 0, 0);
  EXPECT_DOUBLE_EQ(e.rate(), 0.0);
  EXPECT_DOUBLE_EQ(char_edits("", "", "zh").rate(), 0.0);
}

TEST(EditCounts, CountsAreOneMinimalAlignment) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> len(0, 9), sym(0, 2);
  for (int trial = 0; trial < 2000; ++trial) {
    std::u32string a, b;
    for (int i = len(rng); i > 0; --i) a.push_back(U'a' + sym(rng));
    for (int i = len(rng); i > 0; --i) b.push_back(U'a' + sym(rng));
    const EditCounts e = edit_counts(a, b);
    ASSERT_EQ(e.errors(), levenshtein(a, b)) << "trial " << trial;
    // a consistent alignment: every reference token is matched, substituted
    // or deleted; the hypothesis is what remains plus the insertions
    ASSERT_EQ(e.ref_length, int64_t(a.size()));
    ASSERT_EQ(int64_t(b.size()), e.ref_length - e.deletions + e.insertions) << "trial " << trial;
    ASSERT_LE(e.substitutions + e.deletions, e.ref_length);
  }
}

TEST(Normalize, FullWidthAndLigaturesByNfkc) {
  EXPECT_EQ(normalize_text("Ｈｅｌｌｏ　Ｗｏｒｌｄ！", "en"), "hello world");
  EXPECT_EQ(normalize_text("ﬁne ﬂowers ﬃ", "en"), "fine flowers ffi");
  EXPECT_EQ(normalize_text("Ⅻ ² ｶﾞ", "en"), "xii 2 ガ");
  // NFKC composes: e + combining acute == é
  EXPECT_EQ(normalize_text("e\u0301cole", "fr"), "école");
}

TEST(Normalize, CaseFolding) {
  EXPECT_EQ(normalize_text("Straße", "de"), "strasse");
  EXPECT_EQ(normalize_text("STRASSE", "de"), "strasse");
  EXPECT_EQ(normalize_text("ÉCOLE", "fr"), "école");
  EXPECT_EQ(normalize_text("ПРИВЕТ, Мир! Ёлка", "ru"), "привет мир ёлка");
  EXPECT_EQ(normalize_text("ΣΟΦΊΑ σοφίας", "el"), "σοφία σοφίασ");  // final sigma folds to σ
  EXPECT_EQ(normalize_text("Œuvre", "fr"), "œuvre");
}

TEST(Normalize, Punctuation) {
  EXPECT_EQ(normalize_text("«Bonjour», dit-il.", "fr"), "bonjour dit il");
  EXPECT_EQ(normalize_text("¿Qué tal? ¡Muy bien!", "es"), "qué tal muy bien");
  EXPECT_EQ(normalize_text("„Ja“, sagte er – „gut“…", "de"), "ja sagte er gut");
  EXPECT_EQ(normalize_text("你好，世界。我们、他们！", "zh"), "你好 世界 我们 他们");
  EXPECT_EQ(normalize_text("《史记》“太史公曰”", "zh"), "史记 太史公曰");
  EXPECT_EQ(normalize_text("$5 + 3% = (x)", "en"), "5 3 x");
  EXPECT_EQ(normalize_text("twenty-four", "en"), "twenty four");
  EXPECT_EQ(normalize_text("  a\t\n b  ", "en"), "a b");
  EXPECT_EQ(normalize_text("co\u00ADoperate", "en"), "cooperate");  // soft hyphen is default-ignorable
  EXPECT_EQ(normalize_text("!!!", "en"), "");
}

TEST(Normalize, ApostrophesInsideWordsAreKept) {
  EXPECT_EQ(normalize_text("Don’t stop", "en"), "don't stop");
  EXPECT_EQ(normalize_text("don't", "en"), normalize_text("DON’T", "en"));
  EXPECT_EQ(normalize_text("L'homme d’État", "fr"), "l'homme d'état");
  EXPECT_EQ(normalize_text("'quoted' ‘single’", "en"), "quoted single");
  EXPECT_EQ(normalize_text("the dogs' bones", "en"), "the dogs bones");
  EXPECT_EQ(normalized_words("Don’t  stop!", "en"), (std::vector<std::string>{"don't", "stop"}));
}

TEST(Normalize, UnsegmentedLanguages) {
  for (const char* l : {"zh", "zh-CN", "zh_Hans", "ZH", "cmn", "yue", "ja", "ja_JP", "th", "lo", "km", "my"})
    EXPECT_TRUE(is_unsegmented(l)) << l;
  for (const char* l : {"en", "de", "ru", "ko", "vi", "", "zhx"}) EXPECT_FALSE(is_unsegmented(l)) << l;
  EXPECT_EQ(normalized_chars("你好， 世界", "zh"), U"你好世界");
  EXPECT_EQ(normalized_chars("ab, c", "en"), U"ab c");
  EXPECT_EQ(normalized_words("你好，世界", "zh"), (std::vector<std::string>{"你", "好", "世", "界"}));
}

TEST(ErrorRates, PooledAndPerLanguage) {
  ErrorRates r;
  r.add("en", "a b c d", "A b c d.");  // 0 / 4
  r.add("en", "a b", "a x");           // 1 / 2
  r.add("de", "eins zwei", "");        // 2 / 2
  r.add("zh", "你好世界", "你好");     // chars 2 / 4, words (= chars) 2 / 4

  const auto& by = r.by_language();
  ASSERT_EQ(by.size(), 3u);
  EXPECT_EQ(by.at("en").n_utterances, 2);
  EXPECT_DOUBLE_EQ(by.at("en").wer(), 1.0 / 6.0);
  EXPECT_DOUBLE_EQ(by.at("de").wer(), 1.0);
  EXPECT_DOUBLE_EQ(by.at("zh").wer(), 0.5);
  EXPECT_DOUBLE_EQ(by.at("zh").cer(), 0.5);
  // en chars: "a b c d" (7) + "a b" (3), one substitution
  EXPECT_DOUBLE_EQ(by.at("en").cer(), 1.0 / 10.0);
  // de chars: "eins zwei" = 9 deletions
  EXPECT_DOUBLE_EQ(by.at("de").cer(), 1.0);

  const auto all = r.overall();
  EXPECT_EQ(all.n_utterances, 4);
  EXPECT_EQ(all.words.ref_length, 4 + 2 + 2 + 4);
  EXPECT_DOUBLE_EQ(all.wer(), (0.0 + 1 + 2 + 2) / 12.0);  // pooled, not the mean of rates
  EXPECT_DOUBLE_EQ(all.cer(), (1.0 + 9 + 2) / (10 + 9 + 4));
  EXPECT_DOUBLE_EQ(r.macro_wer(), (1.0 / 6.0 + 1.0 + 0.5) / 3.0);
  EXPECT_DOUBLE_EQ(r.macro_cer(), (0.1 + 1.0 + 0.5) / 3.0);

  const auto j = r.to_json();
  EXPECT_EQ(j["languages"]["en"]["n_utterances"], 2);
  EXPECT_EQ(j["languages"]["de"]["words"]["deletions"], 2);
  EXPECT_EQ(j["overall"]["words"]["ref_length"], 12);
  EXPECT_DOUBLE_EQ(j["overall"]["wer"].get<double>(), 5.0 / 12.0);
  EXPECT_EQ(j["macro"]["n_languages"], 3);
  const std::string t = r.table();
  for (const char* s : {"WER%", "CER%", "\nde ", "\nen ", "\nzh ", "\nall ", "\nmacro "})
    EXPECT_NE(t.find(s), std::string::npos) << s << "\n" << t;
  EXPECT_NE(t.find("41.67"), std::string::npos) << t;  // pooled WER 5 / 12

  EXPECT_DOUBLE_EQ(ErrorRates().macro_wer(), 0.0);
  EXPECT_EQ(ErrorRates().overall().n_utterances, 0);
}
