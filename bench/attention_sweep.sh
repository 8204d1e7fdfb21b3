#!/usr/bin/env bash
# Training tokens/s and memory against the sequence length T, for the two
# causal-attention kernels of the GPT (--attention full: keeps every layer's
# (B, NH, T, T) probabilities for backward; --attention flash: tiled, keeps
# only each row's log-sum-exp). gpt-mini's shape (L6 d384 h6, context 2048) on
# the quickstart's shards, B x T = 2,048 tokens per step at T = 256 ... 2048,
# STEPS steps each, THREADS threads; the median tokens/s of the run and its
# activation memory (metrics.jsonl) and peak resident memory.
#   bench/attention_sweep.sh            # STEPS=8 THREADS=2 TS="256 512 1024 2048"
# Writes $OUT/sweep.csv and docs/attention_sweep.png.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
steps=${STEPS:-8}; threads=${THREADS:-2}; ts=${TS:-"256 512 1024 2048"}
out=${OUT:-$root/bench/results/attention_sweep}
chorus="${CHORUS_BUILD_DIR:-$root/build}/bin/chorus"
[ -x "$chorus" ] || "$root/launch/setup" >/dev/null
tok=datasets/tokenizer.json; shards=datasets/shards
if [ ! -f "$tok" ] || [ ! -d "$shards" ]; then
  echo "no quickstart shards: run launch/quickstart (or its first stage) first" >&2; exit 2
fi
mkdir -p "$out"
echo "kernel,T,batch,tokens_per_s,activations_mib,peak_mib" > "$out/sweep.csv"
for t in $ts; do
  b=$((2048 / t))
  for k in full flash; do
    run="$out/${k}_$t"; rm -rf "$run"
    "$chorus" pretrain --quiet --config configs/gpt-mini.ini --context 2048 --seq-len "$t" --batch "$b" \
      --tokenizer "$tok" --data "$shards" --run-dir "$run" --steps "$steps" --warmup 2 --eval-every 0 \
      --save-every 0 --threads "$threads" --attention "$k" > "$run.log" 2>&1
    /usr/bin/python3 - "$run/metrics.jsonl" "$k" "$t" "$b" >> "$out/sweep.csv" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
tps = statistics.median(r["tokens_per_s"] for r in rows[1:])  # the first step warms up
print(f'{sys.argv[2]},{sys.argv[3]},{sys.argv[4]},{tps:.0f},{rows[-1]["mem_activations_mib"]:.1f},{max(r["peak_mem_mib"] for r in rows):.0f}')
PY
    tail -1 "$out/sweep.csv"
  done
done
/usr/bin/python3 - "$out/sweep.csv" "$root/docs/attention_sweep.png" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
for k, style in (("full", "o-"), ("flash", "s-")):
    r = [x for x in rows if x["kernel"] == k]
    T = [int(x["T"]) for x in r]
    a1.plot(T, [float(x["tokens_per_s"]) for x in r], style, label=k)
    a2.plot(T, [float(x["activations_mib"]) for x in r], style, label=k + " activations")
    a2.plot(T, [float(x["peak_mib"]) for x in r], style, alpha=0.4, label=k + " peak RSS")
for a in (a1, a2):
    a.set_xscale("log", base=2); a.set_xlabel("sequence length T (B x T = 2048 tokens)"); a.grid(alpha=0.3)
    a.legend(fontsize=8)
a1.set_ylabel("training tokens/s"); a2.set_ylabel("MiB")
a1.set_title("gpt-mini shape, 2 threads"); a2.set_title("memory")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=120)
PY
