#!/usr/bin/env bash
# Time to quality: Chorus's pretraining recipes against the PyTorch peer
# (../shared/bench/peers/torch_gpt_train.py, copied under bench/peers: plain
# GPT-2 + AdamW, nanoGPT-style) on the same shards (the quickstart's), the same
# machine, the same threads, one after the other in one sitting. Reports the
# training seconds (evaluations left out, on both sides) each needs to reach
# validation bits-per-byte targets, and the curves (docs/time_to_quality.png).
#   bench/time_to_quality.sh          # THREADS=2, peer 400 steps, Chorus recipes 200 steps
# The target: the peer's validation bpb at step PEER_STEPS (400) in fp32. The
# peer in bf16 autocast learns the same per step; where the CPU has bf16 units
# (avx512_bf16 / amx_bf16) it is the peer's best setting and runs in full
# (PEER_BF16_STEPS=PEER_STEPS); elsewhere its fallback kernels are ~20x slower
# than fp32, so only PEER_BF16_STEPS (default 4) steps are timed.
# Env: RECIPES ("gpt-mini-fast gpt-mini-modern"; add gpt-mini for Chorus+AdamW),
#      CHORUS_STEPS (200), PEER_STEPS (400), EVAL_EVERY (25), THREADS (2),
#      OUT (bench/results/time_to_quality).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${THREADS:-2}; every=${EVAL_EVERY:-25}
peer_steps=${PEER_STEPS:-400}; chorus_steps=${CHORUS_STEPS:-200}
recipes=${RECIPES:-"gpt-mini-fast gpt-mini-modern"}
out=${OUT:-$root/bench/results/time_to_quality}
if grep -q -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo; then bf16_steps=${PEER_BF16_STEPS:-$peer_steps}
else bf16_steps=${PEER_BF16_STEPS:-4}; fi
chorus="${CHORUS_BUILD_DIR:-$root/build}/bin/chorus"
[ -x "$chorus" ] || "$root/launch/setup" >/dev/null
if ! /usr/bin/python3 -c 'import torch, h5py' 2>/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends python3-torch python3-h5py >/dev/null
fi
tok=datasets/tokenizer.json; shards=datasets/shards
if [ ! -f "$tok" ] || [ ! -d "$shards" ]; then
  echo "no quickstart shards: run launch/quickstart (or its first stage) first" >&2; exit 2
fi
mkdir -p "$out"
{
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); features:" \
       "$(grep -o -w -E 'avx2|avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "threads: $threads; peer: torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), OMP_WAIT_POLICY=passive"
} | tee "$out/machine.txt"
peer=(env OMP_WAIT_POLICY=passive /usr/bin/python3 "$root/bench/peers/torch_gpt_train.py" --shards "$shards"
      --threads "$threads" --eval_every "$every")
echo "peer fp32: $peer_steps steps"
"${peer[@]}" --steps "$peer_steps" --out "$out/peer_fp32.jsonl" > "$out/peer_fp32.log" 2>&1
echo "peer bf16: $bf16_steps steps"
# (its speed only, where it is not run in full: one validation batch at the end)
bf16_eval=(); [ "$bf16_steps" -lt "$peer_steps" ] && bf16_eval=(--eval_batches 1)
"${peer[@]}" --steps "$bf16_steps" --dtype bf16 --eval_every "$bf16_steps" "${bf16_eval[@]}" --out "$out/peer_bf16.jsonl" \
  > "$out/peer_bf16.log" 2>&1
for r in $recipes; do
  steps=$chorus_steps; [ "$r" = gpt-mini ] && steps=$peer_steps
  echo "chorus $r: $steps steps"
  rm -rf "$out/$r"
  "$chorus" pretrain --quiet --config "configs/$r.ini" --tokenizer "$tok" --data "$shards" --run-dir "$out/$r" \
    --steps "$steps" --eval-every "$every" --threads "$threads" > "$out/$r.log" 2>&1
done
/usr/bin/python3 "$root/docs/plot_time_to_quality.py" "$out" --png "$root/docs/time_to_quality.png" \
  --peer-steps "$peer_steps" $recipes | tee "$out/table.md"
