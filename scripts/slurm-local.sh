#!/usr/bin/env bash
# Runs a sweep end to end through a real one-node Slurm on this machine: installs Debian's
# slurm-wlm and munge if missing, starts munged, slurmctld and slurmd on localhost, then
#   icl-lab sweep slurm <sweep>   →   sbatch --wait   →   icl-lab sweep collect <sweep>
# and prints the collected report. Needs root (packages, daemons). Idempotent: a second run reuses
# the daemons and the finished runs. Usage: scripts/slurm-local.sh [sweep.toml] (default
# examples/sweep-tiny.toml); work files go to $SLURM_WORK (default /tmp/icl-lab-slurm).
# CI does not run this (no root daemons there); the README shows its output.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${1:-examples/sweep-tiny.toml}
work=${SLURM_WORK:-/tmp/icl-lab-slurm}
bin=$PWD/target/release/icl-lab
say() { printf '[slurm-local] %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root (apt-get, munged, slurmctld, slurmd)"; exit 1; }
[ -x "$bin" ] || { say "build first: scripts/setup.sh"; exit 1; }

if ! dpkg -s slurm-wlm munge >/dev/null 2>&1; then
  say "installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a key and the daemon.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# One node, this machine, all its cores; no cgroup confinement (containers often lack it).
node=$(hostname -s)
mem=$(awk '/MemTotal/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf=/etc/slurm/slurm.conf
cat > "$conf.new" <<CONF
# Written by icl-lab scripts/slurm-local.sh: a one-node cluster for testing sweeps.
ClusterName=icl-lab
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$conf.new" "$conf"; then
  mv "$conf.new" "$conf"
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  sleep 1
else
  rm "$conf.new"
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  state=$(sinfo -h -n "$node" -o '%T' 2>/dev/null || true)
  case "$state" in idle*|mixed*|allocated*) break ;; esac
  sleep 1
done
say "node $node: ${state:-not up}"
case "$state" in idle*|mixed*|allocated*) ;; *) say "slurmd did not come up; see /var/log/slurm/"; exit 1 ;; esac

say "sweep $sweep"
"$bin" sweep plan "$sweep" --runs "$work/runs"
"$bin" sweep slurm "$sweep" --runs "$work/runs" --out "$work/sweep" --mem 500M --time 00:10:00
start=$(date +%s)
job=$(sbatch --parsable --wait "$work/sweep/sweep.sbatch")
say "array job $job finished in $(( $(date +%s) - start )) s"
say "$(ls "$work/sweep/logs" | wc -l) task logs in $work/sweep/logs (sbatch --wait fails if any task failed)"
"$bin" sweep collect "$sweep" --runs "$work/runs" --reports "$work/reports" --figures "$work/figures"
