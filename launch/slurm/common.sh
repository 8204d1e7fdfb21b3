# What launch/slurm/*.sbatch share (sourced; README.md beside it explains each step):
#   chorus_slurm_job SUBCOMMAND [CONFIG.ini] [chorus flags...]
# starts the job's ranks (srun --mpi=pmix, or mpirun inside the allocation),
# passes a stop signal on to them, and requeues the job when it stopped for a
# pre-emption, deciding from what happened rather than from the exit code alone.
#
# Environment (all optional):
#   CHORUS               the executable (default: build/bin/chorus of this checkout)
#   CHORUS_LAUNCHER      srun (default) | mpirun
#   CHORUS_SRUN_MPI      srun's --mpi plugin (default pmix; pmi2 where the site's OpenMPI uses it)
#   CHORUS_SRUN_ARGS     extra srun flags (word-split), e.g. "--cpu-bind=cores"
#   CHORUS_MPIRUN_ARGS   extra mpirun flags (word-split), e.g. "--bind-to none"
#   CHORUS_MPIRUN_GRACE  seconds OpenMPI waits between SIGCONT, SIGTERM and SIGKILL of the ranks
#                        when mpirun itself is terminated (odls_base_sigkill_timeout; default 15)
#   CHORUS_MAX_REQUEUES  requeue at most this many times (default 50)
#   TP                   tensor-parallel degree (passed as --tp; DP = tasks / TP)

readonly CHORUS_EXIT_PREEMPTED=75  # train::kExitPreempted (src/train/loop.h)

chorus_slurm_log() { echo "[chorus-slurm] $*"; }

# True when `--name` (or --name=VALUE, or an abbreviation of 3+ letters, which the
# option parser also takes) is among the arguments after the first.
chorus_has_flag() {
  local name=$1 a f; shift
  for a in "$@"; do
    case "$a" in --*) f=${a#--}; f=${f%%=*} ;; *) continue ;; esac
    [ "$f" = "$name" ] && return 0
    [ ${#f} -ge 3 ] && [ "${name#"$f"}" != "$name" ] && return 0
  done
  return 1
}

# True when the .ini file sets `name = ...` in any section.
chorus_config_sets() { [ -n "$2" ] && grep -Eq "^[[:space:]]*$1[[:space:]]*=" "$2"; }

# The arguments without `--name VALUE` / `--name=VALUE` (the result is in chorus_args).
chorus_drop_flag() {
  local name=$1 skip="" a; shift
  chorus_args=()
  for a in "$@"; do
    if [ -n "$skip" ]; then skip=""; continue; fi
    if chorus_has_flag "$name" "$a"; then
      case "$a" in *=*) ;; *) skip=1 ;; esac
    else
      chorus_args+=("$a")
    fi
  done
}

