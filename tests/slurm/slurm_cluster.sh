# A throw-away one-node Slurm cluster for tests, sourced by run_slurm_tests.sh.
#
#   slurm_install            apt-get install slurm-wlm + munge when missing (no services started)
#   slurm_start DIR          munged, slurmctld and slurmd as children of this shell, everything
#                            (config, munge key, state, spool, logs) under DIR; exports SLURM_CONF
#   slurm_stop               stops the daemons slurm_start started, by their process ids
#   slurm_wait_state JOB STATE... SECONDS   waits until the job is in one of the states
#
# No systemd, no cgroups, no files outside DIR: it runs on a bare Debian 12
# (a chroot without /sys too), as root. Each function prints what failed and returns
# non-zero; the caller decides whether that is a failure or a skip.

slurm_pids=()

slurm_log() { echo "[slurm] $*" >&2; }

slurm_install() {
  local need=()
  # libpmix-dev: srun --mpi=pmix dlopens the unversioned libpmix.so, which only it ships.
  for p in slurmctld slurmd slurm-client munge libpmix-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || { slurm_log "not root: cannot install ${need[*]}"; return 1; }
  slurm_log "installing ${need[*]}"
  # Debian's maintainer scripts would start munge and slurm services: forbid that
  # while installing (we start our own daemons), unless a policy already exists.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
  fi
  local rc=0
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"; } \
    >"${TMPDIR:-/tmp}/chorus-slurm-apt.log" 2>&1 || rc=$?
  [ -n "$own_policy" ] && rm -f "$policy"
  [ $rc -eq 0 ] || { slurm_log "apt-get install failed (log: ${TMPDIR:-/tmp}/chorus-slurm-apt.log)"; tail -n 5 "${TMPDIR:-/tmp}/chorus-slurm-apt.log" >&2; }
  return $rc
}

# A TCP port nobody listens on, from a range picked by our process id.
slurm_free_port() {
  local p=$(( 20000 + ($$ * 7 + $1 * 1013) % 30000 ))
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

# Waits until `cmd...` succeeds, at most $1 seconds (less when a daemon we started died).
slurm_wait_for() {
  local secs=$1 pid; shift
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    for pid in "${slurm_pids[@]}"; do kill -0 "$pid" 2>/dev/null || { slurm_log "daemon $pid exited"; return 1; }; done
    sleep 0.5
  done
}

slurm_start() {
  local dir=$1
  mkdir -p "$dir"/{state,spool,log} && chmod 700 "$dir" || return 1
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  export SLURM_CONF=$dir/slurm.conf
  cat >"$SLURM_CONF" <<EOF
# Written by tests/slurm/slurm_cluster.sh: one node (this machine), root, no cgroups.
ClusterName=chorus-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(slurm_free_port 1)
SlurmdPort=$(slurm_free_port 2)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
# Jobs run in "test"; a job in "urgent" pre-empts them (Slurm requeues them itself).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10
EOF
  # slurmd 22.05 loads a cgroup plugin whatever ProctrackType and TaskPlugin say, and
  # its autodetection fails where /sys/fs/cgroup is no cgroup file system (a chroot
  # without /sys): name the v1 plugin there, which nothing here then uses.
  case "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" in
    cgroup2fs | tmpfs) ;;
    *) echo "CgroupPlugin=cgroup/v1" >"$dir/cgroup.conf" ;;
  esac
  # munge: its own key and socket in $dir (a key is 1 KiB of random bytes, owner-only).
  dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none && chmod 400 "$dir/munge.key" || return 1
  munged --foreground --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed" \
    >>"$dir/log/munged.out" 2>&1 &
  slurm_pids+=($!)
  if ! slurm_wait_for 10 sh -c "munge --socket='$dir/munge.socket' -n | unmunge --socket='$dir/munge.socket'"; then
    slurm_log "munged did not start:"; tail -n 5 "$dir/log/munged.log" "$dir/log/munged.out" >&2
    slurm_stop; return 1
  fi
  slurmctld -D -c -i -f "$SLURM_CONF" >>"$dir/log/slurmctld.out" 2>&1 &
  slurm_pids+=($!)
  slurmd -D -f "$SLURM_CONF" -N "$host" >>"$dir/log/slurmd.out" 2>&1 &
  slurm_pids+=($!)
  if ! slurm_wait_for 30 sh -c "sinfo -h -N -o '%t' | grep -Eq '^(idle|mix|alloc)'"; then
    slurm_log "the node did not come up (sinfo: $(sinfo -h -N -o '%N %t %E' 2>&1)):"
    tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" "$dir/log/slurmctld.out" "$dir/log/slurmd.out" >&2
    slurm_stop; return 1
  fi
  slurm_log "cluster up in $dir: node $host, $cpus CPUs, ${mem} MiB (daemons ${slurm_pids[*]})"
}

slurm_stop() {
  local pid
  [ ${#slurm_pids[@]} -eq 0 ] && return 0
  # slurmd first: it ends the job steps it runs (linuxproc tracks their processes).
  for pid in $(printf '%s\n' "${slurm_pids[@]}" | tac); do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${slurm_pids[@]}"; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  slurm_log "stopped daemons ${slurm_pids[*]}"
  slurm_pids=()
}

# The job's state (PENDING, RUNNING, COMPLETED, ...), "" when unknown.
slurm_job_state() { scontrol show job "$1" -o 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }

slurm_wait_state() {
  local job=$1 secs=${*: -1} want=("${@:2:$#-2}")
  local end=$(( $(date +%s) + secs )) s
  while :; do
    s=$(slurm_job_state "$job")
    for w in "${want[@]}"; do [ "$s" = "$w" ] && return 0; done
    if [ "$(date +%s)" -ge "$end" ]; then
      slurm_log "job $job: still '$s' after ${secs} s (waited for ${want[*]})"; return 1
    fi
    sleep 0.5
  done
}
