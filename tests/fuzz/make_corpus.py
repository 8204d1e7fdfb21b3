#!/usr/bin/env python3
"""Writes the hand-made inputs of tests/fuzz/corpus/<target>/: seed-* (valid
inputs and malformed ones) and regress-* (inputs of bugs the fuzzing found;
others, saved from a fuzzer crash, are committed as they were found).
What the fuzzer finds goes to the build directory, not here.
Usage: tests/fuzz/make_corpus.py   (rewrites these files)"""
import hashlib, json, os, struct

here = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data, prefix="seed-"):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, prefix + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- wav -----------------------------------------------------------------------
def chunk(cid, body):
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def wav(fmt_body, data, extra=b""):
    body = b"WAVE" + chunk(b"fmt ", fmt_body) + extra + chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(tag, ch, rate, bits, align=None):
    align = ch * bits // 8 if align is None else align
    return struct.pack("<HHIIHH", tag, ch, rate, rate * align, align, bits)


guid_tail = bytes([0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71])
pcm16 = struct.pack("<8h", 0, 1000, -1000, 32767, -32768, 5, -5, 0)
put("wav", "pcm16-mono-16k.wav", wav(fmt(1, 1, 16000, 16), pcm16))
put("wav", "pcm8-stereo-44k.wav", wav(fmt(1, 2, 44100, 8), bytes([0, 255, 128, 128, 7, 9])))
put("wav", "pcm24-8k-list.wav", wav(fmt(1, 1, 8000, 24), b"\x00\x00\x80\xff\xff\x7f\x01\x02\x03",
                                    extra=chunk(b"LIST", b"INFOodd")))
put("wav", "pcm32-48k.wav", wav(fmt(1, 1, 48000, 32), struct.pack("<3i", 0, 2**31 - 1, -2**31)))
put("wav", "float32.wav", wav(fmt(3, 1, 22050, 32), struct.pack("<3f", 0.5, -0.25, 1.0)))
put("wav", "float64-stereo.wav", wav(fmt(3, 2, 16000, 64), struct.pack("<4d", 0.5, -0.5, 0.1, 0.2)))
ext = fmt(0xFFFE, 1, 16000, 24) + struct.pack("<HHI", 22, 20, 4) + struct.pack("<H", 1) + guid_tail
put("wav", "extensible-pcm20in24.wav", wav(ext, b"\x10\x00\x80\xf0\xff\x7f"))
put("wav", "float-nan.wav", wav(fmt(3, 1, 16000, 32), struct.pack("<2f", float("nan"), 0.0)))
put("wav", "bad-align.wav", wav(fmt(1, 2, 16000, 16, align=3), pcm16))
put("wav", "zero-channels.wav", wav(fmt(1, 0, 16000, 16), pcm16))
put("wav", "adpcm.wav", wav(fmt(2, 1, 16000, 4, align=1), b"\x01\x02"))
put("wav", "truncated-data.wav", wav(fmt(1, 1, 16000, 16), pcm16)[:-5])
put("wav", "no-data.wav", b"RIFF\0\0\0\0WAVE" + chunk(b"fmt ", fmt(1, 1, 16000, 16)))
put("wav", "not-riff.wav", b"RIFX\0\0\0\0WAVEfmt ")

# ---- tokenizer ---------------------------------------------------------------------
def tokenizer(merges, specials, languages, hash_ok=True, **override):
    h = hashlib.sha256()
    h.update(b"chorus-bpe 1\nmerges %d\n" % len(merges))
    for a, b in merges:
        h.update(b"%d %d\n" % (a, b))
    h.update(b"specials %d\n" % len(specials))
    for s in specials:
        h.update(s.encode() + b"\n")
    h.update(b"languages %d\n" % len(languages))
    for l in languages:
        h.update(l.encode() + b"\n")
    j = {"format": "chorus-bpe", "version": 1, "vocab_size": 256 + len(merges) + len(specials),
         "merges": merges, "specials": specials, "languages": languages,
         "hash": h.hexdigest() if hash_ok else "0" * 64}
    j.update(override)
    return json.dumps(j, indent=1)


langs = ["en", "de"]
specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|transcribe|>", "<|notimestamps|>"]
merges = [[116, 104], [256, 101], [32, 257], [97, 110], [259, 100]]  # th, the, " the", an, and
put("tokenizer", "valid.json", tokenizer(merges, specials, langs))
put("tokenizer", "valid-no-merges.json", tokenizer([], specials, langs))
put("tokenizer", "bad-hash.json", tokenizer(merges, specials, langs, hash_ok=False))
put("tokenizer", "future-merge.json", tokenizer([[116, 300]], specials, langs))
put("tokenizer", "repeated-merge.json", tokenizer([[116, 104], [116, 104]], specials, langs))
put("tokenizer", "wrong-version.json", tokenizer(merges, specials, langs, version=2))
put("tokenizer", "wrong-vocab.json", tokenizer(merges, specials, langs, vocab_size=9))
put("tokenizer", "duplicate-special.json", tokenizer(merges, ["<|endoftext|>"] * 2, langs))
put("tokenizer", "truncated.json", tokenizer(merges, specials, langs)[:40])
put("tokenizer", "deep-nesting.json", '{"format": "chorus-bpe", "version": 1, "merges": [' + "[" * 100 + "]" * 100 + "]}",
    prefix="regress-")
put("tokenizer", "text-utf8.txt", "the quick brown fox, and the dog ünïcödé 日本語 😀\r\n\tthe end")
put("tokenizer", "text-invalid-utf8.txt", b"the \xff\xfe and \xc3 \xe2\x82 the\x00x")

