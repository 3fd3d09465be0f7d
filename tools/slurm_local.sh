#!/usr/bin/env bash
# A real one-node Slurm on this machine, for the `slurm` tests and for trying `sr-search slurm` by hand.
#
#   tools/slurm_local.sh [start]   install (Debian/Ubuntu: slurmctld, slurmd, slurm-client, munge; apt-get as root),
#                                  write a one-node slurm.conf, start munged, slurmctld and slurmd, wait for the
#                                  node to be idle and run a one-line job. Idempotent: what runs is left running.
#   tools/slurm_local.sh stop      stop the daemons this script started (by their pid files)
#   tools/slurm_local.sh status    what runs, and the node's state
#
# The configuration (/etc/slurm/slurm.conf) names this host as controller and only node, with its CPUs and 90% of its
# memory, munge authentication, no cgroups (proctrack/linuxproc, task/none, so it runs in a container), and a short
# credential lifetime so that a requeued job may start again after 5 s instead of 120 s. An existing slurm.conf that
# this script did not write is never touched: then the script only starts the daemons.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by sr-search tools/slurm_local.sh"
STATE=/var/lib/slurm-local
LOG=/var/log/slurm-local
CTLD_PID=/run/slurm-local/slurmctld.pid
SLURMD_PID=/run/slurm-local/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

running() {  # PIDFILE: the process it names is alive
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

need_root() {
  [ "$(id -u)" = 0 ] || die "$1 needs root (run: sudo $0 ${ACTION})"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
      && command -v munged >/dev/null; then
    return
  fi
  need_root "installing slurmctld, slurmd, slurm-client and munge"
  command -v apt-get >/dev/null || die "no apt-get here: install Slurm (slurmctld, slurmd, client) and munge yourself"
  say "installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and was not written here: left as it is"
    return
  fi
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOG" "$(dirname "$CTLD_PID")"
  local tmp
  tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
  cat > "$tmp" <<EOF
$MARK
# one node: this host is the controller and the only compute node
ClusterName=srlocal
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its credential expired: 5 s here (Slurm's default is 120 s)
AuthInfo=cred_expire=5
SlurmUser=root
SlurmdUser=root
# no cgroups: works in a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"
  else
    chmod 644 "$tmp"
    mv "$tmp" "$CONF"
    say "wrote $CONF (node $host, $cpus CPUs, $mem_mb MB)"
    CONF_CHANGED=1
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile /etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  say "starting munged (as the munge user)"
  runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged does not answer (see /var/log/munge/munged.log)"
}

start_daemons() {
  if [ "${CONF_CHANGED:-0}" = 1 ] && running "$CTLD_PID"; then
    say "configuration changed: reconfiguring"
    scontrol reconfigure || true
  fi
  if ! running "$CTLD_PID"; then
    say "starting slurmctld"
    slurmctld
  fi
  if ! running "$SLURMD_PID"; then
    say "starting slurmd"
    slurmd
  fi
}

wait_idle() {
  local host state
  host=$(hostname -s)
  for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1 || true)
    case $state in
      idle|mixed|allocated|completing) break ;;
      *drain*|down*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  case $state in
    idle|mixed|allocated|completing) ;;
    *) die "node $host is '${state:-unknown}' after 60 s (see $LOG/slurmd.log and $LOG/slurmctld.log)" ;;
  esac
  local t0 out
  t0=$(date +%s%N)
  out=$(sbatch --wait --quiet --output=/dev/null --time=1 --wrap true 2>&1) || die "a one-line job failed: $out"
  say "ready: node $host $state; a one-line job ran in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

stop_one() {  # NAME PIDFILE
  if running "$2"; then
    local pid
    pid=$(cat "$2")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    say "stopped $1 (pid $pid)"
  fi
}

ACTION=${1:-start}
case $ACTION in
  start)
    install_packages
    need_root "configuring and starting Slurm"
    write_conf
    start_munge
    start_daemons
    wait_idle
    ;;
  stop)
    stop_one slurmd "$SLURMD_PID"
    stop_one slurmctld "$CTLD_PID"
    stop_one munged "$MUNGE_PID"
    ;;
  status)
    for pair in "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID" "munged:$MUNGE_PID"; do
      if running "${pair#*:}"; then echo "${pair%%:*}: running (pid $(cat "${pair#*:}"))"; else echo "${pair%%:*}: stopped"; fi
    done
    command -v sinfo >/dev/null && sinfo 2>/dev/null || true
    ;;
  *)
    die "unknown action '$ACTION': start, stop or status"
    ;;
esac
