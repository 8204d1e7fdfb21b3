// Byte-level BPE tokenizer: pre-tokenizer, trainer, encoder and JSON file I/O.
// See tokenizer.h for the contract; the pre-tokenization rules are documented
// at for_each_pretoken below.
#include "data/tokenizer.h"

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "core/hash.h"
#include "core/json_parse.h"
#include "core/progress.h"

namespace chorus::data {

namespace {

constexpr uint32_t kNumBytes = 256;
constexpr uint32_t kNoRank = UINT32_MAX;
constexpr const char* kFormat = "chorus-bpe";
constexpr int kVersion = 1;

inline uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }
inline uint32_t key_left(uint64_t k) { return uint32_t(k >> 32); }
inline uint32_t key_right(uint64_t k) { return uint32_t(k); }

// ---- pre-tokenization --------------------------------------------------------

// kExtend: joiners (ZWJ/ZWNJ), variation selectors, combining diacritics and
// tag characters. They continue whatever run precedes them (so Persian words
// with ZWNJ and emoji ZWJ sequences stay whole); at the start of a chunk they
// count as kOther.
enum class CharClass : uint8_t { kLetter, kCjk, kDigit, kOther, kExtend, kSpace, kNewline };

struct Char {
  CharClass cls;
  uint32_t len;  // bytes
};

inline bool is_ascii_space(unsigned char b) { return b == ' ' || b == '\t' || b == '\v' || b == '\f'; }
inline bool is_ascii_newline(unsigned char b) { return b == '\n' || b == '\r'; }
inline bool is_ascii_ws(unsigned char b) { return is_ascii_space(b) || is_ascii_newline(b); }
inline bool is_wordish(CharClass c) { return c != CharClass::kSpace && c != CharClass::kNewline; }

// Decodes one UTF-8 code point at p (n bytes available). Returns its length,
// or 0 for an invalid sequence (overlong, surrogate, > U+10FFFF, truncated).
inline uint32_t decode_utf8(const unsigned char* p, size_t n, uint32_t* cp) {
  const unsigned char b0 = p[0];
  auto cont = [&](size_t i) { return i < n && (p[i] & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!cont(1)) return 0;
    *cp = (uint32_t(b0 & 0x1F) << 6) | (p[1] & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    uint32_t c = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    uint32_t c = (uint32_t(b0 & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) | (uint32_t(p[2] & 0x3F) << 6) |
                 (p[3] & 0x3F);
    if (c < 0x10000 || c > 0x10FFFF) return 0;
    *cp = c;
    return 4;
  }
  return 0;
}

inline bool in(uint32_t c, uint32_t lo, uint32_t hi) { return c >= lo && c <= hi; }

// Class of a non-ASCII code point. A coarse, table-free approximation of the
// Unicode categories: the punctuation and symbol blocks that matter for our 33
// languages are kOther, decimal digits of common scripts are kDigit, CJK
// ideographs and kana are kCjk, everything else (Latin-1 letters, Greek,
// Cyrillic, Arabic, Hebrew, Indic, Thai, Hangul, ...) is kLetter.
CharClass classify_non_ascii(uint32_t c) {
  if (c < 0xC0 || c == 0xD7 || c == 0xF7) return CharClass::kOther;  // C1, NBSP, Latin-1 punct/symbols
  if (in(c, 0x0300, 0x036F) || c == 0x200C || c == 0x200D || in(c, 0xFE00, 0xFE0F) ||
      in(c, 0xE0020, 0xE007F) || in(c, 0xE0100, 0xE01EF))
    return CharClass::kExtend;
  if (in(c, 0x0660, 0x0669) || in(c, 0x06F0, 0x06F9) || in(c, 0x0966, 0x096F) || in(c, 0x09E6, 0x09EF) ||
      in(c, 0x0E50, 0x0E59) || in(c, 0xFF10, 0xFF19))
    return CharClass::kDigit;
  if (c == 0x060C || c == 0x061B || c == 0x061F || in(c, 0x066A, 0x066D) || c == 0x06D4 || c == 0x0964 ||
      c == 0x0965 || c == 0x0E3F || in(c, 0x2000, 0x2BFF) ||  // general punctuation .. misc symbols/arrows
      in(c, 0x3000, 0x303F) ||                                 // CJK symbols and punctuation
      in(c, 0xFE30, 0xFE4F) || in(c, 0xFE50, 0xFE6F) ||        // CJK compatibility / small forms
      in(c, 0xFF00, 0xFF0F) || in(c, 0xFF1A, 0xFF20) || in(c, 0xFF3B, 0xFF40) || in(c, 0xFF5B, 0xFF65) ||
      in(c, 0x1F000, 0x1FAFF))  // emoji, pictographs, playing cards, ...
    return CharClass::kOther;
  if (in(c, 0x3040, 0x9FFF) || in(c, 0xF900, 0xFAFF) || in(c, 0xFF66, 0xFF9F) || in(c, 0x20000, 0x3FFFF))
    return CharClass::kCjk;
  return CharClass::kLetter;
}

inline CharClass classify_ascii(unsigned char b) {
  if ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') return CharClass::kLetter;
  if (b >= '0' && b <= '9') return CharClass::kDigit;
  if (is_ascii_space(b)) return CharClass::kSpace;
  if (is_ascii_newline(b)) return CharClass::kNewline;
  return CharClass::kOther;
}

inline Char char_at(const unsigned char* p, size_t n, size_t i) {
  const unsigned char b = p[i];
  if (b < 0x80) return {classify_ascii(b), 1};
  uint32_t cp = 0;
  const uint32_t len = decode_utf8(p + i, n - i, &cp);
  if (len == 0) return {CharClass::kOther, 1};  // invalid byte: its own "other" character
  return {classify_non_ascii(cp), len};
}

// Splits text into pre-tokens (GPT-2/GPT-4 style, without a regex engine) and
// calls emit(chunk) for each, in order; the chunks concatenate to the text.
//   - an optional single leading ' ' plus a run of one class: letters, CJK
//     characters (ideographs and kana; a run of them is one chunk, split from
//     adjacent Latin letters), digits (at most 3 per chunk), or other
//     (punctuation, symbols, emoji, invalid UTF-8 bytes);
//   - a run of ' '/'\t'/'\v'/'\f'; when it is longer than one byte and ends in
//     ' ' before a word, that last ' ' is left to prefix the word;
//   - a run of '\n'/'\r'.
// Every chunk boundary depends only on the bytes at and after the chunk start
// (plus one character of look-ahead), which is what lets training count
// chunks on independent ranges split at whitespace (see is_split_point).
template <class F>
void for_each_pretoken(std::string_view text, F&& emit) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    Char ch = char_at(p, n, i);
    if (p[i] == ' ' && i + 1 < n) {
      const Char next = char_at(p, n, i + 1);
      if (is_wordish(next.cls)) {
        i += 1;
        ch = next;
      }
    }
    const CharClass cls = ch.cls == CharClass::kExtend ? CharClass::kOther : ch.cls;
    if (cls == CharClass::kSpace) {
      ++i;
      while (i < n && is_ascii_space(p[i])) ++i;
      if (i - start >= 2 && p[i - 1] == ' ' && i < n && is_wordish(char_at(p, n, i).cls)) --i;
    } else if (cls == CharClass::kNewline) {
      ++i;
      while (i < n && is_ascii_newline(p[i])) ++i;
    } else {
      int n_digits = cls == CharClass::kDigit ? 1 : 0;
      i += ch.len;
      while (i < n) {
        const Char c = char_at(p, n, i);
        if (c.cls == CharClass::kExtend) {
          i += c.len;
          continue;
        }
        if (c.cls != cls) break;
        if (cls == CharClass::kDigit && n_digits++ == 3) break;
        i += c.len;
      }
    }
    emit(text.substr(start, i - start));
  }
}

// A position where chunking the text in two independent halves gives the same
// chunks as chunking it whole: an ASCII whitespace byte after a non-whitespace
// byte. The byte before ends a letter/digit/CJK/other run (those runs never
// contain ASCII whitespace), and the chunk at p starts fresh.
inline bool is_split_point(std::string_view t, size_t p) {
  return p > 0 && p < t.size() && is_ascii_ws(static_cast<unsigned char>(t[p])) &&
         !is_ascii_ws(static_cast<unsigned char>(t[p - 1]));
}

// ---- merge-rank table ----------------------------------------------------------

// Open-addressing hash map (a, b) -> merge rank, for the encoder's inner loop.
class RankMap {
 public:
  void build(const std::vector<std::pair<uint32_t, uint32_t>>& merges) {
    size_t cap = 16;
    while (cap < merges.size() * 2 + 1) cap <<= 1;
    keys_.assign(cap, kEmptyKey);
    vals_.assign(cap, kNoRank);
    mask_ = cap - 1;
    for (size_t r = 0; r < merges.size(); ++r) {
      const uint64_t k = pair_key(merges[r].first, merges[r].second);
      size_t h = slot(k);
      while (keys_[h] != kEmptyKey && keys_[h] != k) h = (h + 1) & mask_;
      if (keys_[h] == kEmptyKey) {  // a duplicate merge keeps its first (lowest) rank
        keys_[h] = k;
        vals_[h] = uint32_t(r);
      }
    }
  }
  uint32_t rank(uint32_t a, uint32_t b) const {
    const uint64_t k = pair_key(a, b);
    for (size_t h = slot(k);; h = (h + 1) & mask_) {
      if (keys_[h] == k) return vals_[h];
      if (keys_[h] == kEmptyKey) return kNoRank;
    }
  }

