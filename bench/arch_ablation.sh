#!/usr/bin/env bash
# What each GPT architecture option (docs/ARCHITECTURE.md) buys alone, in
# optimizer steps (= tokens: 2,048 per step) to a validation target: gpt-mini
# with Muon (configs/gpt-mini-fast.ini) as the base, then the base plus one
# option at a time, then every option (configs/gpt-mini-modern.ini), each for
# STEPS steps of the same cosine schedule on the quickstart's shards, the same
# seed and data order. The target is the base's validation bits per byte at its
# last step. Steps, not seconds: the runs may share the machine (time per step
# is measured by bench/time_to_quality.sh).
#   bench/arch_ablation.sh                          # STEPS=100 EVAL_EVERY=20 THREADS=1
#   VARIANTS="base rotary all" bench/arch_ablation.sh
# Writes $OUT (default bench/results/arch_ablation) /<variant>/metrics.jsonl and table.md.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
steps=${STEPS:-100}; every=${EVAL_EVERY:-20}; threads=${THREADS:-1}
out=${OUT:-$root/bench/results/arch_ablation}
variants=${VARIANTS:-"base rotary rmsnorm qknorm relu2 swiglu untied softcap all"}
chorus="${CHORUS_BUILD_DIR:-$root/build}/bin/chorus"
[ -x "$chorus" ] || "$root/launch/setup" >/dev/null
tok=datasets/tokenizer.json; shards=datasets/shards
if [ ! -f "$tok" ] || [ ! -d "$shards" ]; then
  echo "no quickstart shards: run launch/quickstart (or its first stage) first" >&2; exit 2
fi
flags_of() {
  case "$1" in
    base) echo "" ;;
    rotary) echo "--pos rotary" ;;
    rmsnorm) echo "--norm rmsnorm" ;;
    qknorm) echo "--qk-norm" ;;
    relu2) echo "--mlp relu2" ;;
    swiglu) echo "--mlp swiglu" ;;
    untied) echo "--untied-head" ;;
    softcap) echo "--logit-softcap 30" ;;
    all) echo "--pos rotary --norm rmsnorm --qk-norm --mlp relu2 --untied-head --logit-softcap 30" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}
mkdir -p "$out"
for v in $variants; do
  if [ -f "$out/$v/metrics.jsonl" ] && grep -q "\"step\":$steps,.*val_bpb" "$out/$v/metrics.jsonl"; then
    echo "$v: done"; continue
  fi
  rm -rf "$out/$v"
  echo "$v: $(flags_of "$v")"
  "$chorus" pretrain --quiet --config configs/gpt-mini-fast.ini --tokenizer "$tok" --data "$shards" \
    --run-dir "$out/$v" --steps "$steps" --warmup 10 --eval-every "$every" --threads "$threads" \
    --save-every 0 $(flags_of "$v") > "$out/$v.log" 2>&1 || { echo "$v failed: $out/$v.log" >&2; exit 1; }
done
/usr/bin/python3 - "$out" $variants <<'PY'
import json, sys, os
out, variants = sys.argv[1], sys.argv[2:]
def curve(v):
    rows = [json.loads(l) for l in open(os.path.join(out, v, "metrics.jsonl"))]
    return [(r["step"], r["val_bpb"]) for r in rows if "val_bpb" in r]
curves = {v: curve(v) for v in variants}
target = curves["base"][-1][1] if "base" in curves else None
def first_at(c, t):
    prev = None
    for s, b in c:
        if b <= t:
            if prev is None: return float(s)
            (s0, b0) = prev  # linear interpolation between evaluations
            return s0 + (s - s0) * (b0 - t) / (b0 - b)
        prev = (s, b)
    return None
steps = [s for s, _ in curves[variants[0]]]
lines = ["| variant | " + " | ".join(f"val bpb @{s}" for s in steps) + " | steps to base's final bpb |",
         "|---|" + "---:|" * (len(steps) + 1)]
for v in variants:
    c = dict(curves[v])
    reach = first_at(curves[v], target) if target else None
    lines.append(f"| {v} | " + " | ".join(f"{c.get(s, float('nan')):.3f}" for s in steps) +
                 f" | {'%.0f' % reach if reach else 'not reached'} |")
table = "\n".join(lines)
print(f"target: {target:.4f} bpb (base at its last step)" if target else "")
print(table)
open(os.path.join(out, "table.md"), "w").write(table + "\n")
PY
