#!/usr/bin/env python3
"""Time to quality from bench/time_to_quality.sh's output directory: validation bits per byte against
training seconds (evaluations left out) for the PyTorch peer and each Chorus recipe, a PNG, and a
Markdown table of the seconds each needs to reach the peer's bpb at steps PEER_STEPS/2, 3/4 and all.

  docs/plot_time_to_quality.py OUT_DIR --png docs/time_to_quality.png --peer-steps 400 gpt-mini-fast gpt-mini-modern
"""
import argparse, json, os

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("recipes", nargs="*")
ap.add_argument("--png", default=None)
ap.add_argument("--peer-steps", type=int, default=400)
a = ap.parse_intermixed_args()


def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]


peer = [(r["step"], r["train_s"], r["val_bpb"]) for r in rows(os.path.join(a.out, "peer_fp32.jsonl"))]
curves = {"PyTorch fp32 (AdamW, GPT-2)": peer}
for r in a.recipes:
    m = [x for x in rows(os.path.join(a.out, r, "metrics.jsonl")) if "val_bpb" in x]
    curves["Chorus " + r] = [(x["step"], x["train_s"], x["val_bpb"]) for x in m]
bf16 = rows(os.path.join(a.out, "peer_bf16.jsonl")) if os.path.exists(os.path.join(a.out, "peer_bf16.jsonl")) else []
bf16_s_per_step = bf16[-1]["train_s"] / bf16[-1]["step"] if bf16 else None

by_step = {s: b for s, _, b in peer}
marks = [a.peer_steps // 2, 3 * a.peer_steps // 4, a.peer_steps]
targets = [(s, by_step[s]) for s in marks if s in by_step]


def time_to(curve, t):
    prev = None
    for s, sec, b in curve:
        if b <= t:
            if prev is None:
                return sec, s
            s0, sec0, b0 = prev  # linear between evaluations
            f = (b0 - t) / (b0 - b)
            return sec0 + f * (sec - sec0), s0 + f * (s - s0)
        prev = (s, sec, b)
    return None, None


head = "| run | " + " | ".join(f"to {b:.3f} bpb (peer step {s})" for s, b in targets) + " |"
lines = [head, "|---|" + "---:|" * len(targets)]
peer_sec = {}
for name, c in curves.items():
    cells = []
    for s, b in targets:
        sec, st = time_to(c, b)
        if name.startswith("PyTorch"):
            peer_sec[s] = sec
        if sec is None:
            cells.append(f"not reached (best {min(x[2] for x in c):.3f})")
        else:
            ratio = f", {sec / peer_sec[s]:.2f}x the peer's time" if not name.startswith("PyTorch") else ""
            cells.append(f"{sec:.0f} s at step {st:.0f}{ratio}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
if bf16_s_per_step:
    lines.append(f"| PyTorch bf16 autocast (timed {bf16[-1]['step']} steps: {bf16_s_per_step:.2f} s/step) | " +
                 " | ".join(f"~{bf16_s_per_step * s:.0f} s at step {s} (steps x its s/step)" for s, _ in targets) + " |")
print("\n".join(lines))

if a.png:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, c in curves.items():
        ax.plot([x[1] for x in c], [x[2] for x in c], marker="o", ms=3, label=name)
    for s, b in targets:
        ax.axhline(b, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("training seconds (evaluations excluded)")
    ax.set_ylabel("validation bits per byte")
    ax.set_title("gpt-mini on the quickstart corpus: time to quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)
