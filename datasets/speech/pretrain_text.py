#!/usr/bin/env python3
"""Writes the GPT pretraining text with the speech val / test sentences removed
(python3 stdlib only).

  pretrain_text.py --out DIR [--large] [--langs en,zh,...] [--quiet]
      DIR/<lang>.txt        datasets/text/<lang>.txt (all 33 languages unless --langs)
      DIR/<lang>-large.txt  datasets/text-large/<lang>.txt.xz (with --large)
  pretrain_text.py --out DIR --check MANIFEST...
      exits 1 if a transcript of the given manifests (pass val.tsv and
      test.tsv) occurs in DIR/*.txt, 0 otherwise.

Uses sentences.py, the same splitter and hash as make_corpus.py: in every
language the speech generator supports, each sentence whose key is eligible
for speech and hashes to val or test is cut out, and so is each sentence that
contains a speakable val / test sentence of any shipped text (with the spaces
after it; a line left blank is dropped). Everything else is copied byte for byte, so
documents (non-empty lines) stay as they were. Since the split depends only
on the sentence, this holds for any corpus make_corpus.py writes, with or
without --large, for any --seed and counts.

--check tests two things per transcript: no sentence of the text (split the
same way) has the transcript's key, and the transcript (whitespace collapsed)
is not a substring of the text (whitespace collapsed).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sentences  # noqa: E402

DATASETS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_held_out(sentence: str, lang: str) -> bool:
    """A sentence of the pretraining text to cut: its key is a val / test key,
    or it contains a speakable val / test sentence."""
    if sentences.held_out(sentences.sentence_key(sentence, lang), lang):
        return True
    return sentences.held_out_sentences(DATASETS_DIR, lang).find(sentences.clean(sentence)) is not None


def strip_paragraph(para: str, lang: str) -> tuple[str, int, int]:
    """(para without its held-out sentences, n removed, n sentences)."""
    spans = sentences.sentence_spans(para, lang)
    cut = [(a, b) for a, b in spans if is_held_out(para[a:b], lang)]
    if not cut:
        return para, 0, len(spans)
    out, pos = [], 0
    for a, b in cut:
        out.append(para[pos:a])
        pos = b
        while pos < len(para) and para[pos] in " \t":
            pos += 1
    out.append(para[pos:])
    lines = [line for line in "".join(out).split("\n") if line.strip()]
    return "\n".join(lines), len(cut), len(spans)


def strip_text(text: str, lang: str) -> tuple[str, int, int]:
    """(text without its held-out sentences, n removed, n sentences)."""
    if lang not in sentences.VOICES:
        return text, 0, 0
    out, pos, n_cut, n_all = [], 0, 0, 0
    for a, b in sentences.paragraphs(text):
        new, c, n = strip_paragraph(text[a:b], lang)
        n_cut, n_all = n_cut + c, n_all + n
        out.append(text[pos:a])
        if new:
            out.append(new)
            pos = b
        else:  # drop the paragraph's lines and their newline
            pos = b + 1 if b < len(text) and text[b] == "\n" else b
    out.append(text[pos:])
    return "".join(out), n_cut, n_all


def lang_of(path: str) -> str:
    """'ru' for DIR/ru.txt and DIR/ru-large.txt."""
    return os.path.basename(path).split(".")[0].split("-")[0]


def write(out_dir: str, large: bool, langs: list[str] | None, quiet: bool) -> int:
    os.makedirs(out_dir, exist_ok=True)
    jobs = []
    for path in sorted(glob.glob(os.path.join(DATASETS_DIR, "text", "*.txt"))):
        lang = lang_of(path)
        if langs is not None and lang not in langs:
            continue
        jobs.append((path, os.path.join(out_dir, lang + ".txt"), lang))
        if large and lang in sentences.LARGE_LANGS:
            jobs.append((os.path.join(DATASETS_DIR, "text-large", lang + ".txt.xz"),
                         os.path.join(out_dir, lang + "-large.txt"), lang))
    totals: dict[str, list[int]] = {}
    for src, dst, lang in jobs:
        text, n_cut, n_all = strip_text(sentences.read_text(src), lang)
        tmp = dst + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dst)
        t = totals.setdefault(lang, [0, 0])
        t[0] += n_cut
        t[1] += n_all
    if not quiet:
        print(f"[pretrain_text] wrote {len(jobs)} files to {out_dir}; speech val/test sentences removed:")
        for lang in sentences.SPEECH_LANGS:
            if lang in totals:
                c, n = totals[lang]
                print(f"  {lang}  {c:6d} of {n:7d} sentences ({100.0 * c / max(n, 1):.1f}%)")
        print(f"  other {len(totals) - sum(1 for x in totals if x in sentences.VOICES)} languages: copied unchanged")
    return 0


def check(out_dir: str, manifests: list[str], quiet: bool) -> int:
    keys: dict[tuple[str, str], str] = {}
    surface: dict[str, set[str]] = {}
    for m in manifests:
        with open(m, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 3:
                    print(f"pretrain_text: {m}:{n}: expected path<TAB>lang<TAB>text", file=sys.stderr)
                    return 2
                _, lang, text = parts
                keys[(lang, sentences.sentence_key(text, lang))] = text
                surface.setdefault(lang, set()).add(" ".join(text.split()))
    files = sorted(glob.glob(os.path.join(out_dir, "*.txt")))
    if not files:
        print(f"pretrain_text: no .txt files in {out_dir}", file=sys.stderr)
        return 2
    problems = []
    for path in files:
        lang = lang_of(path)
        text = sentences.read_text(path)
        for a, b, s in sentences.iter_sentences(text, lang):
            k = (lang, sentences.sentence_key(s, lang))
            if k in keys:
                problems.append(f"{path}: sentence {s!r} has the key of transcript {keys[k]!r}")
        flat = " ".join(text.split())
        for t in surface.get(lang, ()):
            if t in flat:
                problems.append(f"{path}: contains transcript {t!r}")
    if problems:
        for p in problems[:50]:
            print("pretrain_text: " + p, file=sys.stderr)
        print(f"pretrain_text: check FAILED: {len(problems)} occurrences of {len(keys)} transcripts", file=sys.stderr)
        return 1
    if not quiet:
        print(f"[pretrain_text] check ok: none of {len(keys)} transcripts occurs in {len(files)} files of {out_dir}")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (with --check: the directory to check)")
    ap.add_argument("--large", action="store_true", help="also write the large corpus (datasets/text-large)")
    ap.add_argument("--langs", help="comma-separated languages to write (default: every datasets/text/*.txt)")
    ap.add_argument("--check", nargs="+", metavar="MANIFEST", help="only check DIR against these manifests")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.check:
        return check(a.out, a.check, a.quiet)
    langs = [x for x in a.langs.split(",") if x] if a.langs else None
    if langs is not None:
        shipped = {lang_of(p) for p in glob.glob(os.path.join(DATASETS_DIR, "text", "*.txt"))}
        unknown = sorted(set(langs) - shipped)
        if unknown:
            ap.error(f"--langs: no datasets/text/<lang>.txt for {','.join(unknown)}")
    return write(a.out, a.large, langs, a.quiet)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
