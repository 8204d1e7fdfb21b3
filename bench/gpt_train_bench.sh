#!/usr/bin/env bash
# Training throughput of Chorus vs the PyTorch peer on the same machine, same
# shapes, same threads, in both precisions on both sides: Chorus --precision
# fp32 / bf16 against the peer in fp32 and in bf16 autocast
# (bench/peers/torch_gpt_bench.py --dtype bf16), alternating all four ROUNDS
# times and reporting medians. Prints the CPU, its bf16/int8 features and the
# GEMM path Chorus picked.
#   bench/gpt_train_bench.sh                       # both presets, ROUNDS=3 STEPS=12 THREADS=2
#   PRESETS=gpt-mini PRECISIONS=bf16 bench/gpt_train_bench.sh
#   PEER_BF16_STEPS=1 PEER_BF16_ROUNDS=1 ...    # where the peer's bf16 autocast is very slow
# Presets (the shapes of the issue tracker's comparisons):
#   gpt-mini    L6 d384 h6, vocab 8192, batch 8 x 256 tokens (configs/gpt-mini.ini)
#   gpt2-124M   L12 d768 h12, vocab 8192, batch 4 x 256 tokens, 1024 positions
# Chorus trains on the quickstart shards (made if missing); the peer on random
# tokens (throughput does not depend on the data). The peer runs at its best
# CPU setting, OMP_WAIT_POLICY=passive (see bench/peers/README.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
rounds=${ROUNDS:-3}; steps=${STEPS:-12}; threads=${THREADS:-2}
# PyTorch's bf16 autocast on a CPU without bf16 units (no AVX512-BF16 / AMX)
# falls back to slow reference kernels (~60 tok/s on gpt-mini here, 20x its
# fp32): time it with fewer steps there. PEER_BF16_STEPS overrides.
if grep -q -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo; then peer_bf16_steps=${PEER_BF16_STEPS:-$steps}
else peer_bf16_steps=${PEER_BF16_STEPS:-2}; fi
peer_bf16_rounds=${PEER_BF16_ROUNDS:-$rounds}  # rounds that run the peer in bf16 (the first ones)
presets=${PRESETS:-"gpt-mini gpt2-124M"}; precisions=${PRECISIONS:-"fp32 bf16"}
"$root/launch/setup" >/dev/null
# The peer needs Debian's PyTorch (a benchmark-only dependency, not installed by launch/setup).
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends python3-torch >/dev/null
fi
chorus="${CHORUS_BUILD_DIR:-$root/build}/bin/chorus"
tok=datasets/tokenizer.json; shards=datasets/shards
if [ ! -f "$tok" ] || [ ! -d "$shards" ]; then
  "$chorus" train-tokenizer --quiet --input datasets/text --vocab 8192 --out "$tok" --force
  "$chorus" prepare-text --quiet --tokenizer "$tok" --input datasets/text --out "$shards" --force
fi
out=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$out"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); features:" \
     "$(grep -o -w -E 'avx2|avx512f|avx512_bf16|avx512_vnni|avx512_fp16|amx_bf16|amx_int8|amx_fp16|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')" \
  | tee "$out/machine.txt"
/usr/bin/python3 -c 'import torch; print("peer: torch", torch.__version__, "oneDNN", torch.backends.mkldnn.is_available())' \
  2>/dev/null | tee -a "$out/machine.txt" || echo "peer: no torch in /usr/bin/python3" | tee -a "$out/machine.txt"

chorus_args() {  # preset -> chorus flags
  case "$1" in
    gpt-mini) echo "--config configs/gpt-mini.ini" ;;
    gpt2-124M) echo "--config configs/gpt2-124M.ini --vocab-size 0 --batch 4 --seq-len 256 --grad-accum 1" ;;
    *) echo "unknown preset $1" >&2; exit 2 ;;
  esac
}
peer_args() {
  case "$1" in
    gpt-mini) echo "--preset gpt-mini" ;;
    gpt2-124M) echo "--preset gpt2-124M --vocab 8192" ;;
  esac
}