 private:
  static constexpr uint64_t kEmptyKey = ~uint64_t(0);
  size_t slot(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> 32) & mask_; }
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> vals_;
  size_t mask_ = 0;
};

// Scratch buffers for encoding one chunk (reused across chunks of one call).
struct BpeScratch {
  std::vector<uint32_t> id;
  std::vector<int32_t> prev, next;
  std::vector<uint8_t> alive;
  struct Entry {
    uint32_t rank, pos, left, right;
  };
  std::vector<Entry> heap;
};

// Standard BPE on one chunk: repeatedly merge the lowest-rank adjacent pair,
// leftmost first. Implemented with a linked list and a min-heap of candidate
// pairs, O(n log n) per chunk, so even a megabyte-long chunk is cheap. A pair
// created by merge r always has a rank > r (its new id did not exist before),
// so heap order (rank, position) equals the textbook "merge all occurrences
// of the best pair, left to right, then repeat".
void bpe_chunk(std::string_view s, const RankMap& ranks, BpeScratch& sc, std::vector<uint32_t>& out) {
  const size_t n = s.size();
  sc.id.resize(n);
  sc.prev.resize(n);
  sc.next.resize(n);
  sc.alive.assign(n, 1);
  sc.heap.clear();
  for (size_t i = 0; i < n; ++i) {
    sc.id[i] = static_cast<unsigned char>(s[i]);
    sc.prev[i] = int32_t(i) - 1;
    sc.next[i] = i + 1 < n ? int32_t(i + 1) : -1;
  }
  auto later = [](const BpeScratch::Entry& x, const BpeScratch::Entry& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto push = [&](uint32_t pos, uint32_t a, uint32_t b) {
    const uint32_t r = ranks.rank(a, b);
    if (r == kNoRank) return;
    sc.heap.push_back({r, pos, a, b});
    std::push_heap(sc.heap.begin(), sc.heap.end(), later);
  };
  for (size_t i = 0; i + 1 < n; ++i) push(uint32_t(i), sc.id[i], sc.id[i + 1]);
  while (!sc.heap.empty()) {
    std::pop_heap(sc.heap.begin(), sc.heap.end(), later);
    const BpeScratch::Entry e = sc.heap.back();
    sc.heap.pop_back();
    // Stale if the left node was absorbed or re-merged, or its right neighbour changed.
    if (!sc.alive[e.pos] || sc.id[e.pos] != e.left) continue;
    const int32_t j = sc.next[e.pos];
    if (j < 0 || sc.id[j] != e.right) continue;
    const uint32_t merged = kNumBytes + e.rank;
    sc.id[e.pos] = merged;
    sc.alive[j] = 0;
    sc.next[e.pos] = sc.next[j];
    if (sc.next[j] >= 0) sc.prev[sc.next[j]] = int32_t(e.pos);
    if (sc.prev[e.pos] >= 0) push(uint32_t(sc.prev[e.pos]), sc.id[sc.prev[e.pos]], merged);
    if (sc.next[e.pos] >= 0) push(e.pos, merged, sc.id[sc.next[e.pos]]);
  }
  for (int32_t i = 0; i >= 0; i = sc.next[i]) out.push_back(sc.id[i]);
}

// ---- training ----------------------------------------------------------------------

// Counts pre-token chunks over all texts. Each text is cut into pieces at
// split points; OpenMP threads count pieces into their own maps, which are
// then summed. Returns (chunk, count) sorted by chunk bytes, so the result is
// independent of the thread count.
std::vector<std::pair<std::string_view, int64_t>> count_chunks(const std::vector<std::string_view>& texts,
                                                               int n_threads) {
  size_t total = 0;
  for (auto t : texts) total += t.size();
  const size_t piece = std::max<size_t>(size_t(1) << 16, total / (size_t(n_threads) * 8 + 1));
  std::vector<std::string_view> pieces;
  for (auto t : texts) {
    size_t pos = 0;
    while (pos < t.size()) {
      size_t end = std::min(t.size(), pos + piece);
      while (end < t.size() && !is_split_point(t, end)) ++end;
      pieces.push_back(t.substr(pos, end - pos));
      pos = end;
    }
  }
  using CountMap = std::unordered_map<std::string_view, int64_t>;
  std::vector<CountMap> maps(static_cast<size_t>(n_threads));
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (size_t i = 0; i < pieces.size(); ++i) {
    CountMap& m = maps[size_t(omp_get_thread_num())];
    for_each_pretoken(pieces[i], [&](std::string_view c) { ++m[c]; });
  }
  CountMap& all = maps[0];
  for (size_t t = 1; t < maps.size(); ++t) {
    for (const auto& [k, v] : maps[t]) all[k] += v;
    CountMap().swap(maps[t]);
  }
  std::vector<std::pair<std::string_view, int64_t>> out(all.begin(), all.end());
  std::sort(out.begin(), out.end());
  return out;
}

struct TrainWord {
  std::vector<uint32_t> ids;
  int64_t count;
};

// Heap entry for the trainer: highest count first, then the smallest (a, b).
struct PairEntry {
  int64_t count;
  uint64_t key;
};
struct PairEntryLess {
  bool operator()(const PairEntry& x, const PairEntry& y) const {
    return x.count != y.count ? x.count < y.count : x.key > y.key;
  }
};

// Learns up to n_merges merges on unique words weighted by count. Pair counts
// are kept incrementally: pair -> count, pair -> words containing it (may hold
// stale entries; a word is simply re-scanned), and a max-heap with lazy
// invalidation (an entry whose count no longer matches is re-pushed with the
// current count). Ties: smallest (a, b) pair, so results are deterministic.
// Stops early when no pair is left.
std::vector<std::pair<uint32_t, uint32_t>> learn_merges(std::vector<TrainWord>& words, size_t n_merges,
                                                        bool progress) {
  std::unordered_map<uint64_t, int64_t> count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;
  count.reserve(words.size() * 2);
  where.reserve(words.size() * 2);
  for (uint32_t w = 0; w < words.size(); ++w) {
    const auto& ids = words[w].ids;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const uint64_t k = pair_key(ids[i], ids[i + 1]);
      count[k] += words[w].count;
      auto& list = where[k];
      if (list.empty() || list.back() != w) list.push_back(w);
    }
  }
  std::vector<PairEntry> heap;
  heap.reserve(count.size());
  for (const auto& [k, c] : count) heap.push_back({c, k});
  std::make_heap(heap.begin(), heap.end(), PairEntryLess());

  std::vector<std::pair<uint32_t, uint32_t>> merges;
  merges.reserve(n_merges);
  std::unordered_map<uint64_t, int64_t> delta;
  ProgressBar bar("bpe merges", n_merges, "merges", progress);
  while (merges.size() < n_merges) {
    // Find the best pair whose heap count is current.
    uint64_t best = 0;
    bool found = false;
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), PairEntryLess());
      const PairEntry e = heap.back();
      heap.pop_back();
      auto it = count.find(e.key);
      const int64_t cur = it == count.end() ? 0 : it->second;
      if (cur == e.count && cur > 0) {
        best = e.key;
        found = true;
        break;
      }
      if (cur > 0) {
        heap.push_back({cur, e.key});
        std::push_heap(heap.begin(), heap.end(), PairEntryLess());
      }
    }
    if (!found) break;

    const uint32_t a = key_left(best), b = key_right(best);
    const uint32_t merged = kNumBytes + uint32_t(merges.size());
    merges.emplace_back(a, b);
    std::vector<uint32_t> affected = std::move(where[best]);
    where.erase(best);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());

    delta.clear();
    for (uint32_t w : affected) {
      auto& s = words[w].ids;
      const int64_t c = words[w].count;
      auto gain = [&](uint64_t k) {
        delta[k] += c;
        auto& list = where[k];
        if (list.empty() || list.back() != w) list.push_back(w);
      };
      // In-place left-to-right merge; s[o - 1] is the already-rewritten left
      // neighbour (possibly a fresh `merged`), s[i + 2] the untouched right one.
      size_t o = 0;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          if (o > 0) {
            delta[pair_key(s[o - 1], a)] -= c;
            gain(pair_key(s[o - 1], merged));
          }
          if (i + 2 < s.size()) {
            delta[pair_key(b, s[i + 2])] -= c;
            gain(pair_key(merged, s[i + 2]));
          }
          s[o++] = merged;
          i += 2;
        } else {
          s[o++] = s[i++];
        }
      }
      s.resize(o);
    }
    count.erase(best);  // every occurrence is merged (overlaps like "aaa" leave no (a, a))
    for (const auto& [k, d] : delta) {
      if (k == best || d == 0) continue;
      int64_t& c = count[k];
      c += d;
      if (d > 0) {
        heap.push_back({c, k});
        std::push_heap(heap.begin(), heap.end(), PairEntryLess());
      }
      if (c == 0) count.erase(k);
    }
    bar.update(merges.size());
  }
  bar.finish();
  return merges;
}

