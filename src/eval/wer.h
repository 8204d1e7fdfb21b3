// Word and character error rates for speech recognition, with one documented
// text normaliser applied to reference and hypothesis alike.
//
// normalize_text (the exact rules, in order):
//   1. UTF-8 is decoded; invalid bytes become U+FFFD (a symbol, so rule 4
//      turns them into a space).
//   2. Unicode NFKC_Casefold (ICU Normalizer2 "nfkc_cf"): compatibility
//      decomposition + canonical composition, *full* case folding, and removal
//      of default-ignorable code points (soft hyphen, ZWJ / ZWNJ, ...). So
//      full-width "Ｈｅｌｌｏ" -> "hello", "ﬁ" -> "fi", "Straße" -> "strasse",
//      "ÉCOLE" -> "école", "ПРИВЕТ" -> "привет".
//   3. White space (Unicode White_Space) -> a space.
//   4. An apostrophe (U+0027 ' or U+2019 ’) with a letter, mark or digit on
//      both sides is kept, as U+0027: "don’t" == "don't" is one word, and so
//      is French "l'homme". Any other apostrophe (quoting, "dogs'") -> a space.
//   5. Every other punctuation or symbol (general categories P* and S*:
//      . , ; : ! ? « » „ “ ¿ ¡ 。 ， 、 - — ( ) $ + ...) -> a space; hyphenated
//      words therefore split ("twenty-four" -> "twenty four").
//   6. Other control / format / private-use / unassigned code points (C*)
//      are dropped.
//   7. Runs of spaces collapse to one; leading and trailing spaces go.
//   Numbers are not spelled out and nothing is language-specific except
//   is_unsegmented below (`lang` is accepted for that and for future rules).
//
// Words and characters:
//   * words: the normalised text split at spaces. For an unsegmented language
//     (is_unsegmented) every code point other than a space is a word, so its
//     WER equals its CER (the usual convention for zh / ja / th).
//   * characters: the code points of the normalised text; spaces count as
//     characters for segmented languages (a missing word boundary is an
//     error) and are removed for unsegmented ones.
//
// Edit counts come from one minimal Levenshtein alignment (unit costs); on
// ties the alignment prefers match / substitution, then deletion, then
// insertion, so S + I + D always equals the edit distance.
//
// Rates: rate() = (S + I + D) / max(ref_length, 1). With an empty reference
// this is 0 for an empty hypothesis and the number of inserted tokens
// otherwise (i.e. insertions / 1), so an utterance with nothing to say still
// penalises a hallucinated hypothesis.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace chorus::eval {

// The normalised form of UTF-8 text (rules above), as UTF-8. `lang` is an
// ISO 639 code ("en", "zh", "zh-CN"); it does not change the result today.
std::string normalize_text(std::string_view utf8, std::string_view lang);

// True for languages written without spaces between words: zh (and cmn,
// yue, wuu), ja, th, lo, km, my, bo. Region / script subtags are ignored
// ("zh-Hans", "ja_JP"); unknown codes are segmented.
bool is_unsegmented(std::string_view lang);

// Substitution / insertion / deletion counts of one alignment of a
// hypothesis to a reference of ref_length tokens.
struct EditCounts {
  int64_t substitutions = 0;
  int64_t insertions = 0;
  int64_t deletions = 0;
  int64_t ref_length = 0;

  int64_t errors() const { return substitutions + insertions + deletions; }
  // errors() / max(ref_length, 1); see "Rates" above.
  double rate() const;
  EditCounts& operator+=(const EditCounts& o);
};

// Minimal-alignment counts between two token sequences (exact comparison).
EditCounts edit_counts(const std::vector<std::string>& ref, const std::vector<std::string>& hyp);
// Minimal-alignment counts between two code point sequences.
EditCounts edit_counts(std::u32string_view ref, std::u32string_view hyp);

// The words of normalize_text(text, lang) (see "Words and characters").
std::vector<std::string> normalized_words(std::string_view text, std::string_view lang);
// The characters of normalize_text(text, lang), as code points.
std::u32string normalized_chars(std::string_view text, std::string_view lang);

// Word edits between raw reference and hypothesis text (both normalised).
// `lang` matters only for unsegmented languages; "" = segmented.
EditCounts word_edits(std::string_view ref, std::string_view hyp, std::string_view lang = "");
// Character edits between raw reference and hypothesis text (both normalised).
EditCounts char_edits(std::string_view ref, std::string_view hyp, std::string_view lang);

// Word and character totals of a set of utterances.
struct Totals {
  EditCounts words;
  EditCounts chars;
  int64_t n_utterances = 0;

  double wer() const { return words.rate(); }
  double cer() const { return chars.rate(); }
  Totals& operator+=(const Totals& o);
};

// Accumulates error rates over utterances, per language and overall.
//   overall(): pooled counts (sum of edits / sum of reference lengths over
//              every utterance of every language);
//   macro_wer() / macro_cer(): the unweighted mean of the per-language rates.
class ErrorRates {
 public:
  // Scores one utterance: `ref` and `hyp` are raw UTF-8 text of language
  // `lang` (normalised here).
  void add(std::string_view lang, std::string_view ref, std::string_view hyp);

  // Totals per language, in code order.
  const std::map<std::string, Totals>& by_language() const { return by_lang_; }
  Totals overall() const;
  double macro_wer() const;  // 0 with no languages
  double macro_cer() const;

  // {"languages": {lang: T, ...}, "overall": T, "macro": {"wer", "cer", "n_languages"}}
  // with T = {"n_utterances", "wer", "cer", "words": C, "chars": C} and
  // C = {"substitutions", "insertions", "deletions", "ref_length", "rate"}.
  nlohmann::json to_json() const;
  // A fixed-width text table: one row per language, then "all" (pooled) and
  // "macro"; rates in percent.
  std::string table() const;

 private:
  std::map<std::string, Totals> by_lang_;
};

}  // namespace chorus::eval
