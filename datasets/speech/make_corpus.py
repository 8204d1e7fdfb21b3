#!/usr/bin/env python3
"""Generates a multilingual synthetic speech corpus from the shipped text with
espeak-ng and sox (python3 stdlib only).

  make_corpus.py --out DIR [--langs en,de,fr,es,it,pt,ru,zh] [--train N] [--val N]
                 [--test N] [--seed S] [--jobs J] [--large] [--prune] [--quiet]

For every language and split it picks N sentences (seeded) from that split's
pool (sentences.py: disjoint train / val / test sentences, assigned by a hash
of the sentence), synthesises each with

  espeak-ng -v VOICE+VARIANT -s SPEED -p PITCH -w raw.wav TEXT
  sox -G raw.wav -r 16000 -c 1 -b 16 -e signed-integer out.wav

with the variant (m1-m7, f1-f5), speed (130-190 wpm) and pitch (30-70) drawn
per clip from a seeded generator, and writes

  DIR/clips/<split>/<lang>/<id>.wav   16 kHz mono 16-bit PCM
  DIR/{train,val,test}.tsv           path<TAB>lang<TAB>text (path relative to DIR, no header)
  DIR/corpus.json                    languages, counts, seconds, parameters, versions

The clip id is a hash of the text and every synthesis parameter, so a rerun
skips clips that already exist with the same parameters (an interrupted run
continues where it stopped). WAVs are written to a .part file and renamed.
Exit status: 0 on success, 1 if any clip failed, 2 on bad arguments or
missing tools.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sentences  # noqa: E402

GENERATOR_VERSION = 1  # bump when synthesis changes (changes every clip id)
SAMPLE_RATE = 16000
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
SPEED_WPM = (130, 190)  # espeak-ng -s, inclusive
PITCH = (30, 70)  # espeak-ng -p (0-99, default 50), inclusive
SPLITS = ("train", "val", "test")
DATASETS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clip:
    """One clip to synthesise: its text and parameters, and where it goes."""

    def __init__(self, split: str, lang: str, text: str, seed: int):
        key = sentences.sentence_key(text, lang)
        rng = random.Random(hashlib.sha1(f"{seed}\t{split}\t{lang}\t{key}".encode("utf-8")).digest())
        self.split, self.lang, self.text = split, lang, text
        self.voice = rng.choice(sentences.VOICES[lang])
        self.variant = rng.choice(VARIANTS)
        self.speed = rng.randint(*SPEED_WPM)
        self.pitch = rng.randint(*PITCH)
        params = json.dumps([GENERATOR_VERSION, SAMPLE_RATE, self.voice, self.variant, self.speed, self.pitch,
                             text], ensure_ascii=False)
        self.id = hashlib.sha1(params.encode("utf-8")).hexdigest()[:16]
        self.rel = f"clips/{split}/{lang}/{self.id}.wav"


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def wav_seconds(path: str) -> float:
    with wave.open(path, "rb") as w:
        return w.getnframes() / float(w.getframerate())


def synthesise(clip: Clip, out_dir: str, tmp_dir: str) -> None:
    """espeak-ng -> raw.wav -> sox -> <id>.wav.part -> rename. Raises
    RuntimeError with the tool's message on failure."""
    final = os.path.join(out_dir, clip.rel)
    raw = os.path.join(tmp_dir, clip.id + ".raw.wav")
    part = final + ".part"
    assert not clip.text.startswith("-")  # would be read as an option
    cmds = [
        ["espeak-ng", "-b", "1", "-v", f"{clip.voice}+{clip.variant}", "-s", str(clip.speed), "-p", str(clip.pitch),
         "-w", raw, clip.text],
        ["sox", "-G", raw, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "wav", part],
    ]
    try:
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{cmd[0]} exited {r.returncode}: {r.stderr.strip()}")
        if wav_seconds(part) <= 0:
            raise RuntimeError("empty audio")
        os.replace(part, final)
    finally:
        for p in (raw, part):
            if os.path.exists(p):
                os.remove(p)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Thread-safe 'done / total, clips/s, ETA' lines on stderr, at most every
    `every` seconds (and at the end)."""

    def __init__(self, total: int, skipped: int, quiet: bool, every: float = 2.0):
        self.total, self.done, self.quiet, self.every = total, skipped, quiet, every
        self.skipped = skipped
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()

    def step(self, final: bool = False) -> None:
        with self.lock:
            if not final:
                self.done += 1
            now = time.monotonic()
            if self.quiet or self.skipped == self.total or (not final and now - self.last < self.every):
                return
            self.last = now
            made = self.done - self.skipped
            rate = made / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            print(f"[make_corpus] {self.done}/{self.total} clips ({100.0 * self.done / max(self.total, 1):.0f}%), "
                  f"{rate:.2f} clips/s, ETA {fmt_seconds(eta)}", file=sys.stderr, flush=True)


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--langs", default=",".join(sentences.DEFAULT_SPEECH_LANGS),
                    help="comma-separated ISO 639-1 codes (default: %(default)s)")
    ap.add_argument("--train", type=int, default=100, help="train clips per language (default 100)")
    ap.add_argument("--val", type=int, default=10, help="val clips per language (default 10)")
    ap.add_argument("--test", type=int, default=10, help="test clips per language (default 10)")
    ap.add_argument("--seed", type=int, default=1, help="sentence choice and voice parameters (default 1)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel syntheses (default: nproc)")
    ap.add_argument("--large", action="store_true", help="also draw sentences from datasets/text-large")
    ap.add_argument("--prune", action="store_true",
                    help="delete WAVs under DIR/clips that the manifests no longer list")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    a = ap.parse_args(argv)
    a.langs = [x for x in a.langs.split(",") if x]
    bad = [x for x in a.langs if x not in sentences.VOICES]
    if bad or not a.langs:
        ap.error(f"--langs: unsupported {bad}; supported: {','.join(sentences.SPEECH_LANGS)}")
    if min(a.train, a.val, a.test) < 0 or a.jobs < 1:
        ap.error("--train/--val/--test must be >= 0 and --jobs >= 1")
    return a


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: running clips finish, none is left half-written
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"make_corpus: {tool} not found (apt-get install -y espeak-ng sox)", file=sys.stderr)
            return 2
    out = a.out
    want = {"train": a.train, "val": a.val, "test": a.test}

    clips: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    pool_sizes = {}
    for lang in a.langs:
        pools = sentences.build_pools(DATASETS_DIR, lang, a.large)
        pool_sizes[lang] = {s: len(pools[s]) for s in SPLITS}
        for split in SPLITS:
            chosen = sentences.pick(pools[split], want[split], lang, a.seed)
            if len(chosen) < want[split]:
                print(f"make_corpus: warning: {lang} {split}: only {len(chosen)} sentences available "
                      f"(asked for {want[split]}){'' if a.large else '; --large has more'}", file=sys.stderr)
            clips[split].extend(Clip(split, lang, t, a.seed) for t in chosen)

    todo = []
    for split in SPLITS:
        for lang in a.langs:
            os.makedirs(os.path.join(out, "clips", split, lang), exist_ok=True)
        todo += [c for c in clips[split] if not os.path.exists(os.path.join(out, c.rel))]
    total = sum(len(v) for v in clips.values())
    if not a.quiet:
        print(f"[make_corpus] {total} clips ({', '.join(f'{s} {len(clips[s])}' for s in SPLITS)}) in "
              f"{len(a.langs)} languages; {total - len(todo)} already there; {a.jobs} jobs", file=sys.stderr,
              flush=True)

    progress = Progress(total, total - len(todo), a.quiet)
    failures = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="make_corpus_") as tmp_dir:
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            futures = {pool.submit(synthesise, c, out, tmp_dir): c for c in todo}
            try:
                for f in concurrent.futures.as_completed(futures):
                    exc = f.exception()
                    if exc is not None:
                        c = futures[f]
                        failures.append(f"{c.rel} ({c.voice}+{c.variant}, {c.text!r}): {exc}")
                    progress.step()
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                raise
    elapsed = time.monotonic() - t0
    progress.step(final=True)
    if failures:
        print(f"make_corpus: {len(failures)} clips failed:", file=sys.stderr)
        for msg in failures[:20]:
            print("  " + msg, file=sys.stderr)
        return 1

    summary = {}
    for split in SPLITS:
        lines = []
        per_lang = {lang: {"clips": 0, "seconds": 0.0} for lang in a.langs}
        for c in clips[split]:
            lines.append(f"{c.rel}\t{c.lang}\t{c.text}\n")
            per_lang[c.lang]["clips"] += 1
            per_lang[c.lang]["seconds"] += wav_seconds(os.path.join(out, c.rel))
        write_atomic(os.path.join(out, split + ".tsv"), "".join(lines))
        for v in per_lang.values():
            v["seconds"] = round(v["seconds"], 2)
        summary[split] = {"clips": len(clips[split]), "seconds": round(sum(v["seconds"] for v in per_lang.values()), 2),
                          "langs": per_lang}

    if a.prune:
        listed = {os.path.join(out, c.rel) for v in clips.values() for c in v}
        n_pruned = 0
        for split in SPLITS:
            root = os.path.join(out, "clips", split)
            for dirpath, _, files in os.walk(root):
                for name in files:
                    p = os.path.join(dirpath, name)
                    if (name.endswith(".wav") or name.endswith(".part")) and p not in listed:
                        os.remove(p)
                        n_pruned += 1
        if not a.quiet:
            print(f"[make_corpus] pruned {n_pruned} unlisted files", file=sys.stderr)

    corpus = {
        "generator": "datasets/speech/make_corpus.py",
        "generator_version": GENERATOR_VERSION,
        "split_version": sentences.SPLIT_VERSION,
        "espeak_ng": tool_version(["espeak-ng", "--version"]),
        "sox": tool_version(["sox", "--version"]),
        "langs": a.langs,
        "seed": a.seed,
        "large": a.large,
        "requested": want,
        "clips": total,
        "seconds": round(sum(s["seconds"] for s in summary.values()), 2),
        "splits": summary,
        "pool_sizes": pool_sizes,
        "parameters": {
            "sample_rate": SAMPLE_RATE, "channels": 1, "bits": 16,
            "voices": {lang: list(sentences.VOICES[lang]) for lang in a.langs},
            "variants": list(VARIANTS), "speed_wpm": list(SPEED_WPM), "pitch": list(PITCH),
            "test_fraction": sentences.TEST_FRACTION, "val_fraction": sentences.VAL_FRACTION,
            "test_fraction_by_lang": {lang: sentences.test_fraction(lang) for lang in a.langs},
            "words": [sentences.MIN_WORDS, sentences.MAX_WORDS], "hanzi": [sentences.MIN_HANZI, sentences.MAX_HANZI],
        },
    }
    write_atomic(os.path.join(out, "corpus.json"), json.dumps(corpus, indent=2, ensure_ascii=False) + "\n")
    if not a.quiet:
        made = len(todo)
        rate = f", {made / elapsed:.2f} clips/s" if made and elapsed > 0 else ""
        print(f"[make_corpus] done: {total} clips, {corpus['seconds'] / 3600:.2f} h of audio in {out} "
              f"({made} synthesised in {fmt_seconds(elapsed)}{rate})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\nmake_corpus: interrupted; rerun the same command to continue", file=sys.stderr)
        sys.exit(130)