std::vector<std::string> specials_for(const std::vector<std::string>& languages) {
  std::vector<std::string> s = {"<|endoftext|>", "<|startoftranscript|>"};
  for (const auto& l : languages) s.push_back("<|" + l + "|>");
  s.push_back("<|transcribe|>");
  s.push_back("<|notimestamps|>");
  return s;
}

void check_languages(const std::vector<std::string>& languages) {
  for (size_t i = 0; i < languages.size(); ++i) {
    const std::string& l = languages[i];
    bool ok = !l.empty() && l.size() <= 16;
    for (char ch : l) ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_');
    CHORUS_CHECK(ok, "tokenizer languages[%zu] = '%s': expected 1-16 characters of [A-Za-z0-9_-]", i,
                 l.c_str());
    for (size_t j = 0; j < i; ++j)
      CHORUS_CHECK(languages[j] != l, "tokenizer languages: '%s' is listed twice", l.c_str());
  }
}

std::string read_file(const std::string& path, const char* what) {
  std::error_code ec;
  CHORUS_CHECK(!std::filesystem::is_directory(path, ec), "%s '%s' is a directory, expected a file", what,
               path.c_str());
  std::ifstream f(path, std::ios::binary);
  CHORUS_CHECK(f.good(), "cannot read %s '%s': %s", what, path.c_str(), std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  CHORUS_CHECK(!f.bad(), "cannot read %s '%s': read error", what, path.c_str());
  return std::move(ss).str();
}

}  // namespace

