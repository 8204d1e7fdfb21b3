#!/usr/bin/env python3
"""CER against training time of the two-stage speech recipe (launch/experiments/speech-base).

  /usr/bin/python3 docs/plot_speech_runs.py OUT_DIR [--out docs/speech_base_cer.png] [--x minutes|steps]
      [--title TEXT]

OUT_DIR holds ctc/ (stage 1: the encoder on CTC alone), pretrained/ and random/ (stage 2,
joint training from stage 1's encoder with the pretrained or a random decoder), each a
finetune-speech run directory. Plotted against wall-clock minutes (stage 2 after stage 1's),
on the val split: the CTC head's greedy CER (both stages), the attention decoder's greedy CER
(metrics.jsonl, val_cer) and joint CTC/attention beam-4 CER of the checkpoints
(NAME/val-joint-STEP.json written by the recipe's last stage). Needs matplotlib
(Debian: apt-get install python3-matplotlib).
"""
import argparse
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


X = "minutes"  # or "steps" (--x)


def xval(r):
    return r["step"] if X == "steps" else r["elapsed_s"] / 60.0


def evals(run):
    """(x, row) of every validation row of a run's metrics.jsonl."""
    rows = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl")) if x.strip()]
    return [(xval(r), r) for r in rows if "val_loss" in r]


def last_elapsed(run):
    rows = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl")) if x.strip()]
    return xval(rows[-1])


def joint_points(run, offset):
    """(x, pooled CER) of the checkpoints' joint decoding on the val split."""
    rows = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl")) if x.strip()]
    at = {r["step"]: xval(r) for r in rows}
    pts = []
    for f in sorted(glob.glob(os.path.join(run, "val-joint-*.json"))):
        step = int(os.path.basename(f)[len("val-joint-"):-len(".json")])
        cer = json.load(open(f))["overall"]["cer"]
        if step in at:
            pts.append((offset + at[step], 100.0 * cer))
    return sorted(pts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--out", default="docs/speech_base_cer.png")
    ap.add_argument("--x", choices=("minutes", "steps"), default="minutes",
                    help="x axis: wall-clock minutes or optimizer steps")
    ap.add_argument("--title", default="speech-base recipe: pooled val CER (8 languages) against training time")
    a = ap.parse_args()
    global X
    X = a.x
    fig, ax = plt.subplots(figsize=(9, 5))
    ctc = os.path.join(a.out_dir, "ctc")
    pts = [(m, 100 * r["val_ctc_cer"]) for m, r in evals(ctc) if "val_ctc_cer" in r]
    ax.plot(*zip(*pts), "k-", label="stage 1: CTC head, greedy")
    offset = last_elapsed(ctc)
    ax.axvline(offset, color="grey", lw=0.5)
    for name, color in (("pretrained", "tab:blue"), ("random", "tab:red")):
        run = os.path.join(a.out_dir, name)
        if not os.path.isdir(run):
            continue
        ev = evals(run)
        att = [(offset + m, 100 * r["val_cer"]) for m, r in ev if "val_cer" in r]
        ctcp = [(offset + m, 100 * r["val_ctc_cer"]) for m, r in ev if "val_ctc_cer" in r]
        if att:
            ax.plot(*zip(*att), ":", color=color, label=f"{name} decoder: attention alone, greedy")
        if ctcp:
            ax.plot(*zip(*ctcp), "--", color=color, alpha=0.5, label=f"{name}: CTC head, greedy")
        jp = joint_points(run, offset)
        if jp:
            ax.plot(*zip(*jp), "o-", color=color, label=f"{name} decoder: joint CTC/attention, beam 4")
    ax.set_xlabel("training time (wall-clock minutes)" if X == "minutes" else "optimizer steps (stage 2 after stage 1)")
    ax.set_ylabel("val CER (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(a.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