chorus_slurm_job() {
  local sub=$1; shift
  : "${SLURM_JOB_ID:?chorus_slurm_job: not inside a Slurm job (submit the script with sbatch)}"
  local root chorus config="" launcher=${CHORUS_LAUNCHER:-srun}
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  chorus=${CHORUS:-$root/build/bin/chorus}
  [ -x "$chorus" ] || { chorus_slurm_log "error: '$chorus' is not an executable (set CHORUS)"; return 2; }

  # An optional first positional argument is the config file (--config also works).
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then config=$1; shift; set -- --config "$config" "$@"; fi
  local a prev=""
  for a in "$@"; do
    [ "$prev" = "--config" ] && config=$a
    case "$a" in --config=*) config=${a#--config=} ;; esac
    prev=$a
  done
  [ -z "$config" ] || [ -r "$config" ] || { chorus_slurm_log "error: config '$config' is not readable"; return 2; }

  # The script's own flags, each only when neither a flag nor the config file gives
  # it: chorus refuses a flag given twice, and a flag would override the file.
  local restarts=${SLURM_RESTART_COUNT:-0}
  local -a extra=()
  if chorus_has_flag resume "$@" && [ "$restarts" -gt 0 ]; then
    # --resume PATH starts the first run from PATH; a requeued run continues from its own checkpoints.
    chorus_drop_flag resume "$@"; set -- "${chorus_args[@]}"
    chorus_slurm_log "restart $restarts: replacing the given --resume with --resume auto"
  fi
  if ! chorus_has_flag resume "$@" && { [ "$restarts" -gt 0 ] || ! chorus_config_sets resume "$config"; }; then
    extra+=(--resume auto)
  fi
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ] && ! chorus_has_flag threads "$@" && ! chorus_config_sets threads "$config"; then
    extra+=(--threads "$SLURM_CPUS_PER_TASK")
  fi
  if [ -n "${TP:-}" ]; then
    if chorus_has_flag tp "$@"; then chorus_slurm_log "error: give the TP degree once (TP=$TP and a --tp flag)"; return 2; fi
    extra+=(--tp "$TP")
  fi

  local -a launch
  case "$launcher" in
    srun) launch=(srun --mpi="${CHORUS_SRUN_MPI:-pmix}" ${CHORUS_SRUN_ARGS:-}) ;;
    mpirun)
      # mpirun terminated by a signal kills the ranks after 2 x this many seconds (1 by default:
      # too short for a checkpoint); the ranks get the signal from Slurm as well.
      export OMPI_MCA_odls_base_sigkill_timeout=${OMPI_MCA_odls_base_sigkill_timeout:-${CHORUS_MPIRUN_GRACE:-15}}
      launch=(mpirun -np "${SLURM_NTASKS:?}" ${CHORUS_MPIRUN_ARGS:-}) ;;
    *) chorus_slurm_log "error: CHORUS_LAUNCHER must be srun or mpirun, got '$launcher'"; return 2 ;;
  esac

  chorus_slurm_log "job $SLURM_JOB_ID (restart $restarts): ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NUM_NODES:-?} nodes," \
                   "launcher $launcher, $(date -u +%FT%TZ)"
  chorus_slurm_log "${launch[*]} $chorus $sub $* ${extra[*]}"
  # The launcher runs in the background so that this shell can take a stop signal
  # (time limit with --signal=B:..., pre-emption, scancel): it is passed on as SIGUSR1,
  # which srun and mpirun both forward to every rank (mpirun would abort on SIGTERM).
  chorus_stop_signal="" chorus_launcher_pid=""
  trap 'chorus_stop_signal=USR1; [ -n "$chorus_launcher_pid" ] && kill -USR1 "$chorus_launcher_pid" 2>/dev/null' USR1
  trap 'chorus_stop_signal=TERM; [ -n "$chorus_launcher_pid" ] && kill -USR1 "$chorus_launcher_pid" 2>/dev/null' TERM
  trap 'chorus_stop_signal=INT; [ -n "$chorus_launcher_pid" ] && kill -USR1 "$chorus_launcher_pid" 2>/dev/null' INT
  "${launch[@]}" "$chorus" "$sub" "$@" "${extra[@]}" &
  chorus_launcher_pid=$!
  # A stop signal that came before the launcher had started is passed on now.
  [ -n "$chorus_stop_signal" ] && kill -USR1 "$chorus_launcher_pid"
  while kill -0 "$chorus_launcher_pid" 2>/dev/null; do wait "$chorus_launcher_pid"; done
  wait "$chorus_launcher_pid"
  local rc=$?
  trap - USR1 TERM INT

  # Stopped = chorus exited 75, or this shell got a stop signal whatever the launcher
  # returned (mpirun that got SIGTERM itself returns 1 although the ranks checkpointed
  # and exited 75: launch/slurm/README.md).
  local why=""
  if [ "$rc" -eq "$CHORUS_EXIT_PREEMPTED" ]; then why="exit code $rc"
  elif [ -n "$chorus_stop_signal" ]; then why="SIG$chorus_stop_signal reached the batch script (launcher exit $rc)"
  fi
  if [ -z "$why" ]; then
    chorus_slurm_log "chorus $sub exited with $rc"
    return "$rc"
  fi
  # Requeue a stop while the job is still running (Slurm's USR1 warning, a signal sent
  # with scancel --signal) or ending at its time limit. Slurm requeues a job that
  # PreemptMode=REQUEUE pre-empts itself. A user's scancel (or PreemptMode=CANCEL)
  # signals the job after marking it completing with no reason: that stop is final.
  local job state reason now_restarts
  job=$(scontrol show job "$SLURM_JOB_ID" -o 2>/dev/null | tr ' ' '\n')
  state=$(sed -n 's/^JobState=//p' <<<"$job")
  reason=$(sed -n 's/^Reason=//p' <<<"$job")
  now_restarts=$(sed -n 's/^Restarts=//p' <<<"$job")
  if [ "${now_restarts:-0}" -gt "$restarts" ]; then
    chorus_slurm_log "stopped ($why); Slurm has requeued job $SLURM_JOB_ID itself (pre-emption)"
    return 0
  fi
  case "$state/$reason" in
    RUNNING/* | */TimeLimit) ;;
    *) chorus_slurm_log "stopped ($why); the job is $state (reason $reason): cancelled, not requeueing" \
                        "(resubmit to continue from the checkpoint)"
       return "$CHORUS_EXIT_PREEMPTED" ;;
  esac
  if [ "$restarts" -ge "${CHORUS_MAX_REQUEUES:-50}" ]; then
    chorus_slurm_log "stopped ($why) after $restarts requeues: not requeueing again (CHORUS_MAX_REQUEUES)"
    return "$CHORUS_EXIT_PREEMPTED"
  fi
  chorus_slurm_log "stopped ($why): requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID" || chorus_slurm_log "scontrol requeue failed (Slurm may requeue the job itself)"
  return 0
}
