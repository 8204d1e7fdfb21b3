#!/usr/bin/env python3
"""Plot training / validation loss and throughput from one or more metrics.jsonl files.

  /usr/bin/python3 docs/plot_metrics.py checkpoints/quickstart/metrics.jsonl --out docs/quickstart_loss.png
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", nargs="+", help="metrics.jsonl files (one curve each)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="Chorus pretraining")
    a = ap.parse_args()
    fig, (ax_loss, ax_tok) = plt.subplots(1, 2, figsize=(11, 4))
    for path in a.metrics:
        rows = load(path)
        label = os.path.basename(os.path.dirname(os.path.abspath(path)))
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], lw=1, label=f"{label} train")
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if val:
            ax_loss.plot(*zip(*val), "o-", ms=4, label=f"{label} val")
        ax_tok.plot(steps, [r["tokens_per_s"] for r in rows], lw=1, label=label)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("cross-entropy (nats/token)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    ax_tok.set_xlabel("optimizer step")
    ax_tok.set_ylabel("tokens/s")
    ax_tok.grid(alpha=0.3)
    fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
