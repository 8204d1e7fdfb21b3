"""Sentence pools and the train / val / test split shared by make_corpus.py and
pretrain_text.py (stdlib only).

One module decides, for every sentence of the shipped text, (a) whether it is
speakable by espeak-ng (`speakable`) and (b) which split it belongs to
(`split_of`). The split is a pure function of the language and the sentence's
*key* (`sentence_key`: NFKC, case-folded, letters and digits only), so

  * it never changes when the pools grow (e.g. with --large),
  * near-duplicates that differ only in case or punctuation share a split,
  * pretrain_text.py can remove exactly the val / test sentences from the
    pretraining text without knowing which clips were synthesised.

Changing anything here changes the pools or the splits: bump SPLIT_VERSION.

Pipeline, per file:
  lines -> paragraphs (`paragraphs`: a line is joined to the next one when it
  lacks sentence-final punctuation and the next starts with a lower-case
  letter, which undoes hard line wraps) -> sentences (`sentence_spans`: after
  . ! ? ... followed by space and a word that does not start in lower case,
  except after a known abbreviation or an initial; zh: after 。！？) ->
  `clean` (NFC, whitespace collapsed, leading dialogue dashes dropped) ->
  `speakable` filter -> pool (minus sentences that contain another split's
  val / test sentence).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import unicodedata

SPLIT_VERSION = 1

# Languages the speech generator supports, with their espeak-ng voices (the
# first is the default; several = chosen per clip).
VOICES = {
    "en": ("en-us", "en-gb"),
    "de": ("de",),
    "fr": ("fr-fr",),
    "es": ("es",),
    "it": ("it",),
    "pt": ("pt",),  # European Portuguese, matching the 19th-century texts
    "ru": ("ru",),
    "zh": ("cmn-latn-pinyin",),  # reads hanzi as Mandarin with tones (see README)
    # Languages the quickstart and recipes do not train on: the cross-lingual
    # transfer experiment (launch/experiments/transfer) adapts to them, with
    # sentences from datasets/text-extra.
    "pl": ("pl",),
    "cs": ("cs",),
}
SPEECH_LANGS = tuple(VOICES)
DEFAULT_SPEECH_LANGS = ("en", "de", "fr", "es", "it", "pt", "ru", "zh")  # make_corpus.py's default
LARGE_LANGS = ("en", "de", "fr", "es", "it", "pt", "ru")  # datasets/text-large
EXTRA_LANGS = ("pl", "cs")  # datasets/text-extra: sentences for the transfer experiment
UNSEGMENTED = frozenset({"zh"})  # written without spaces between words

# Fractions of the hash range: [0, TEST) -> test, [TEST, TEST + VAL) -> val.
TEST_FRACTION = 0.05
VAL_FRACTION = 0.05
# The transfer languages train on at most ~100 clips but need >= 50 test
# sentences from small pools (datasets/text-extra): a larger test share.
TEST_FRACTION_EXTRA = 0.15


def test_fraction(lang: str) -> float:
    return TEST_FRACTION_EXTRA if lang in EXTRA_LANGS else TEST_FRACTION

# Length limits for a clip: words (alphabetic) or hanzi (zh), inclusive.
MIN_WORDS, MAX_WORDS = 3, 20
MIN_HANZI, MAX_HANZI = 4, 40

_LATIN = "abcdefghijklmnopqrstuvwxyz"
# Lower-case (case-folded) letters a sentence of each language may contain.
ALPHABETS = {
    "en": frozenset(_LATIN),
    "de": frozenset(_LATIN + "äöüß"),
    "fr": frozenset(_LATIN + "àâæçéèêëîïôœùûüÿ"),
    "es": frozenset(_LATIN + "áéíñóúü"),
    "it": frozenset(_LATIN + "àèéìíîòóùú"),
    "pt": frozenset(_LATIN + "áâãàçéêíóôõúü"),
    "ru": frozenset("абвгдеёжзийклмнопрстуфхцчшщъыьэюя"),
    "pl": frozenset(_LATIN + "ąćęłńóśźż"),
    "cs": frozenset(_LATIN + "áčďéěíňóřšťúůýž"),
}

# Punctuation a speakable sentence may contain (anything else, e.g. brackets,
# digits, slashes, '&', '*', drops the sentence).
_PUNCT_ALPHA = frozenset(" ,.;:!?'’-–—…\"“”„«»‹›¿¡")
_PUNCT_ZH = frozenset("，、；：。！？“”‘’「」『』…—·")

# Words after which '.' does not end a sentence (lower case, without the dot).
ABBREVIATIONS = {
    "en": {"mr", "mrs", "ms", "dr", "st", "sr", "jr", "messrs", "mt", "rev", "col", "capt", "gen", "lt", "prof"},
    "de": {"hr", "fr", "dr", "st", "nr", "bzw", "vgl", "usw", "z", "b", "d", "h", "ca", "sog"},
    "fr": {"m", "mm", "mme", "mmes", "mlle", "mlles", "dr", "st", "ste", "mgr"},
    "es": {"sr", "sra", "srta", "sres", "d", "dña", "dr", "ud", "uds", "vd", "vds", "sto", "sta"},
    "it": {"sig", "sigg", "sigra", "dott", "prof", "s", "ecc", "avv", "ing"},
    "pt": {"sr", "sra", "srs", "d", "dr", "exa", "exmo", "v", "s"},
    "ru": {"т", "г", "гг", "ул", "им", "см", "тов", "proc"},
    "pl": {"np", "itd", "itp", "tzw", "dr", "prof", "św", "ul", "im", "r", "ok"},
    "cs": {"tj", "tzv", "např", "atd", "apod", "dr", "prof", "sv", "ing", "mudr", "st"},
}

_SENT_END_ALPHA = re.compile(r"[.!?…]+[\"'”’»›]*(?=\s)")
_SENT_END_ZH = re.compile(r"[。！？]+[”’」』]*")
_LAST_WORD = re.compile(r"(\w+)$")
_NON_SPACE = re.compile(r"\S")
_WORD = re.compile(r"\w+")
_SINGLE_DOT = re.compile(r"(?<!\.)\.(?!\.)")
_QUOTE_NOT_AFTER_LETTER = re.compile(r"(?<!\w)['’]")
_LEADING_DASHES = re.compile(r"^[-–—\s]+")
_FINAL_PUNCT_CHARS = ".!?…。！？"
_OPENERS = "\"'“”„«»‹›‘’—–-¿¡ "


def is_han(c: str) -> bool:
    """CJK Unified Ideographs (BMP block only: espeak-ng's cmn dictionary
    covers it; code points beyond it are read out as numbers)."""
    return "\u4e00" <= c <= "\u9fff"


# ---- text files ----------------------------------------------------------------


def read_text(path: str) -> str:
    """UTF-8 text of a .txt or .txt.xz file."""
    if path.endswith(".xz"):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def source_files(root: str, lang: str, large: bool) -> list[str]:
    """The shipped text files of `lang` under datasets/ (`root`), in order."""
    files = [os.path.join(root, "text", lang + ".txt")]
    if large and lang in LARGE_LANGS:
        files.append(os.path.join(root, "text-large", lang + ".txt.xz"))
    extra = os.path.join(root, "text-extra", lang + ".txt.xz")  # the transfer languages' sentences
    if lang in EXTRA_LANGS:
        files.append(extra)
    return files


def _final_start(s: str, terminals: str, closers: str) -> int:
    """Start of the sentence-final punctuation cluster of s (terminal marks,
    then closing quotes), or -1 when s does not end in one."""
    i = len(s)
    while i > 0 and s[i - 1] in closers:
        i -= 1
    j = i
    while j > 0 and s[j - 1] in terminals:
        j -= 1
    return j if j < i else -1


def _ends_sentence(line: str) -> bool:
    s = line.rstrip().rstrip("\"'”’»›)")
    return bool(s) and s[-1] in _FINAL_PUNCT_CHARS + ":;"


def _first_letter(s: str) -> str:
    for c in s:
        if c.isalpha():
            return c
        if c not in _OPENERS:
            return ""
    return ""


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the paragraphs of `text`: runs of
    non-blank lines where each line but the last lacks sentence-final
    punctuation and the next line starts (after quotes / dashes) with a
    lower-case letter. Spans exclude the final newline."""
    spans = []
    lines = text.split("\n")
    pos = 0
    start = None
    for i, line in enumerate(lines):
        if start is None:
            start = pos
        end = pos + len(line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        join = (line.strip() and nxt.strip() and not _ends_sentence(line) and _first_letter(nxt.lstrip()).islower())
        if not join:
            if text[start:end].strip():
                spans.append((start, end))
            start = None
        pos = end + 1
    return spans


def sentence_spans(para: str, lang: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of one paragraph, leading and
    trailing whitespace excluded. Every non-blank character of `para` lies in
    exactly one span."""
    cuts = []
    if lang in UNSEGMENTED:
        cuts = [m.end() for m in _SENT_END_ZH.finditer(para)]
    else:
        abbrev = ABBREVIATIONS.get(lang, set())
        for m in _SENT_END_ALPHA.finditer(para):
            nxt = _NON_SPACE.search(para, m.end())
            if nxt is None or _first_letter(para[nxt.start():nxt.start() + 16]).islower():
                continue
            if para[m.start()] == "." and m.group(0).rstrip("\"'”’»›") == ".":
                word = _LAST_WORD.search(para, max(0, m.start() - 32), m.start())
                if word and (word.group(1).lower() in abbrev or (len(word.group(1)) == 1 and word.group(1).isupper())):
                    continue
            cuts.append(m.end())
    spans = []
    start = 0
    for cut in cuts + [len(para)]:
        seg = para[start:cut]
        if seg.strip():
            lead = len(seg) - len(seg.lstrip())
            spans.append((start + lead, start + len(seg.rstrip())))
        start = cut
    return spans


def clean(sentence: str) -> str:
    """The transcript form of a raw sentence: NFC, whitespace collapsed,
    leading dialogue dashes removed."""
    s = " ".join(unicodedata.normalize("NFC", sentence).split())
    return _LEADING_DASHES.sub("", s)


# ---- keys and splits -------------------------------------------------------------


class _KeyTable(dict):
    """str.translate table: letters, marks and digits kept, the rest -> ' '."""

    def __missing__(self, cp: int) -> str:
        c = chr(cp)
        v = c if unicodedata.category(c)[0] in "LMN" else " "
        self[cp] = v
        return v


_KEY_TABLE = _KeyTable()


def sentence_key(text: str, lang: str) -> str:
    """The identity of a sentence: NFKC, case-folded, every character that is
    not a letter, mark or digit replaced by a space, whitespace collapsed; for
    unsegmented languages the spaces are removed too."""
    t = unicodedata.normalize("NFKC", text).casefold().translate(_KEY_TABLE)
    return "".join(t.split()) if lang in UNSEGMENTED else " ".join(t.split())


def key_eligible(key: str, lang: str) -> bool:
    """Whether a key could be that of a speech sentence: no digits, only the
    language's letters, length within limits. Every `speakable` sentence has
    an eligible key; pretrain_text.py removes every held-out eligible key."""
    if lang in UNSEGMENTED:
        return MIN_HANZI <= len(key) <= MAX_HANZI and all(is_han(c) for c in key)
    alphabet = ALPHABETS[lang]
    words = key.split()
    return MIN_WORDS <= len(words) <= MAX_WORDS and set(key) - {" "} <= alphabet


def split_of(key: str, lang: str) -> str:
    """'train', 'val' or 'test' for a sentence key, by sha1 of "lang<TAB>key"."""
    h = hashlib.sha1((lang + "\t" + key).encode("utf-8")).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    test = test_fraction(lang)
    if u < test:
        return "test"
    if u < test + VAL_FRACTION:
        return "val"
    return "train"


def held_out(key: str, lang: str) -> bool:
    """True when the sentence with this key must not be in pretraining text."""
    return lang in VOICES and key_eligible(key, lang) and split_of(key, lang) != "train"


# ---- the speakability filter ---------------------------------------------------------


def _quotes_balanced(s: str, lang: str) -> bool:
    if lang in UNSEGMENTED:
        return all(s.count(a) == s.count(b) for a, b in ("“”", "‘’", "「」", "『』"))
    doubles = sum(s.count(c) for c in "\"“”„")
    if doubles % 2 or s.count("«") != s.count("»") or s.count("‹") != s.count("›"):
        return False
    # ' and ’ only as apostrophes: right after a letter (s has passed
    # _chars_allowed, so \w is a letter here)
    return _QUOTE_NOT_AFTER_LETTER.search(s) is None


_ALLOWED: dict[str, set[str]] = {}  # per language: characters already found allowed


def _chars_allowed(s: str, lang: str) -> bool:
    """Whether every character of s is one of the language's letters (any
    case; zh: hanzi) or allowed punctuation."""
    ok = _ALLOWED.setdefault(lang, set())
    chars = set(s)
    if chars <= ok:
        return True
    for c in chars - ok:
        if lang in UNSEGMENTED:
            good = is_han(c) or c in _PUNCT_ZH
        else:
            good = c in _PUNCT_ALPHA or (
                c.isalpha() and all(x in ALPHABETS[lang] for x in unicodedata.normalize("NFKC", c).casefold()))
        if not good:
            return False
        ok.add(c)
    return True


def speakable(s: str, lang: str) -> bool:
    """Whether a cleaned sentence goes into the speech pool: only the
    language's letters (zh: hanzi) and common punctuation (no digits,
    brackets or symbols), balanced quotes, ends in sentence-final punctuation,
    no abbreviation-like inner '.', no all-capitals word, and a key within
    the length limits."""
    if not s:
        return False
    if lang in UNSEGMENTED:
        if len(s) > 2 * MAX_HANZI or _final_start(s, "。！？", "”’」』") < 0:
            return False
        if not _chars_allowed(s, lang):
            return False
    else:
        if s.count(" ") >= 2 * MAX_WORDS:
            return False
        final = _final_start(s, ".!?…", "\"'”’»›")
        if final < 0:
            return False
        if not _chars_allowed(s, lang):
            return False
        if _SINGLE_DOT.search(s, 0, final):
            return False
        if not s[1:].islower() and any(len(w) >= 2 and w.isupper() for w in _WORD.findall(s)):
            return False
        if not s[0].isalpha() and s[0] not in "\"“„«»‹¿¡":
            return False
    if not _quotes_balanced(s, lang):
        return False
    return key_eligible(sentence_key(s, lang), lang)


# ---- pools -----------------------------------------------------------------------------


def iter_sentences(text: str, lang: str):
    """Yields (start, end, cleaned sentence) for every sentence of `text`
    (positions in `text`)."""
    for p0, p1 in paragraphs(text):
        para = text[p0:p1]
        for s0, s1 in sentence_spans(para, lang):
            yield p0 + s0, p0 + s1, clean(para[s0:s1])


def _speakable(root: str, lang: str, large: bool) -> list[tuple[str, str]]:
    """(sentence, split) for the distinct speakable sentences of `lang` (one
    per key, the first seen), in corpus order."""
    out = []
    seen = set()
    for path in source_files(root, lang, large):
        for _, _, s in iter_sentences(read_text(path), lang):
            if not speakable(s, lang):
                continue
            k = sentence_key(s, lang)
            if k not in seen:
                seen.add(k)
                out.append((s, split_of(k, lang)))
    return out


_TAIL_CHARS = frozenset(".!?…。！？\"'”’»›」』")


class Containment:
    """Finds which of a set of sentences (each ending in sentence-final
    punctuation) occur as substrings of a text: an index by the last two
    characters, probed at each punctuation mark of the text."""

    def __init__(self, items: list[tuple[str, str]]):
        self.index: dict[str, list[tuple[str, str]]] = {}
        for sentence, split in items:
            self.index.setdefault(sentence[-2:], []).append((sentence, split))

    def find(self, text: str, other_than: str = "") -> tuple[str, str] | None:
        """The first (sentence, split) with split != other_than that occurs
        in text, or None."""
        for i in range(1, len(text)):
            if text[i] in _TAIL_CHARS:
                for sentence, split in self.index.get(text[i - 1:i + 1], ()):
                    if split != other_than and sentence in text:
                        return sentence, split
        return None


_HELD_OUT: dict[tuple[str, str], Containment] = {}


def held_out_sentences(root: str, lang: str) -> Containment:
    """The speakable val and test sentences of `lang` from all shipped text
    (datasets/text and datasets/text-large, whatever --large says), so that
    what is excluded never depends on which corpus was generated."""
    k = (os.path.abspath(root), lang)
    if k not in _HELD_OUT:
        _HELD_OUT[k] = Containment([x for x in _speakable(root, lang, True) if x[1] != "train"])
    return _HELD_OUT[k]


def build_pools(root: str, lang: str, large: bool) -> dict[str, list[str]]:
    """{'train': [...], 'val': [...], 'test': [...]}: the distinct speakable
    sentences of `lang` in corpus order, each in the split of its key, minus
    those that contain a val or test sentence of another split as a substring
    (e.g. train "Oh, my God! he cried." vs test "Oh, my God!"), so no split
    holds another split's val / test sentence even inside a longer one."""
    held = held_out_sentences(root, lang)
    pools: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for sentence, split in _speakable(root, lang, large):
        if held.find(sentence, other_than=split) is None:
            pools[split].append(sentence)
    return pools


def rank(sentence: str, lang: str, seed: int) -> bytes:
    """Seeded sort key: the pick order within a pool. Depends only on the
    sentence, so growing a pool only inserts new sentences into the order."""
    return hashlib.sha1(f"{seed}\t{lang}\t{sentence_key(sentence, lang)}".encode("utf-8")).digest()


def pick(pool: list[str], n: int, lang: str, seed: int) -> list[str]:
    """The first n sentences of `pool` in seeded rank order."""
    return sorted(pool, key=lambda s: rank(s, lang, seed))[:n]
