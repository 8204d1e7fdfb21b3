#include "eval/wer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "core/strfmt.h"

namespace chorus::eval {

namespace {

const icu::Normalizer2& nfkc_casefold() {
  static const icu::Normalizer2* n = [] {
    UErrorCode err = U_ZERO_ERROR;
    const icu::Normalizer2* p = icu::Normalizer2::getNFKCCasefoldInstance(err);
    CHORUS_CHECK(U_SUCCESS(err) && p, "ICU: cannot load the NFKC_Casefold normaliser: %s", u_errorName(err));
    return p;
  }();
  return *n;
}

bool word_char(UChar32 c) { return (U_GET_GC_MASK(c) & (U_GC_L_MASK | U_GC_M_MASK | U_GC_N_MASK)) != 0; }

// Rules 1-7 of wer.h: the normalised text as code points, words separated by
// single spaces.
std::u32string normalize_codepoints(std::string_view utf8) {
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(utf8.data(), static_cast<int32_t>(utf8.size())));
  UErrorCode err = U_ZERO_ERROR;
  const icu::UnicodeString folded = nfkc_casefold().normalize(in, err);
  CHORUS_CHECK(U_SUCCESS(err), "ICU: NFKC_Casefold failed: %s", u_errorName(err));

  std::u32string cps;
  for (int32_t k = 0; k < folded.length();) {
    const UChar32 c = folded.char32At(k);
    cps.push_back(static_cast<char32_t>(c));
    k += U16_LENGTH(c);
  }
  std::u32string out;
  bool pending_space = false;
  for (size_t k = 0; k < cps.size(); ++k) {
    const UChar32 c = static_cast<UChar32>(cps[k]);
    char32_t keep = 0;  // 0: becomes a space
    if (u_isUWhiteSpace(c)) {
      keep = 0;
    } else if (c == 0x27 || c == 0x2019) {
      const bool inside = k > 0 && k + 1 < cps.size() && word_char(static_cast<UChar32>(cps[k - 1])) &&
                          word_char(static_cast<UChar32>(cps[k + 1]));
      keep = inside ? U'\'' : 0;
    } else if (U_GET_GC_MASK(c) & (U_GC_P_MASK | U_GC_S_MASK)) {
      keep = 0;
    } else if (U_GET_GC_MASK(c) & U_GC_C_MASK) {
      continue;  // dropped, not a separator
    } else {
      keep = static_cast<char32_t>(c);
    }
    if (keep == 0) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(U' ');
    pending_space = false;
    out.push_back(keep);
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

// Levenshtein distance with unit costs, keeping the S / I / D counts of the
// path chosen into each cell (ties: diagonal, then deletion, then insertion).
// Two rows: O(|hyp|) memory.
template <class Seq>
EditCounts align(const Seq& ref, const Seq& hyp) {
  struct Cell {
    int64_t cost, s, i, d;
  };
  const size_t n = ref.size(), m = hyp.size();
  std::vector<Cell> prev(m + 1), cur(m + 1);
  for (size_t j = 0; j <= m; ++j) prev[j] = {int64_t(j), 0, int64_t(j), 0};
  for (size_t i = 1; i <= n; ++i) {
    cur[0] = {int64_t(i), 0, 0, int64_t(i)};
    for (size_t j = 1; j <= m; ++j) {
      Cell best = prev[j - 1];
      if (!(ref[i - 1] == hyp[j - 1])) {
        ++best.cost;
        ++best.s;
      }
      if (prev[j].cost + 1 < best.cost) {
        best = prev[j];
        ++best.cost;
        ++best.d;
      }
      if (cur[j - 1].cost + 1 < best.cost) {
        best = cur[j - 1];
        ++best.cost;
        ++best.i;
      }
      cur[j] = best;
    }
    std::swap(prev, cur);
  }
  EditCounts e;
  e.substitutions = prev[m].s;
  e.insertions = prev[m].i;
  e.deletions = prev[m].d;
  e.ref_length = int64_t(n);
  return e;
}

nlohmann::json counts_json(const EditCounts& e) {
  return {{"substitutions", e.substitutions},
          {"insertions", e.insertions},
          {"deletions", e.deletions},
          {"ref_length", e.ref_length},
          {"rate", e.rate()}};
}

nlohmann::json totals_json(const Totals& t) {
  return {{"n_utterances", t.n_utterances},
          {"wer", t.wer()},
          {"cer", t.cer()},
          {"words", counts_json(t.words)},
          {"chars", counts_json(t.chars)}};
}

}  // namespace

std::string normalize_text(std::string_view utf8, std::string_view /*lang*/) {
  return to_utf8(normalize_codepoints(utf8));
}

bool is_unsegmented(std::string_view lang) {
  std::string code;
  for (char c : lang) {
    if (c == '-' || c == '_') break;
    code.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  static const char* const kUnsegmented[] = {"zh", "cmn", "yue", "wuu", "ja", "th", "lo", "km", "my", "bo"};
  return std::find(std::begin(kUnsegmented), std::end(kUnsegmented), code) != std::end(kUnsegmented);
}

double EditCounts::rate() const {
  return static_cast<double>(errors()) / static_cast<double>(std::max<int64_t>(ref_length, 1));
}

EditCounts& EditCounts::operator+=(const EditCounts& o) {
  substitutions += o.substitutions;
  insertions += o.insertions;
  deletions += o.deletions;
  ref_length += o.ref_length;
  return *this;
}

EditCounts edit_counts(const std::vector<std::string>& ref, const std::vector<std::string>& hyp) {
  return align(ref, hyp);
}

EditCounts edit_counts(std::u32string_view ref, std::u32string_view hyp) { return align(ref, hyp); }

std::vector<std::string> normalized_words(std::string_view text, std::string_view lang) {
  const std::u32string cps = normalize_codepoints(text);
  std::vector<std::string> words;
  if (is_unsegmented(lang)) {
    for (char32_t c : cps)
      if (c != U' ') words.push_back(to_utf8(std::u32string_view(&c, 1)));
    return words;
  }
  size_t start = 0;
  for (size_t k = 0; k <= cps.size(); ++k) {
    if (k == cps.size() || cps[k] == U' ') {
      if (k > start) words.push_back(to_utf8(std::u32string_view(cps).substr(start, k - start)));
      start = k + 1;
    }
  }
  return words;
}

std::u32string normalized_chars(std::string_view text, std::string_view lang) {
  std::u32string cps = normalize_codepoints(text);
  if (is_unsegmented(lang)) cps.erase(std::remove(cps.begin(), cps.end(), U' '), cps.end());
  return cps;
}

EditCounts word_edits(std::string_view ref, std::string_view hyp, std::string_view lang) {
  return align(normalized_words(ref, lang), normalized_words(hyp, lang));
}

EditCounts char_edits(std::string_view ref, std::string_view hyp, std::string_view lang) {
  return align(normalized_chars(ref, lang), normalized_chars(hyp, lang));
}

Totals& Totals::operator+=(const Totals& o) {
  words += o.words;
  chars += o.chars;
  n_utterances += o.n_utterances;
  return *this;
}

void ErrorRates::add(std::string_view lang, std::string_view ref, std::string_view hyp) {
  Totals& t = by_lang_[std::string(lang)];
  t.words += word_edits(ref, hyp, lang);
  t.chars += char_edits(ref, hyp, lang);
  ++t.n_utterances;
}

Totals ErrorRates::overall() const {
  Totals all;
  for (const auto& [lang, t] : by_lang_) all += t;
  return all;
}

double ErrorRates::macro_wer() const {
  double sum = 0;
  for (const auto& [lang, t] : by_lang_) sum += t.wer();
  return by_lang_.empty() ? 0.0 : sum / static_cast<double>(by_lang_.size());
}

double ErrorRates::macro_cer() const {
  double sum = 0;
  for (const auto& [lang, t] : by_lang_) sum += t.cer();
  return by_lang_.empty() ? 0.0 : sum / static_cast<double>(by_lang_.size());
}

nlohmann::json ErrorRates::to_json() const {
  nlohmann::json langs = nlohmann::json::object();
  for (const auto& [lang, t] : by_lang_) langs[lang] = totals_json(t);
  return {{"languages", langs},
          {"overall", totals_json(overall())},
          {"macro", {{"wer", macro_wer()}, {"cer", macro_cer()}, {"n_languages", by_lang_.size()}}}};
}

std::string ErrorRates::table() const {
  std::string out = strfmt("%-6s %6s | %7s %6s %6s %6s %7s | %7s %6s %6s %6s %7s\n", "lang", "utts", "WER%",
                           "S", "I", "D", "words", "CER%", "S", "I", "D", "chars");
  auto row = [&out](const std::string& name, const Totals& t) {
    out += strfmt("%-6s %6lld | %7.2f %6lld %6lld %6lld %7lld | %7.2f %6lld %6lld %6lld %7lld\n",
                  name.c_str(), static_cast<long long>(t.n_utterances), 100.0 * t.wer(),
                  static_cast<long long>(t.words.substitutions), static_cast<long long>(t.words.insertions),
                  static_cast<long long>(t.words.deletions), static_cast<long long>(t.words.ref_length),
                  100.0 * t.cer(), static_cast<long long>(t.chars.substitutions),
                  static_cast<long long>(t.chars.insertions), static_cast<long long>(t.chars.deletions),
                  static_cast<long long>(t.chars.ref_length));
  };
  for (const auto& [lang, t] : by_lang_) row(lang, t);
  row("all", overall());
  out += strfmt("%-6s %6zu | %7.2f %6s %6s %6s %7s | %7.2f\n", "macro", by_lang_.size(), 100.0 * macro_wer(),
                "", "", "", "", 100.0 * macro_cer());
  return out;
}

}  // namespace chorus::eval