struct Tokenizer::Impl {
  RankMap ranks;
  std::map<std::string, uint32_t, std::less<>> special_ids;
};

std::string pretokenizer_regex() {
  // Each class's code points as ranges, read off the classifier itself so the
  // regex cannot drift from for_each_pretoken. Surrogates are no characters.
  constexpr size_t kClasses = size_t(CharClass::kNewline) + 1;
  std::vector<std::pair<uint32_t, uint32_t>> ranges[kClasses];
  for (uint32_t c = 0; c <= 0x10FFFF; c = c == 0xD7FF ? 0xE000 : c + 1) {
    auto& r =
        ranges[size_t(c < 0x80 ? classify_ascii(static_cast<unsigned char>(c)) : classify_non_ascii(c))];
    if (!r.empty() && r.back().second + 1 == c)
      r.back().second = c;
    else
      r.emplace_back(c, c);
  }
  auto set = [&](std::initializer_list<CharClass> classes) {
    std::string s = "[";
    for (CharClass k : classes)
      for (const auto& [lo, hi] : ranges[size_t(k)])
        s += lo == hi ? strfmt("\\x{%X}", lo) : strfmt("\\x{%X}-\\x{%X}", lo, hi);
    return s + "]";
  };
  using K = CharClass;
  const std::string L = set({K::kLetter}), LE = set({K::kLetter, K::kExtend}), C = set({K::kCjk}),
                    CE = set({K::kCjk, K::kExtend}), D = set({K::kDigit}), E = set({K::kExtend}) + "*",
                    OE = set({K::kOther, K::kExtend}), S = set({K::kSpace}),
                    wordish = set({K::kLetter, K::kCjk, K::kDigit, K::kOther, K::kExtend});
  // The branches of for_each_pretoken, in its order. A run of spaces before a
  // word gives its last ' ' to the word when it is longer than one byte.
  return "\\x{20}?" + L + LE + "*|" +                      // letters
         "\\x{20}?" + C + CE + "*|" +                      // CJK
         "\\x{20}?" + D + E + "(?:" + D + E + "){0,2}|" +  // at most 3 digits
         "\\x{20}?" + OE + "+|" +                          // other (an extender first)
         S + "+(?=\\x{20}" + wordish + ")|" + S + "+|" + set({K::kNewline}) + "+";
}

