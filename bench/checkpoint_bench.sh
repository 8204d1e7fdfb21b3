#!/usr/bin/env bash
# Checkpoint write / read throughput (MB/s) for gpt2-124M: L12 d768 h12, vocab 50257 (padded
# 50304), context 1024 = 124.4M parameters, a 1.49 GB checkpoint (fp32 weights + two Adam
# moments). It runs `chorus checkpoint bench`, which builds the model with random weights (no
# tokenizer or data needed) and saves / loads the full training state through the same
# collective save_checkpoint / load_checkpoint as `chorus pretrain` (write: HDF5 shards, fsync,
# SHA-256, manifest, rename, `latest`; read: SHA-256 verification and HDF5 parse), checking the
# loaded state bit for bit. Reads are cold (files dropped from the page cache) unless WARM=1.
#   bench/checkpoint_bench.sh                 # one rank, ROUNDS=3
#   NP=2 TP=2 bench/checkpoint_bench.sh       # two ranks, each writing its TP shard
#   NP=2 ZERO=1 bench/checkpoint_bench.sh     # two ranks, ZeRO-1 optimizer slices
# Environment: ROUNDS, NP, TP, ZERO, WARM, THREADS (OpenMP threads per rank), DIR (scratch
# directory on the file system to measure; default a new directory under $TMPDIR or /tmp).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${ROUNDS:-3}; np=${NP:-1}; tp=${TP:-1}; zero=${ZERO:-0}
"$root/launch/setup" >/dev/null
chorus="${CHORUS_BUILD_DIR:-$root/build}/bin/chorus"
scratch=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/chorus-checkpoint-bench.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
dir=$scratch/ckpt
args=(checkpoint bench --dir "$dir" --rounds "$rounds" --tp "$tp" --zero "$zero"
      --n-layer 12 --n-embd 768 --n-head 12 --vocab-size 50257 --context 1024)
[ "${WARM:-0}" = 1 ] && args+=(--warm)
[ -n "${THREADS:-}" ] && args+=(--threads "$THREADS")
echo "[bench] $(nproc) cores, $(df -h "$(dirname "$dir")" | awk 'NR==2 {print $1 " (" $2 ")"}') at $(dirname "$dir")"
if [ "$np" -gt 1 ]; then
  mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$chorus" "${args[@]}"
else
  "$chorus" "${args[@]}"
fi