for preset in $presets; do
  for r in $(seq 1 "$rounds"); do
    for prec in $precisions; do
      log="$out/chorus-$preset-$prec-$r.log"
      # shellcheck disable=SC2046
      OMP_NUM_THREADS=$threads "$chorus" pretrain $(chorus_args "$preset") --tokenizer "$tok" --data "$shards" \
        --run-dir "$out/run-$preset-$prec-$r" --steps "$steps" --warmup 1 --eval-every 0 --eval-batches 1 \
        --threads "$threads" --precision "$prec" --quiet >"$log" 2>&1
      grep -m1 "compute:" "$log" >"$out/compute-$preset-$prec.txt" || true
      echo "chorus $preset $prec $(grep -o 'median [0-9.]* tok/s' "$log" | tail -1)" | tee -a "$out/chorus.txt"
      # shellcheck disable=SC2046
      peer_steps=$steps; peer_warmup=2
      if [ "$prec" = bf16 ]; then
        [ "$r" -gt "$peer_bf16_rounds" ] && continue
        peer_steps=$peer_bf16_steps; [ "$peer_steps" -lt "$steps" ] && peer_warmup=1
      fi
      OMP_WAIT_POLICY=passive /usr/bin/python3 bench/peers/torch_gpt_bench.py $(peer_args "$preset") \
        --threads "$threads" --steps "$peer_steps" --warmup "$peer_warmup" --dtype "$prec" --json 2>/dev/null \
        | grep "^JSON " \
        | sed "s/^JSON /peer $preset $prec /" | tee -a "$out/peer.txt" || true
    done
  done
done

/usr/bin/python3 - "$out" "$presets" "$precisions" <<'PY'
import json, os, re, statistics, sys
out, presets, precisions = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
runs = {}
for line in open(os.path.join(out, "chorus.txt")):
    m = re.match(r"chorus (\S+) (\S+) median ([0-9.]+) tok/s", line)
    if m:
        runs.setdefault(("chorus", m[1], m[2]), []).append(float(m[3]))
if os.path.exists(os.path.join(out, "peer.txt")):
    for line in open(os.path.join(out, "peer.txt")):
        p = line.split(" ", 3)
        try:
            runs.setdefault(("peer", p[1], p[2]), []).append(float(json.loads(p[3])["tokens_per_s"]))
        except Exception:
            pass
med = {k: statistics.median(v) for k, v in runs.items()}
print(open(os.path.join(out, "machine.txt")).read().strip())
for preset in presets:
    for prec in precisions:
        f = os.path.join(out, f"compute-{preset}-{prec}.txt")
        if os.path.exists(f):
            print(f"{preset} {prec}: " + open(f).read().strip().split("] ", 1)[-1])
print()
print(f"| model | side | {' | '.join(precisions)} |")
print("|---|---|" + "---|" * len(precisions))
for preset in presets:
    for side in ("chorus", "peer"):
        cells = []
        for prec in precisions:
            k = (side, preset, prec)
            cells.append(f"{med[k]:,.0f} ({', '.join('%.0f' % x for x in runs[k])})" if k in med else "-")
        print(f"| {preset} | {'Chorus' if side == 'chorus' else 'PyTorch' + (' (autocast for bf16)')} | {' | '.join(cells)} |")
print()
for preset in presets:
    c32, c16 = med.get(("chorus", preset, "fp32")), med.get(("chorus", preset, "bf16"))
    p32, p16 = med.get(("peer", preset, "fp32")), med.get(("peer", preset, "bf16"))
    parts = []
    if c16 and p16: parts.append(f"Chorus bf16 / PyTorch bf16 autocast = {c16 / p16:.2f}x")
    if c16 and c32: parts.append(f"Chorus bf16 / Chorus fp32 = {c16 / c32:.2f}x")
    if c32 and p32: parts.append(f"Chorus fp32 / PyTorch fp32 = {c32 / p32:.2f}x")
    best_peer = max([x for x in (p32, p16) if x] or [0])
    best_chorus = max([x for x in (c32, c16) if x] or [0])
    if best_peer and best_chorus: parts.append(f"best Chorus / best PyTorch = {best_chorus / best_peer:.2f}x")
    print(f"{preset}: " + "; ".join(parts))
PY
echo "logs: $out"
