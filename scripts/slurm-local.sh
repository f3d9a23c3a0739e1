#!/bin/bash
# slurm-local.sh - a one-node Slurm cluster on this machine, for trying `mfpipe sweep --launcher slurm`
# and for tests/cli/test_slurm.sh (docs/sweeps.md, "Slurm").
#
#   scripts/slurm-local.sh start    install what is missing of slurmctld slurmd slurm-client munge
#                                   (Debian/Ubuntu, as root), start munged, slurmctld and slurmd
#                                   directly (no systemd needed), wait until the node is idle
#   scripts/slurm-local.sh stop     stop the daemons this script started (munged only if it started it)
#   scripts/slurm-local.sh status   the daemons' pids and `sinfo`
#   scripts/slurm-local.sh env      the line to put the client commands on this cluster:
#                                   eval "$(scripts/slurm-local.sh env)"
#
# Everything lives in $MFPIPE_SLURM_DIR (default /tmp/mfpipe-slurm): slurm.conf, state, spool, logs,
# pid files. Nothing is written to /etc/slurm; the client commands find the cluster through
# SLURM_CONF=$MFPIPE_SLURM_DIR/slurm.conf. Ports: MFPIPE_SLURM_PORT (slurmctld, default 6817) and
# the next one (slurmd).
#
# Exit status: 0 done; 1 failed (the reason on stderr, the daemons' logs named); 77 this machine cannot
# run the cluster (not root and it is not running, or the packages cannot be installed).
set -u
DIR=${MFPIPE_SLURM_DIR:-/tmp/mfpipe-slurm}
PORT=${MFPIPE_SLURM_PORT:-6817}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
NODE=$(hostname -s 2>/dev/null || hostname)
[ -n "$NODE" ] || NODE=localhost
WAIT=${MFPIPE_SLURM_WAIT:-60}

say() { echo "slurm-local: $*" >&2; }
die() { say "$*"; exit 1; }
cannot() { say "cannot run a local cluster here: $*"; exit 77; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1; }

install_missing() {
  local missing=() p
  command -v slurmctld >/dev/null || [ -x /usr/sbin/slurmctld ] || missing+=(slurmctld)
  command -v slurmd >/dev/null || [ -x /usr/sbin/slurmd ] || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || cannot "not root, and ${missing[*]} not installed"
  command -v apt-get >/dev/null || cannot "no apt-get to install ${missing[*]}"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$DIR/apt.log" 2>&1; then
    say "apt-get install failed; apt-get update and again"
    apt-get update >>"$DIR/apt.log" 2>&1
    apt-get install -y --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1 ||
      cannot "apt-get install ${missing[*]} failed: $(tail -2 "$DIR/apt.log" | tr '\n' ' ')"
  fi
  for p in slurmctld slurmd sbatch munged; do
    command -v $p >/dev/null || [ -x /usr/sbin/$p ] || cannot "$p still missing after the install"
  done
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  local key=/etc/munge/munge.key
  if [ ! -s $key ]; then
    say "creating $key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=$key >/dev/null 2>&1 || true; fi
    [ -s $key ] || dd if=/dev/urandom of=$key bs=1024 count=1 status=none
    chown munge:munge $key 2>/dev/null || true
    chmod 400 $key
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge 2>/dev/null || true
  chmod 755 /run/munge
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged >"$DIR/munged.out" 2>&1 || die "munged did not start: $(cat "$DIR/munged.out")"
  else
    /usr/sbin/munged --force >"$DIR/munged.out" 2>&1 || die "munged did not start: $(cat "$DIR/munged.out")"
  fi
  touch "$DIR/munged.started"
  local i
  for ((i = 0; i < 50; i++)); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "munged is not answering (munge -n | unmunge)"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {m = int($2 / 1024 / 4); if (m > 4000) m = 4000; print m}' /proc/meminfo)
  mkdir -p "$DIR/ctld" "$DIR/d"
  cat >"$CONF" <<EOF
# written by scripts/slurm-local.sh: a one-node cluster on this machine
ClusterName=mfpipe-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid"; then
    case "$(node_state)" in idle*|mix*|alloc*) say "already running (node $NODE)"; return 0 ;; esac
  fi
  if [ "$(id -u)" != 0 ]; then
    cannot "not root (the daemons run as root), and no cluster of this script is running"
  fi
  mkdir -p "$DIR" || die "cannot create $DIR"
  install_missing
  start_munge
  write_conf
  if ! pid_alive "$DIR/slurmctld.pid"; then
    # -i: ignore state left by an earlier cluster in $DIR (its jobs are gone)
    /usr/sbin/slurmctld -f "$CONF" -i >"$DIR/slurmctld.out" 2>&1 ||
      die "slurmctld did not start: $(tail -3 "$DIR/slurmctld.out") (log $DIR/slurmctld.log)"
  fi
  if ! pid_alive "$DIR/slurmd.pid"; then
    /usr/sbin/slurmd -f "$CONF" -N "$NODE" >"$DIR/slurmd.out" 2>&1 ||
      die "slurmd did not start: $(tail -3 "$DIR/slurmd.out") (log $DIR/slurmd.log)"
  fi
  local i s
  for ((i = 0; i < WAIT * 2; i++)); do
    s=$(node_state)
    case "$s" in
      idle*|mix*|alloc*) say "node $NODE is $s (SLURM_CONF=$CONF)"; return 0 ;;
      down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 ;;
    esac
    sleep 0.5
  done
  die "node $NODE not idle after ${WAIT}s (state '${s:-none}'; logs $DIR/slurmctld.log $DIR/slurmd.log)"
}

stop_pid() { # name pidfile
  local pid i
  [ -s "$2" ] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped $1 ($pid)"
  fi
  rm -f "$2"
}

stop() {
  stop_pid slurmd "$DIR/slurmd.pid"
  stop_pid slurmctld "$DIR/slurmctld.pid"
  if [ -e "$DIR/munged.started" ]; then
    stop_pid munged /run/munge/munged.pid
    rm -f "$DIR/munged.started"
  fi
  return 0
}

status() {
  local d
  for d in slurmctld slurmd; do
    if pid_alive "$DIR/$d.pid"; then echo "$d: running ($(cat "$DIR/$d.pid"))"; else echo "$d: not running"; fi
  done
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: running"; else echo "munged: not running"; fi
  [ -e "$CONF" ] && sinfo 2>&1
  pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF='$CONF'" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