const std::vector<std::string>& default_languages() {
  static const std::vector<std::string> langs = {
      "en", "de", "fr", "es", "it", "pt", "ru", "zh",                                 // most data first
      "ar", "bn", "ca", "cs", "da", "el", "fa", "fi", "he", "hi", "hu", "id", "ja",  // then alphabetical
      "ko", "nb", "nl", "pl", "ro", "sv", "sw", "th", "tr", "uk", "ur", "vi"};
  return langs;
}

Tokenizer Tokenizer::train(const std::vector<std::string>& files, const TokenizerTrainOptions& opt) {
  std::vector<std::string> texts;
  texts.reserve(files.size());
  uint64_t n_bytes = 0;
  bool any_text = false;
  for (const auto& f : files) {
    texts.push_back(read_file(f, "tokenizer training file"));
    n_bytes += texts.back().size();
    any_text = any_text || texts.back().find_first_not_of(" \t\r\n\v\f") != std::string::npos;
  }
  CHORUS_CHECK(any_text,
               "tokenizer training text: the %zu input file(s) (%s%s) hold no text (%llu bytes, empty or whitespace "
               "only); a tokenizer trained on them would know no merges",
               files.size(), files.empty() ? "" : files[0].c_str(), files.size() > 1 ? ", ..." : "",
               static_cast<unsigned long long>(n_bytes));
  return train_texts(texts, opt);
}

Tokenizer Tokenizer::train_texts(const std::vector<std::string>& texts, const TokenizerTrainOptions& opt) {
  Tokenizer tok;
  tok.languages_ = opt.languages.empty() ? default_languages() : opt.languages;
  check_languages(tok.languages_);
  tok.specials_ = specials_for(tok.languages_);
  const int n_fixed = int(kNumBytes) + int(tok.specials_.size());
  CHORUS_CHECK(opt.vocab_size >= n_fixed + 1,
               "tokenizer vocab_size %d is too small: expected at least %d (256 bytes + %zu special "
               "tokens + 1 merge)",
               opt.vocab_size, n_fixed + 1, tok.specials_.size());
  const int n_threads = opt.n_threads > 0 ? opt.n_threads : omp_get_max_threads();

  std::vector<std::string_view> views(texts.begin(), texts.end());
  std::vector<TrainWord> words;
  for (const auto& [chunk, n] : count_chunks(views, n_threads)) {
    if (chunk.size() < 2) continue;  // no pairs
    TrainWord w{std::vector<uint32_t>(chunk.size()), n};
    for (size_t i = 0; i < chunk.size(); ++i) w.ids[i] = static_cast<unsigned char>(chunk[i]);
    words.push_back(std::move(w));
  }
  const size_t wanted = size_t(opt.vocab_size - n_fixed);
  tok.merges_ = learn_merges(words, wanted, opt.progress);
  if (tok.merges_.size() < wanted)
    log_warn("tokenizer: the training text allows only %zu of the %zu merges requested (vocab %d): the tokenizer "
             "has %zu tokens; train it on more text for the vocabulary asked for",
             tok.merges_.size(), wanted, opt.vocab_size, kNumBytes + tok.merges_.size() + tok.specials_.size());
  tok.build_tables();
  return tok;
}

