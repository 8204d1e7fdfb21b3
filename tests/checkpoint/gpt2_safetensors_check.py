#!/usr/bin/env python3
"""Loads a `chorus checkpoint export --format safetensors` directory the way a
PyTorch user would and prints the logits it gives for some tokens, for
tests/checkpoint/export_test.cpp to compare with Chorus's own forward pass.

    python3 gpt2_safetensors_check.py DIR 1,2,3,...

Tensors come from the `safetensors` package when installed, else from a plain
parse of the file (8-byte little-endian header length, JSON header, raw data).
The model is Hugging Face's GPT2LMHeadModel when `transformers` is installed,
else a direct GPT-2 forward in torch with the same conventions (Conv1D weights
stored (in, out), GELU tanh, LayerNorm eps from config.json, tied LM head).
Prints one JSON line: {"loader": ..., "shapes": {name: shape}, "logits": [[...]]}.
"""
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F


def load_tensors(path):
    try:
        from safetensors.torch import load_file  # noqa: PLC0415
        return load_file(path), "safetensors"
    except ImportError:
        pass
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[base + b:base + e]), dtype=torch.float32).reshape(info["shape"])
    return out, "manual"


def gpt2_forward(sd, cfg, toks):
    L, C, H = cfg["n_layer"], cfg["n_embd"], cfg["n_head"]
    T, hs = len(toks), C // H
    eps = cfg["layer_norm_epsilon"]

    def ln(x, p):
        return F.layer_norm(x, (C,), sd[p + ".weight"], sd[p + ".bias"], eps)

    def conv1d(x, p):  # GPT-2 Conv1D: y = x @ W + b with W (in, out)
        return x @ sd[p + ".weight"] + sd[p + ".bias"]

    x = sd["wte.weight"][toks] + sd["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = f"h.{l}."
        q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(T, H, hs).transpose(0, 1) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + conv1d(y, h + "attn.c_proj")
        x = x + conv1d(F.gelu(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh"), h + "mlp.c_proj")
    return ln(x, "ln_f") @ sd["wte.weight"].T


def main():
    d, toks = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    sd, loader = load_tensors(d + "/model.safetensors")
    with open(d + "/config.json") as f:
        cfg = json.load(f)
    with torch.no_grad():
        try:
            from transformers import GPT2LMHeadModel  # noqa: PLC0415
            model = GPT2LMHeadModel.from_pretrained(d).eval()
            logits = model(torch.tensor([toks])).logits[0]
            loader += "+transformers"
        except ImportError:
            logits = gpt2_forward(sd, cfg, toks)
            loader += "+own-forward"
    print(json.dumps({"loader": loader, "shapes": {k: list(v.shape) for k, v in sd.items()},
                      "logits": logits.tolist()}))


if __name__ == "__main__":
    main()
