#!/usr/bin/env bash
# Transcription speed: Chorus `transcribe` against the PyTorch peer
# (../shared/bench/peers/torch_whisper_bench.py, or PEER=path) at the same
# shapes, threads and decoding (batch 1, greedy, a fixed number of tokens),
# on one 10 s clip, random weights. Prints both real-time factors (compute
# seconds / audio seconds; lower is faster) and their ratio, and ours again with
# the decoder on int8 weights (--int8: per-output-channel weight-only int8).
#   THREADS (2), TOKENS (64), ROUNDS (3), D (384), HEADS (6), ENC_LAYERS (4),
#   DEC_LAYERS (4), VOCAB (51865: Whisper's, so both LM heads are the same size; the
#   tokenizer is then trained on datasets/text-large), PEER_VOCAB (51865: the peer's
#   prompt uses Whisper's token ids, so it cannot run a smaller vocabulary)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
launch/setup >/dev/null
chorus=${CHORUS_BUILD_DIR:-$root/build}/bin/chorus
threads=${THREADS:-2}; tokens=${TOKENS:-64}; rounds=${ROUNDS:-3}
d=${D:-384}; heads=${HEADS:-6}; enc=${ENC_LAYERS:-4}; dec=${DEC_LAYERS:-4}; vocab=${VOCAB:-51865}
peer_vocab=${PEER_VOCAB:-51865}
peer=${PEER:-$root/../shared/bench/peers/torch_whisper_bench.py}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-torch >/dev/null
fi
text=datasets/text
if [ "$vocab" -gt 16384 ]; then  # datasets/text is too small for that many merges
  mkdir -p "$work/text"
  for f in datasets/text-large/*.txt.xz; do xz -dc "$f" > "$work/text/$(basename "$f" .xz)"; done
  text=$work/text
fi
"$chorus" train-tokenizer --input "$text" --vocab "$vocab" --out "$work/tok.json" >/dev/null 2>&1
[ "$(grep -m1 -o '"vocab_size": *[0-9]*' "$work/tok.json" | grep -o '[0-9]*$' || echo "$vocab")" = "$vocab" ] ||
  echo "warning: the tokenizer has fewer than $vocab tokens" >&2
sox -n -r 16000 -c 1 -b 16 "$work/clip.wav" synth 10 pinknoise vol 0.3
printf 'clip.wav\ten\tsome text for the shard\n' > "$work/m.tsv"
for s in train val; do
  "$chorus" prepare-speech --manifest "$work/m.tsv" --tokenizer "$work/tok.json" --out "$work/sp" --split "$s" --quiet
done
"$chorus" finetune-speech --init-decoder none --tokenizer "$work/tok.json" --data "$work/sp" --run-dir "$work/run" \
  --n-layer "$enc" --n-embd "$d" --n-head "$heads" --max-frames 1000 --dec-n-layer "$dec" --dec-n-embd "$d" \
  --dec-n-head "$heads" --dec-context 448 --batch 1 --steps 1 --eval-clips 0 --quiet --threads "$threads" >/dev/null
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o -w -E 'amx_bf16|avx512_bf16|avx512_vnni' /proc/cpuinfo | sort -u | xargs)"
echo "== shapes: d $d, $heads heads, encoder $enc x, decoder $dec x, vocab $vocab (peer $peer_vocab); 10 s clip; greedy, $tokens tokens; $threads threads"
ours=(); ours8=(); theirs=()
rtf() {  # rtf [extra transcribe flags]: our real-time factor on the clip
  # attention alone (--ctc-weight 0): the peer has no CTC head
  "$chorus" transcribe --checkpoint "$work/run" --threads "$threads" --batch 1 --lang en --ctc-weight 0 \
    --min-new-tokens "$tokens" --max-new-tokens "$tokens" "$@" "$work/clip.wav" 2>&1 |
    sed -n 's/.*real-time factor \([0-9.]*\).*/\1/p'
}
for r in $(seq "$rounds"); do
  o=$(rtf); ours+=("$o")
  o8=$(rtf --int8); ours8+=("$o8")
  t=$(OMP_WAIT_POLICY=passive /usr/bin/python3 "$peer" --what infer --seconds 10 --gen_tokens "$tokens" \
        --threads "$threads" --d "$d" --heads "$heads" --enc_layers "$enc" --dec_layers "$dec" --vocab "$peer_vocab" --json \
        2>/dev/null | sed -n 's/^JSON //p' | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["rtf"])')
  theirs+=("$t")
  echo "round $r: chorus RTF $o   chorus int8 RTF $o8   pytorch RTF $t"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${ours[@]}"); m8=$(median "${ours8[@]}"); mt=$(median "${theirs[@]}")
echo "median: chorus RTF $mo, pytorch RTF $mt: chorus is $(awk -v a="$mo" -v b="$mt" 'BEGIN {printf "%.2f", b / a}')x faster"
echo "median: chorus int8 RTF $m8: $(awk -v a="$m8" -v b="$mo" 'BEGIN {printf "%.2f", b / a}')x chorus fp32," \
  "$(awk -v a="$m8" -v b="$mt" 'BEGIN {printf "%.2f", b / a}')x pytorch"