void Tokenizer::build_tables() {
  auto impl = std::make_shared<Impl>();
  vocab_.clear();
  vocab_.reserve(kNumBytes + merges_.size() + specials_.size());
  for (uint32_t b = 0; b < kNumBytes; ++b) vocab_.push_back(std::string(1, char(b)));
  for (const auto& [a, b] : merges_) {
    CHORUS_CHECK(a < vocab_.size() && b < vocab_.size(), "tokenizer merge %zu (%u, %u) uses an undefined id",
                 vocab_.size() - kNumBytes, a, b);
    vocab_.push_back(vocab_[a] + vocab_[b]);
  }
  for (const auto& s : specials_) {
    CHORUS_CHECK(impl->special_ids.emplace(s, uint32_t(vocab_.size())).second,
                 "tokenizer special token '%s' is listed twice", s.c_str());
    vocab_.push_back(s);
  }
  impl->ranks.build(merges_);
  hash_ = identity_hash(merges_, specials_, languages_);
  impl_ = std::move(impl);
}

std::string Tokenizer::identity_hash(const std::vector<std::pair<uint32_t, uint32_t>>& merges,
                                     std::span<const std::string> specials, std::span<const std::string> languages) {
  // Canonical serialization: line-based, so no field can bleed into another.
  Sha256 h;
  h.update(strfmt("%s %d\nmerges %zu\n", kFormat, kVersion, merges.size()));
  for (const auto& [a, b] : merges) h.update(strfmt("%u %u\n", a, b));
  h.update(strfmt("specials %zu\n", specials.size()));
  for (const auto& s : specials) h.update(s + "\n");
  h.update(strfmt("languages %zu\n", languages.size()));
  for (const auto& l : languages) h.update(l + "\n");
  return h.hex_digest();
}

Tokenizer Tokenizer::with_language(const std::string& code) const {
  CHORUS_CHECK(impl_ != nullptr, "Tokenizer::with_language on an empty tokenizer");
  const bool ok = (code.size() == 2 || code.size() == 3) &&
                  std::all_of(code.begin(), code.end(), [](char c) { return c >= 'a' && c <= 'z'; });
  CHORUS_CHECK(ok, "language: expected a 2-3 letter lowercase code (ISO 639), got '%s'", code.c_str());
  CHORUS_CHECK(std::find(languages_.begin(), languages_.end(), code) == languages_.end(),
               "language '%s': the tokenizer has <|%s|> already (id %u)", code.c_str(), code.c_str(),
               special("<|" + code + "|>"));
  Tokenizer t = *this;
  t.ancestors_.push_back({hash_, vocab_size()});
  t.specials_.push_back("<|" + code + "|>");
  t.languages_.push_back(code);
  t.build_tables();
  return t;
}

int Tokenizer::vocab_size_of(const std::string& hash) const {
  if (hash == hash_) return vocab_size();
  for (const Ancestor& a : ancestors_)
    if (a.hash == hash) return a.vocab_size;
  return 0;
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text) const {
  CHORUS_CHECK(impl_ != nullptr, "Tokenizer::encode on an empty tokenizer (train or load one first)");
  std::vector<uint32_t> out;
  out.reserve(text.size() / 3 + 16);
  // Per-call cache: chunk -> its ids in cache_ids. Keys point into `text`.
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> cache;
  std::vector<uint32_t> cache_ids;
  BpeScratch scratch;
  constexpr size_t kMaxCached = 64;  // longer chunks are rare; don't bloat the cache with them
  for_each_pretoken(text, [&](std::string_view chunk) {
    if (chunk.size() == 1) {
      out.push_back(static_cast<unsigned char>(chunk[0]));
      return;
    }
    if (chunk.size() > kMaxCached) {
      bpe_chunk(chunk, impl_->ranks, scratch, out);
      return;
    }
    auto it = cache.find(chunk);
    if (it == cache.end()) {
      if (cache_ids.size() > (size_t(1) << 24)) {  // bound memory on huge inputs
        cache.clear();
        cache_ids.clear();
      }
      const size_t begin = cache_ids.size();
      bpe_chunk(chunk, impl_->ranks, scratch, cache_ids);
      it = cache.emplace(chunk, std::make_pair(uint32_t(begin), uint32_t(cache_ids.size() - begin))).first;
    }
    const uint32_t* p = cache_ids.data() + it->second.first;
    out.insert(out.end(), p, p + it->second.second);
  });
  return out;
}

