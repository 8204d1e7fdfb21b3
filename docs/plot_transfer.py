#!/usr/bin/env python3
"""Test CER of a new language against the number of adaptation clips (launch/experiments/transfer).

  /usr/bin/python3 docs/plot_transfer.py OUT_DIR [--out docs/transfer_cer.png]

Reads OUT_DIR/results.json: the multilingual model adapted on N clips per language (lines, one per
language), the same model zero-shot with the closest seen language's token (dashed), and the
pretrained GPT with a new encoder / a random-init model trained on the largest N alone (markers).
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--out", default="docs/transfer_cer.png")
    a = ap.parse_args()
    r = json.load(open(os.path.join(a.out_dir, "results.json")))
    clips, cer = r["clips"], r["cer"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for lang, color in zip(r["langs"] + ["pooled"], colors):
        ys = [100 * cer[f"adapted-{n}"][lang] for n in clips if cer.get(f"adapted-{n}", {}).get(lang) is not None]
        ax.plot(clips[: len(ys)], ys, "o-", color=color, label=f"adapted: {lang}")
        zs = cer.get("zeroshot", {}).get(lang)
        if zs is not None:
            ax.axhline(100 * zs, color=color, ls="--", lw=0.8, alpha=0.7)
    n = max(clips)
    for key, marker in (("gptnew", "s"), ("random", "x")):
        v = cer.get(f"{key}-{n}", {}).get("pooled")
        if v is not None:
            label = "pretrained GPT + new encoder" if key == "gptnew" else "random init"
            ax.plot([n], [100 * v], marker, color="black", ms=9, label=f"{label} ({n} clips, pooled)")
    ax.set_xscale("log")
    ax.set_xticks(clips)
    ax.set_xticklabels([str(c) for c in clips])
    ax.set_xlabel("adaptation clips per language")
    ax.set_ylabel("test CER (%)")
    ax.set_ylim(0, 110)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("a new language: CER against clips (dashed: zero-shot with the closest seen language's token)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
