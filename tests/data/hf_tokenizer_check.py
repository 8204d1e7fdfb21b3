#!/usr/bin/env python3
"""An independent reader of a Hugging Face `tokenizers` tokenizer.json, written
from the format's description and nothing of Chorus, for
tests/data/hf_tokenizer_test.cpp: it encodes a text the way the `tokenizers`
library does for the pieces a byte-level BPE tokenizer.json uses, and decodes
the ids again.

    python3 hf_tokenizer_check.py tokenizer.json text.txt

Encoding: added tokens are split out first (leftmost, longest match); each
remaining span goes through the pre-tokenizer steps (Split with a regex:
matches and the gaps between them become pieces, "Isolated"; ByteLevel without
its own regex: each UTF-8 byte becomes GPT-2's printable character), then the
BPE model (start from one symbol per character; repeatedly merge the adjacent
pair of lowest merge rank, leftmost first). Decoding: the tokens' strings
joined, characters mapped back to bytes (ByteLevel decoder), as UTF-8.
Prints one JSON line: {"ids", "pieces", "gaps", "roundtrip"}.
"""
import json
import re
import sys


def bytes_to_unicode():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def onig_to_python(pattern):
    # The only escape a Chorus pattern uses is \x{HEX}; Python spells it \UXXXXXXXX.
    py = re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: "\\U%08X" % int(m.group(1), 16), pattern)
    assert "\\x" not in py and re.search(r"\\[^U]", py) is None, "unexpected escape in the pattern"
    return py


class Tok:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        m = j["model"]
        assert m["type"] == "BPE" and not m.get("byte_fallback") and not m.get("ignore_merges")
        assert m.get("continuing_subword_prefix") is None and m.get("end_of_word_suffix") is None
        assert j["normalizer"] is None and j["post_processor"] is None
        assert j["decoder"]["type"] == "ByteLevel"
        self.vocab = m["vocab"]
        self.inv = {i: s for s, i in self.vocab.items()}
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        self.rank = {p: r for r, p in enumerate(merges)}
        self.added = {t["content"]: t["id"] for t in j["added_tokens"]}
        for t in j["added_tokens"]:
            self.inv[t["id"]] = t["content"]
        pre = j["pre_tokenizer"]
        self.steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
        self.b2u = bytes_to_unicode()
        self.u2b = {c: b for b, c in self.b2u.items()}
        self.pieces, self.gaps = [], 0

    def split_added(self, text):
        out, i, start = [], 0, 0
        while i < len(text):
            best = max((a for a in self.added if text.startswith(a, i)), key=len, default=None)
            if best is None:
                i += 1
                continue
            if start < i:
                out.append((text[start:i], False))
            out.append((best, True))
            i += len(best)
            start = i
        if start < len(text):
            out.append((text[start:], False))
        return out

    def pre_tokenize(self, text):
        pieces = [text]
        for step in self.steps:
            if step["type"] == "Split":
                assert step["behavior"] == "Isolated" and not step["invert"]
                rx = re.compile(onig_to_python(step["pattern"]["Regex"]))
                nxt = []
                for p in pieces:
                    at = 0
                    for mt in rx.finditer(p):
                        if mt.start() > at:
                            nxt.append(p[at:mt.start()])
                            self.gaps += 1
                        nxt.append(mt.group(0))
                        at = mt.end()
                    if at < len(p):
                        nxt.append(p[at:])
                        self.gaps += 1
                pieces = nxt
            elif step["type"] == "ByteLevel":
                assert step["add_prefix_space"] is False and step.get("use_regex", True) is False
                self.pieces += pieces
                pieces = ["".join(self.b2u[b] for b in p.encode("utf-8")) for p in pieces]
            else:
                raise SystemExit("unsupported pre-tokenizer step " + step["type"])
        return pieces

    def bpe(self, word):
        syms = list(word)
        while len(syms) > 1:
            best, at = None, -1
            for i in range(len(syms) - 1):
                r = self.rank.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            syms[at:at + 2] = [syms[at] + syms[at + 1]]
        return [self.vocab[s] for s in syms]

    def encode(self, text):
        ids = []
        for span, special in self.split_added(text):
            if special:
                ids.append(self.added[span])
                continue
            for w in self.pre_tokenize(span):
                ids += self.bpe(w)
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            out += bytes(self.u2b[c] for c in self.inv[i])
        return out.decode("utf-8", errors="replace")


def main():
    tok = Tok(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8", newline="") as f:
        text = f.read()
    ids = tok.encode(text)
    print(json.dumps({"ids": ids, "pieces": tok.pieces, "gaps": tok.gaps, "roundtrip": tok.decode(ids) == text},
                     ensure_ascii=True))


if __name__ == "__main__":
    main()
