#!/usr/bin/env python3
"""Plot speech fine-tuning runs: validation attention loss, CTC loss and CER against steps.

  /usr/bin/python3 docs/plot_speech.py RUN_DIR[=label] ... --out docs/speech_curves.png
Each RUN_DIR is a finetune-speech run directory (its metrics.jsonl). Needs matplotlib
(Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories, optionally DIR=label")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="Chorus speech fine-tuning (validation)")
    a = ap.parse_args()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    keys = [("val_att_loss", "attention loss (nats/token)"), ("val_ctc_loss", "CTC loss (nats/byte)"),
            ("val_cer", "CER (greedy)")]
    for spec in a.runs:
        path, _, label = spec.partition("=")
        rows = [json.loads(line) for line in open(os.path.join(path, "metrics.jsonl")) if line.strip()]
        for ax, (k, _) in zip(axes, keys):
            pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label or path)
    for ax, (_, name) in zip(axes, keys):
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(a.title)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
