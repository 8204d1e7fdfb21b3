#!/usr/bin/env bash
# The cluster path on a real Slurm (ctest label `slurm`): a one-node cluster of
# this machine (tests/slurm/slurm_cluster.sh: Debian's slurm-wlm and munge,
# installed if missing, daemons started here and stopped by their pids) runs
# the project's own launch/slurm/*.sbatch on gpt-tiny with 2 CPU ranks:
#   1. a short pretrain job completes: exit 0, a final checkpoint that verifies,
#      the user's flag taken instead of the script's own (no flag given twice);
#   2. a job pre-empted mid-run (SIGUSR1 to the batch script, as Slurm's
#      --signal=B:USR1@120 sends it) checkpoints, requeues itself, resumes and
#      ends with the same `checkpoint hash` and losses as job 1;
#   3. the same with CHORUS_LAUNCHER=mpirun and SIGTERM to every process of the
#      job (what pre-emption and time limits send): mpirun exits 1, the script
#      still requeues and the run ends identical to job 1;
#   4. the same when a job of a higher-priority partition pre-empts it
#      (PreemptMode=REQUEUE: Slurm sends SIGTERM and requeues it itself);
#   5. a user's plain scancel is final: the job checkpoints and is not requeued;
#   6. finetune-speech.sbatch starts `chorus finetune-speech` under srun.
# Usage: run_slurm_tests.sh CHORUS_BINARY. Exit 0: passed; 77: skipped (no
# root, no packages, daemons cannot run here: the reason is printed); else failed.
set -uo pipefail
chorus=$(realpath "${1:?usage: run_slurm_tests.sh CHORUS_BINARY}")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/tests/slurm/slurm_cluster.sh"
# The jobs stopped mid-run sleep DELAY_MS per step (CHORUS_STEP_DELAY_MS, numerics
# unchanged), so that a fast machine does not finish before the stop arrives:
# Slurm takes seconds to pre-empt.
readonly SKIP=77 STEPS=200 DELAY_MS=40 deadline=$(( $(date +%s) + 240 ))

skip() { echo "SKIPPED: $*"; exit $SKIP; }
failures=0
check() {  # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "[  OK  ] $1"; else echo "[ FAIL ] $1"; failures=$((failures + 1)); fi
}

[ "$(id -u)" -eq 0 ] || skip "not root: the test cluster runs its daemons as root"
slurm_install || skip "slurm-wlm / munge could not be installed"
tmp=$(mktemp -d /tmp/chorus-slurm.XXXXXX)

