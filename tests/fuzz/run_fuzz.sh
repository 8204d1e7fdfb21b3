#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*_fuzz.cpp, clang with ASan + UBSan)
# and runs each for SECONDS (default 8), starting from its committed corpus
# tests/fuzz/corpus/<target>/ (every committed input is replayed first, so
# fixed bugs stay fixed). tests/run runs it as the ctest test fuzz.regression;
# for a long search:  tests/fuzz/run_fuzz.sh 3600
# Inputs the fuzzer finds go to $build/corpus/<target> (kept between runs,
# never into the repository); a crash leaves its input in $build/crashes/
# and makes the script fail. Prints the executions of each target and in all.
#   CHORUS_FUZZ_BUILD_DIR   build directory (default build-fuzz)
#   CHORUS_FUZZ_TARGETS     targets to run (default: all), e.g. "wav manifest"
#   CHORUS_JOBS             compile jobs (default: number of cores)
#   CHORUS_FUZZ_CMAKE_ARGS  extra cmake arguments (e.g. a compiler launcher)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-8}
build=${CHORUS_FUZZ_BUILD_DIR:-$root/build-fuzz}
here=$root/tests/fuzz

# clang 14 with libFuzzer and the sanitizer runtimes (Debian 12), its OpenMP,
# and the libraries the parsers use; only what is missing is installed.
packages=(clang libclang-rt-14-dev libomp-14-dev cmake libhdf5-dev libboost-program-options-dev
          nlohmann-json3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[fuzz] installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

start=$(date +%s)
CC=clang CXX=clang++ cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=None ${CHORUS_FUZZ_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "${CHORUS_JOBS:-$(nproc)}"
built=$(date +%s)
echo "[fuzz] built in $(( built - start )) s"

targets=${CHORUS_FUZZ_TARGETS:-$(cd "$here" && ls ./*_fuzz.cpp | sed 's|^\./||; s|_fuzz\.cpp$||')}
mkdir -p "$build/crashes"
total=0
failed=()
for t in $targets; do
  work=$build/corpus/$t
  mkdir -p "$work"
  log=$build/$t.log
  # New inputs go to the first directory ($work); the committed corpus is read only.
  # -close_fd_mask=1: the targets' stdout (--help text) is not of interest.
  if "$build/${t}_fuzz" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=8192 \
       -close_fd_mask=1 -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
       "$work" "$here/corpus/$t" >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  runs=${runs:-0}
  total=$(( total + runs ))
  echo "[fuzz] $t: $status, $runs executions in ${seconds} s, corpus $(ls "$work" | wc -l) + $(ls "$here/corpus/$t" | wc -l) committed"
  if [ "$status" != ok ]; then
    grep -E 'ERROR|SUMMARY|FUZZ_ASSERT|terminate|what\(\)|Test unit written' "$log" | head -20 || true
    echo "[fuzz] full log: $log"
  fi
done
echo "[fuzz] $total executions in all; build $(( built - start )) s, runs $(( $(date +%s) - built )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "[fuzz] crashes in: ${failed[*]} (inputs in $build/crashes/; replay one with $build/<target>_fuzz <file>)"
  exit 1
fi
