#!/usr/bin/env bash
# Training throughput of Chorus vs the PyTorch peer on the same machine, same
# shapes (gpt-mini: L6 d384 h6 vocab 8192, batch 8 x 256 tokens), same threads,
# alternating the two sides ROUNDS times and reporting medians.
#   bench/gpt_train_bench.sh                  # ROUNDS=3 STEPS=12 THREADS=2
# Chorus trains on the quickstart shards (made if missing); the peer on random
# tokens (throughput does not depend on the data). The peer runs at its best
# CPU setting, OMP_WAIT_POLICY=passive (see bench/peers/README.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${ROUNDS:-3}; steps=${STEPS:-12}; threads=${THREADS:-2}; preset=${PRESET:-gpt-mini}
"$root/launch/setup" >/dev/null
chorus="${CHORUS_BUILD_DIR:-$root/build}/bin/chorus"
tok=datasets/tokenizer.json; shards=datasets/shards
if [ ! -f "$tok" ] || [ ! -d "$shards" ]; then
  "$chorus" train-tokenizer --quiet --input datasets/text --vocab 8192 --out "$tok"
  "$chorus" prepare-text --quiet --tokenizer "$tok" --input datasets/text --out "$shards"
fi
out=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  OMP_NUM_THREADS=$threads "$chorus" pretrain --config "configs/$preset.ini" --tokenizer "$tok" --data "$shards" \
    --run-dir "$out/chorus$r" --steps "$steps" --warmup 1 --eval-every 0 --eval-batches 1 --threads "$threads" \
    --quiet | tail -1 | tee -a "$out/chorus.txt"
  OMP_WAIT_POLICY=passive /usr/bin/python3 bench/peers/torch_gpt_bench.py --preset "$preset" --threads "$threads" \
    --steps "$steps" --json 2>/dev/null | grep "^JSON " | tee -a "$out/peer.txt"
done
/usr/bin/python3 - "$out" <<'PY'
import json, re, statistics, sys, os
out = sys.argv[1]
ch = [float(re.search(r"median ([0-9.]+) tok/s", l).group(1)) for l in open(os.path.join(out, "chorus.txt"))]
pe = []
for l in open(os.path.join(out, "peer.txt")):
    try:
        pe.append(float(json.loads(l.split("JSON ", 1)[1])["tokens_per_s"]))
    except Exception:
        pass
print(f"chorus  median {statistics.median(ch):8.0f} tok/s  runs {['%.0f' % x for x in ch]}")
if pe:
    print(f"pytorch median {statistics.median(pe):8.0f} tok/s  runs {['%.0f' % x for x in pe]}")
    print(f"ratio chorus/pytorch: {statistics.median(ch) / statistics.median(pe):.2f}")
PY