std::vector<std::string_view> Tokenizer::pretokens(std::string_view text) {
  std::vector<std::string_view> out;
  for_each_pretoken(text, [&](std::string_view chunk) { out.push_back(chunk); });
  return out;
}

std::string Tokenizer::decode(std::span<const uint32_t> ids) const {
  std::string out;
  for (uint32_t id : ids) {
    CHORUS_CHECK(id < vocab_.size(), "Tokenizer::decode: id %u is out of range (vocab_size %zu)", id,
                 vocab_.size());
    out += vocab_[id];
  }
  return out;
}

const std::string& Tokenizer::token_bytes(uint32_t id) const {
  CHORUS_CHECK(id < vocab_.size(), "Tokenizer::token_bytes: id %u is out of range (vocab_size %zu)", id,
               vocab_.size());
  return vocab_[id];
}

int Tokenizer::vocab_size() const { return int(vocab_.size()); }

uint32_t Tokenizer::special(std::string_view name) const {
  CHORUS_CHECK(impl_ != nullptr, "Tokenizer::special on an empty tokenizer (train or load one first)");
  auto it = impl_->special_ids.find(name);
  CHORUS_CHECK(it != impl_->special_ids.end(), "tokenizer has no special token '%.*s'", int(name.size()),
               name.data());
  return it->second;
}

// ---- file I/O ----------------------------------------------------------------------

void Tokenizer::save(const std::string& path) const {
  CHORUS_CHECK(impl_ != nullptr, "Tokenizer::save('%s') on an empty tokenizer", path.c_str());
  using nlohmann::json;
  // Hand-laid-out JSON: one merge per line keeps the file diffable.
  std::string s = "{\n";
  s += "  \"format\": " + json(kFormat).dump() + ",\n";
  s += strfmt("  \"version\": %d,\n", kVersion);
  s += strfmt("  \"vocab_size\": %d,\n", vocab_size());
  s += "  \"merges\": [";
  for (size_t i = 0; i < merges_.size(); ++i)
    s += strfmt("%s\n    [%u, %u]", i ? "," : "", merges_[i].first, merges_[i].second);
  s += merges_.empty() ? "],\n" : "\n  ],\n";
  s += "  \"specials\": " + json(specials_).dump() + ",\n";
  s += "  \"languages\": " + json(languages_).dump() + ",\n";
  if (!ancestors_.empty()) {
    json a = json::array();
    for (const Ancestor& x : ancestors_) a.push_back({{"hash", x.hash}, {"vocab_size", x.vocab_size}});
    s += "  \"extends\": " + a.dump() + ",\n";
  }
  s += "  \"hash\": " + json(hash_).dump() + "\n}\n";

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHORUS_CHECK(fd >= 0, "cannot write tokenizer file '%s': %s", tmp.c_str(), std::strerror(errno));
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t w = ::write(fd, s.data() + done, s.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      CHORUS_FAIL("cannot write tokenizer file '%s': %s", tmp.c_str(), std::strerror(err));
    }
    done += size_t(w);
  }
  const bool synced = ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed) {
    const int err = errno;
    ::unlink(tmp.c_str());
    CHORUS_FAIL("cannot write tokenizer file '%s': %s", tmp.c_str(), std::strerror(err));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    CHORUS_FAIL("cannot rename '%s' to '%s': %s", tmp.c_str(), path.c_str(), ec.message().c_str());
  }
}

