#!/usr/bin/env bash
# Sanitizer builds of the tests, every report fatal (docs/RELIABILITY.md,
# "Sanitizers"). .ci/run runs both after tests/run.
#   tests/sanitize/run.sh asan [ctest args]  AddressSanitizer + UndefinedBehaviorSanitizer:
#       every unit test (label unit: all but tests/dist, e2e, gpu, slurm), build dir build-asan
#   tests/sanitize/run.sh tsan               ThreadSanitizer on the code that runs threads of
#       its own: the collective watchdog (tests/dist/watchdog_test under mpirun -np 2 and 4)
#       and the tests that call the library from several std::threads (tokenizer encode,
#       speech dataset and sampler, mel); plus the data loader. Build dir build-tsan
# Environment: CHORUS_JOBS (compile jobs, default nproc), CHORUS_SANITIZE_BUILD_DIR,
# CHORUS_CMAKE_ARGS (e.g. a compiler launcher). Uses gcc and the packages of launch/setup.
# OpenMP loops run on one thread here (OMP_NUM_THREADS=1): Debian's libgomp is not
# built with TSan, whose reports on its barriers would all be false.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$root/tests/sanitize
mode=${1:?usage: tests/sanitize/run.sh asan|tsan [ctest args]}
shift
case $mode in
  asan)
    flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
    # the unit-test executables: tests/<folder>/*_test.cpp outside dist, e2e, gpu
    targets=$(cd "$root/tests" && find . -name '*_test.cpp' -not -path './dist/*' -not -path './e2e/*' \
              -not -path './gpu/*' -printf '%f\n' | sed 's/\.cpp$//' | sort)
    # Leak checking stays on; lsan.supp lists the one-time allocations of
    # OpenMPI / HDF5 / OpenBLAS start-up that are never freed.
    export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
    export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    ;;
  tsan)
    flags="-fsanitize=thread"
    targets="watchdog_test tokenizer_test speech_shard_test speech_sampler_test mel_test loader_test"
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$here/tsan.supp"
    export OMP_NUM_THREADS=1
    ;;
  *) echo "usage: tests/sanitize/run.sh asan|tsan [ctest args]" >&2; exit 2 ;;
esac
build=${CHORUS_SANITIZE_BUILD_DIR:-$root/build-$mode}
start=$(date +%s)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHORUS_CUDA=OFF \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="$flags -fno-omit-frame-pointer" -DCMAKE_C_FLAGS="$flags -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" ${CHORUS_CMAKE_ARGS:-} >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" -j "${CHORUS_JOBS:-$(nproc)}" --target $targets
built=$(date +%s)
echo "[$mode] built $(echo $targets | wc -w) test executables in $(( built - start )) s"
cd "$build"
if [ "$mode" = asan ]; then
  ctest -L unit --output-on-failure --timeout 900 -j "${CHORUS_TEST_JOBS:-2}" "$@"
else
  ctest -R '^(watchdog_test\.np[24]|Tokenizer\.EncodeIsThreadSafe|SpeechShard|SpeechSampler|LogMel|DataLoader|TokenStream)' \
    --output-on-failure --timeout 900 -j 1 "$@"
fi
echo "[$mode] build $(( built - start )) s, tests $(( $(date +%s) - built )) s"