# ---- options ------------------------------------------------------------------------
put("options", "flags.txt", "--n-layer\n4\n--lr=0.001\n--force\n--inputs\na.txt\nb.txt\n")
put("options", "positional.txt", "x.txt\ny.txt\n--steps\n-5\n--seed\n18446744073709551615\n")
put("options", "ini.txt", "--n-embd\n64\n%%\n[model]\nn-layer = 2\n[train]\nlr = 3e-4\nforce = true\n"
                          "[data]\ninputs = a.txt\ninputs = b.txt\n")
put("options", "ini-bom.txt", "%%\n\xef\xbb\xbf[train]\nsteps = 10\n")
put("options", "ini-wrong-section.txt", "%%\n[model]\nlr = 1\n")
put("options", "ini-unknown-key.txt", "%%\n[train]\nwarmup = 1\n")
put("options", "ini-bad-value.txt", "%%\n[model]\nn-layer = six\n[train]\nforce = maybe\n")
put("options", "unknown-flag.txt", "--nope\n1\n")
put("options", "overflow.txt", "--n-layer\n99999999999\n--val-fraction\nnan\n")
put("options", "help.txt", "--help\n")

# ---- manifest -----------------------------------------------------------------------
def manifest(**override):
    j = {"format": "chorus-checkpoint", "format_version": 1, "created": "2026-01-01T00:00:00Z",
         "model_type": "gpt",
         "model": {"n_layer": 1, "n_embd": 8, "n_head": 2, "vocab_size": 60, "padded_vocab": 64, "context": 16},
         "tokenizer": {"hash": "ab" * 32, "eot_token": 256}, "step": 3, "tokens_seen": 96,
         "sampler": {"consumed": 6, "seed": 1, "seq_len": 16, "samples_per_step": 2},
         "schedule": {"position": 3, "max_lr": 0.5, "min_lr": 0.25, "warmup": 1, "total_steps": 10},
         "optimizer": {"type": "adamw", "t": 3, "beta1": 0.5, "beta2": 0.75, "eps": 0.125,
                       "weight_decay": 0.0, "grad_clip": 1.0, "masters": "model"},
         "loss_scaler": {"enabled": False, "scale": 1.0, "good_steps": 0, "skipped_steps": 0},
         "precision": "fp32", "layout": {"tp": 1, "dp": 2, "zero": 1, "world": 2},
         "rng": [{"world_rank": r, "dp_rank": r, "tp_rank": 0, "state": ["%016x" % (r + k) for k in range(4)]}
                 for r in range(2)],
         "tensors": [{"name": "wte.weight", "shape": [64, 8], "tp_axis": 0, "tp_parts": 1},
                     {"name": "ln_f.bias", "shape": [8], "tp_axis": -1, "tp_parts": 1}],
         "files": [{"path": "model-tp00.h5", "kind": "model", "tp_rank": 0, "bytes": 100, "sha256": "cd" * 32},
                   {"path": "optim-tp00-dp00.h5", "kind": "optimizer", "tp_rank": 0, "bytes": 50,
                    "sha256": "ef" * 32, "dp_rank": 0, "flat_begin": 0, "flat_end": 260, "flat_numel": 520},
                   {"path": "optim-tp00-dp01.h5", "kind": "optimizer", "tp_rank": 0, "bytes": 50,
                    "sha256": "01" * 32, "dp_rank": 1, "flat_begin": 260, "flat_end": 520, "flat_numel": 520}],
         "run": {"batch": 2}}
    for k, v in override.items():
        j[k] = v
    j.pop("manifest_sha256", None)
    j["manifest_sha256"] = hashlib.sha256(
        json.dumps(j, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    return json.dumps(j, indent=1)


put("manifest", "valid.json", manifest())
put("manifest", "tp2.json", manifest(layout={"tp": 2, "dp": 1, "zero": 0, "world": 2}))
put("manifest", "bad-version.json", manifest(format_version=2))
put("manifest", "bad-world.json", manifest(layout={"tp": 1, "dp": 2, "zero": 1, "world": 3}))
put("manifest", "missing-files.json", manifest(files=[]))
put("manifest", "path-escape.json", manifest(files=[{"path": "../x", "kind": "model", "tp_rank": 0, "bytes": 1,
                                                     "sha256": "cd" * 32}]))
put("manifest", "speech.json", manifest(model_type="speech", model_extra={"n_mels": 80}))
put("manifest", "edited.json", manifest().replace('"step": 3', '"step": 4'))
put("manifest", "truncated.json", manifest()[:100])
# regressions for bugs the fuzz harness found (docs/RELIABILITY.md)
put("manifest", "layout-overflow.json", manifest(layout={"tp": 65536, "dp": 65536, "zero": 0, "world": 1}),
    prefix="regress-")
put("manifest", "float-range.json", manifest(schedule={"position": 3, "max_lr": 1e300, "min_lr": 0.25,
                                                               "warmup": 1, "total_steps": 10}), prefix="regress-")

put("manifest", "deep-nesting.json", manifest()[:-2] + ',\n "deep": ' + "[" * 100 + "]" * 100 + "\n}",
    prefix="regress-")

# ---- shard: FuzzedDataProvider bytes (the last byte picks text / speech) -----------
put("shard", "text-valid.bin", b"")
put("shard", "speech-valid.bin", b"\x01")
put("shard", "text-mutated.bin", bytes(range(0, 64, 3)) + b"\x00")
put("shard", "speech-mutated.bin", bytes(range(7, 200, 5)) + b"\x01")
put("shard", "speech-offsets.bin", b"\x03\x04\x05\x06" * 6 + b"\x01")