Tokenizer Tokenizer::load(const std::string& path) {
  using nlohmann::json;
  const std::string text = read_file(path, "tokenizer file");
  json j;
  try {
    j = parse_json(text);
  } catch (const std::exception& e) {  // json::exception, or chorus::Error: too deep
    CHORUS_FAIL("tokenizer file '%s': invalid JSON: %s", path.c_str(), e.what());
  }
  const char* p = path.c_str();
  CHORUS_CHECK(j.is_object(), "tokenizer file '%s': expected a JSON object at the top level", p);
  auto field = [&](const char* name) -> const json& {
    auto it = j.find(name);
    CHORUS_CHECK(it != j.end(), "tokenizer file '%s': field '%s' is missing", p, name);
    return *it;
  };
  auto string_list = [&](const char* name) {
    const json& v = field(name);
    CHORUS_CHECK(v.is_array(), "tokenizer file '%s': field '%s' must be an array of strings", p, name);
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
      CHORUS_CHECK(v[i].is_string(), "tokenizer file '%s': field '%s[%zu]' must be a string", p, name, i);
      out.push_back(v[i].get<std::string>());
    }
    return out;
  };

  const json& format = field("format");
  CHORUS_CHECK(format.is_string() && format.get<std::string>() == kFormat,
               "tokenizer file '%s': field 'format' is %s, expected \"%s\"", p, format.dump().c_str(), kFormat);
  const json& version = field("version");
  CHORUS_CHECK(version.is_number_integer() && version.get<int64_t>() == kVersion,
               "tokenizer file '%s': field 'version' is %s, expected %d (written by another Chorus version?)", p,
               version.dump().c_str(), kVersion);

  Tokenizer tok;
  const json& merges = field("merges");
  CHORUS_CHECK(merges.is_array(), "tokenizer file '%s': field 'merges' must be an array of [a, b] pairs", p);
  std::map<uint64_t, size_t> seen;
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    CHORUS_CHECK(m.is_array() && m.size() == 2 && m[0].is_number_unsigned() && m[1].is_number_unsigned(),
                 "tokenizer file '%s': field 'merges[%zu]' is %s, expected a pair [a, b] of token ids", p, i,
                 m.dump().c_str());
    const uint64_t a = m[0].get<uint64_t>(), b = m[1].get<uint64_t>();
    const uint64_t limit = kNumBytes + i;  // merge i may only use ids defined before it
    CHORUS_CHECK(a < limit && b < limit,
                 "tokenizer file '%s': field 'merges[%zu]' = [%llu, %llu] references an id not yet defined "
                 "(expected ids < %llu)",
                 p, i, (unsigned long long)a, (unsigned long long)b, (unsigned long long)limit);
    auto [it, fresh] = seen.emplace(pair_key(uint32_t(a), uint32_t(b)), i);
    CHORUS_CHECK(fresh, "tokenizer file '%s': field 'merges[%zu]' repeats merges[%zu]", p, i, it->second);
    tok.merges_.emplace_back(uint32_t(a), uint32_t(b));
  }
  tok.specials_ = string_list("specials");
  tok.languages_ = string_list("languages");
  for (size_t i = 0; i < tok.specials_.size(); ++i) {
    CHORUS_CHECK(!tok.specials_[i].empty(), "tokenizer file '%s': field 'specials[%zu]' is empty", p, i);
    for (size_t k = 0; k < i; ++k)
      CHORUS_CHECK(tok.specials_[k] != tok.specials_[i],
                   "tokenizer file '%s': field 'specials[%zu]' repeats specials[%zu] ('%s')", p, i, k,
                   tok.specials_[i].c_str());
  }
  const json& vocab = field("vocab_size");
  const size_t expected_vocab = kNumBytes + tok.merges_.size() + tok.specials_.size();
  CHORUS_CHECK(vocab.is_number_unsigned() && vocab.get<uint64_t>() == expected_vocab,
               "tokenizer file '%s': field 'vocab_size' is %s, expected %zu (256 bytes + %zu merges + %zu "
               "specials)",
               p, vocab.dump().c_str(), expected_vocab, tok.merges_.size(), tok.specials_.size());
  const json& hash = field("hash");
  CHORUS_CHECK(hash.is_string(), "tokenizer file '%s': field 'hash' must be a string", p);

  tok.build_tables();
  CHORUS_CHECK(hash.get<std::string>() == tok.hash_,
               "tokenizer file '%s': field 'hash' is %s but the merges, specials and languages hash to \"%s\" "
               "(the file was edited or corrupted)",
               p, hash.dump().c_str(), tok.hash_.c_str());
  // Ancestors (with_language): each is this tokenizer without the specials
  // and languages appended after it, one language per step.
  if (auto it = j.find("extends"); it != j.end()) {
    CHORUS_CHECK(it->is_array(), "tokenizer file '%s': field 'extends' must be an array", p);
    const size_t n = it->size();
    CHORUS_CHECK(n <= tok.languages_.size() && n <= tok.specials_.size(),
                 "tokenizer file '%s': field 'extends' lists %zu ancestors, more than the languages", p, n);
    for (size_t i = 0; i < n; ++i) {
      const json& a = (*it)[i];
      CHORUS_CHECK(a.is_object() && a.contains("hash") && a["hash"].is_string() && a.contains("vocab_size") &&
                       a["vocab_size"].is_number_unsigned(),
                   "tokenizer file '%s': field 'extends[%zu]' must be {\"hash\": string, \"vocab_size\": n}", p, i);
      const size_t drop = n - i;  // languages added since this ancestor
      const std::string want = identity_hash(
          tok.merges_, std::span(tok.specials_).first(tok.specials_.size() - drop),
          std::span(tok.languages_).first(tok.languages_.size() - drop));
      const int vocab_then = static_cast<int>(expected_vocab - drop);
      CHORUS_CHECK(a["hash"].get<std::string>() == want && a["vocab_size"].get<int>() == vocab_then,
                   "tokenizer file '%s': field 'extends[%zu]' is %s but this tokenizer without its last %zu "
                   "language(s) has hash \"%s\" and %d tokens (edited or corrupted)",
                   p, i, a.dump().c_str(), drop, want.c_str(), vocab_then);
      tok.ancestors_.push_back({want, vocab_then});
    }
  }
  return tok;
}

}  // namespace chorus::data