cleanup() {
  if [ -n "${SLURM_CONF:-}" ] && [ ${#slurm_pids[@]} -gt 0 ]; then
    scancel --full $(squeue -h -o %i 2>/dev/null) 2>/dev/null
    slurm_wait_for 20 sh -c '[ -z "$(squeue -h -o %i)" ]'
    slurm_stop
    # Whatever a job left behind (its processes carry our SLURM_CONF), by pid.
    local p
    for p in $(grep -l -s -a "SLURM_CONF=$SLURM_CONF" /proc/[0-9]*/environ | cut -d/ -f3); do
      [ "$p" != $$ ] && kill -KILL "$p" 2>/dev/null
    done
  fi
  [ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT

slurm_start "$tmp/cluster" || skip "the Slurm daemons cannot run here (logs above)"

# Tiny data, as tests/e2e make it.
mkdir -p "$tmp/text" && cp "$root/datasets/text/en.txt" "$tmp/text/"
"$chorus" train-tokenizer --quiet --input "$tmp/text" --vocab 512 --out "$tmp/tok.json" &&
  "$chorus" prepare-text --quiet --tokenizer "$tmp/tok.json" --input "$tmp/text" --out "$tmp/shards" ||
  { echo "making tiny data failed"; exit 1; }

export CHORUS=$chorus OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 CHORUS_MPIRUN_GRACE=2
quiet() { "$@" >/dev/null 2>&1; }
left() { echo $(( deadline - $(date +%s) )); }

# submit NAME SCRIPT [sbatch flags] -- [chorus flags]: prints the job id.
submit() {
  local name=$1 script=$2; shift 2
  local -a sb=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do sb+=("$1"); shift; done
  shift
  sbatch --parsable --ntasks-per-node=2 --cpus-per-task=1 -o "$tmp/$name.out" "${sb[@]}" \
    "$root/launch/slurm/$script" "$@"
}
pretrain_flags() {
  echo "$root/configs/gpt-tiny.ini --tokenizer $tmp/tok.json --data $tmp/shards --run-dir $tmp/$1 --steps $STEPS" \
       "--warmup 2 --eval-every 0 --peak-gflops 100 --log-every 50"
}
# Job exit code as Slurm recorded it ("0:0" = exit 0).
exit_code() { scontrol show job "$1" -o | tr ' ' '\n' | sed -n 's/^ExitCode=//p'; }
restarts() { scontrol show job "$1" -o | tr ' ' '\n' | sed -n 's/^Restarts=//p'; }
rows() { [ -f "$1/metrics.jsonl" ] && wc -l <"$1/metrics.jsonl" || echo 0; }
losses() { grep -o '"loss":[^,}]*' "$1/metrics.jsonl"; }
hash() { "$chorus" checkpoint hash "$@" | cut -c1-64; }
wait_rows() {  # wait_rows RUN_DIR N SECONDS: until N steps are logged
  slurm_wait_for "$3" sh -c "[ -f '$1/metrics.jsonl' ] && [ \$(wc -l <'$1/metrics.jsonl') -ge $2 ]"
}
job_line() { scontrol show job "$1" -o | grep -o -E '(JobState|Reason|Restarts|StartTime)=[^ ]*' | tr '\n' ' '; }
# A requeued job waits for its BeginTime (now + 2 min); once the node has finished
# with the stopped instance (a new one too early loses its spool files to that
# instance's cleanup), start it at once instead.
wait_requeued_then_done() {  # JOB SECONDS
  local job=$1 secs=$2
  slurm_wait_state "$job" PENDING COMPLETED FAILED "$secs" || return 1
  echo "job $job: $(job_line "$job")"
  if [ "$(slurm_job_state "$job")" = PENDING ]; then
    slurm_wait_for "$secs" sh -c "sinfo -h -N -o %t | grep -qx idle" || return 1
    sleep 1
    scontrol update JobId="$job" StartTime=now
  fi
  slurm_wait_state "$job" COMPLETED FAILED CANCELLED "$secs"
  echo "job $job: $(job_line "$job")"
}
show_log() {
  echo "--- $1.out (non-step lines)"; grep -v '^step ' "$tmp/$1.out" | cut -c1-240
  echo "--- slurmctld.log, slurmd.log (last lines)"; tail -n 15 "$tmp/cluster/log/slurmctld.log" "$tmp/cluster/log/slurmd.log"
}

# 1. A short job completes.
# --thread (an abbreviation chorus takes) set by the user: the script must not add its own.
full=$(submit full pretrain.sbatch -- $(pretrain_flags full) --thread 1)
echo "job $full: uninterrupted $STEPS steps (srun), the user's --thread 1"
slurm_wait_state "$full" COMPLETED FAILED "$(left)"
check "job $full completes with exit code 0" test "$(exit_code "$full")" = 0:0
check "job $full passed the user's --thread and no --threads of its own" \
  test "$(grep -m1 '^\[chorus-slurm\] srun' "$tmp/full.out" | grep -o -- '--thread[s]* ' | tr '\n' ' ')" = "--thread  "
check "job $full wrote final weights and a last checkpoint" \
  test -f "$tmp/full/model.h5" -a "$(readlink "$tmp/full/latest")" = step-00000200
check "the final checkpoint verifies" quiet "$chorus" checkpoint verify "$tmp/full"
[ $failures -eq 0 ] || show_log full
h_full=$(hash "$tmp/full/step-00000200")
h_full_opt=$(hash "$tmp/full/step-00000200" --with-optimizer)

# 2. to 4. Pre-empted mid-run, requeued, resumed: the same result.
roundtrip() {  # NAME LAUNCHER STOP_COMMAND ($job is the job's id in it)
  local name=$1 launcher=$2 stop=$3 job h
  job=$(CHORUS_LAUNCHER=$launcher CHORUS_STEP_DELAY_MS=$DELAY_MS submit "$name" pretrain.sbatch -- $(pretrain_flags "$name"))
  local sc=${stop//\$job/$job}
  echo "job $job: $STEPS steps ($launcher), '$sc' once 40 steps are logged"
  wait_rows "$tmp/$name" 40 "$(left)" && eval "$stop"
  wait_requeued_then_done "$job" "$(left)"
  check "job $job ($launcher, $sc) was requeued once and completed with exit code 0" \
    test "$(restarts "$job")/$(exit_code "$job")" = 1/0:0
  check "job $job stopped after a checkpoint and resumed from it" \
    grep -q "resumed from $tmp/$name/step-" "$tmp/$name.out"
  check "job $job logged each of the $STEPS steps once, with the losses of job $full" \
    cmp -s <(losses "$tmp/full") <(losses "$tmp/$name")
  h=$(hash "$tmp/$name/step-00000200")
  check "job $job ends with the checkpoint hash of job $full ($h_full)" test "$h" = "$h_full"
  check "job $job ends with the same Adam moments too" \
    test "$(hash "$tmp/$name/step-00000200" --with-optimizer)" = "$h_full_opt"
  echo "evidence: job $job ($launcher, $sc): checkpoint hash $h; uninterrupted job $full: $h_full"
  grep -E '^\[chorus-slurm\] (job|stopped)|stopped by|resumed from' "$tmp/$name.out" | sed 's/^/    /'
  [ $failures -eq 0 ] || show_log "$name"
}
roundtrip usr1 srun 'scancel --batch --signal=USR1 $job'
roundtrip term mpirun 'scancel --full --signal=TERM $job'
roundtrip preempt srun 'sbatch --parsable -p urgent -n 2 -o /dev/null --wrap "sleep 1"' 

# 5. A user's scancel: the ranks checkpoint, the job is not requeued.
job=$(CHORUS_STEP_DELAY_MS=$DELAY_MS submit cancel pretrain.sbatch -- $(pretrain_flags cancel) --save-every 1000)
wait_rows "$tmp/cancel" 40 "$(left)" && scancel "$job"
slurm_wait_state "$job" CANCELLED COMPLETED FAILED PENDING "$(left)"
sleep 1
check "job $job cancelled by scancel stays cancelled (state $(slurm_job_state "$job"), restarts $(restarts "$job"))" \
  test "$(slurm_job_state "$job")/$(restarts "$job")" = CANCELLED/0
check "job $job checkpointed on the way out" test -L "$tmp/cancel/latest"
[ $failures -eq 0 ] || show_log cancel

# 6. The speech script starts its subcommand (its own data is not made here).
job=$(submit speech finetune-speech.sbatch -- --help)
slurm_wait_state "$job" COMPLETED FAILED "$(left)"
check "finetune-speech.sbatch ran chorus finetune-speech under srun (job $job)" \
  grep -q "usage: chorus finetune-speech" "$tmp/speech.out"

echo "slurm tests: $failures failed, $(( 240 - $(left) )) s"
[ $failures -eq 0 ]
