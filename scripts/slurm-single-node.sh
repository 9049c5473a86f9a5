#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests of `diffusion-lens slurm` (test/slurm.test.ts):
# munge (with a key), slurmctld and slurmd for one node (this host, all its CPUs, no GPUs, no cgroups),
# state under /var/tmp/dlens-slurm. Needs root (or sudo) and Debian's slurm-wlm and munge packages
# (.ci/run installs them). Writes /etc/slurm/slurm.conf unless one that this script did not write is
# there. Idempotent: with the daemons up it only checks the node. `--stop` stops what it started.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
state=/var/tmp/dlens-slurm
conf=/etc/slurm/slurm.conf
marker="# written by diffusion-lens scripts/slurm-single-node.sh"

stop() {
  for daemon in slurmd slurmctld; do
    if [ -f "$state/$daemon.pid" ]; then
      $sudo kill "$(cat "$state/$daemon.pid")" 2>/dev/null || true
      $sudo rm -f "$state/$daemon.pid"
    fi
  done
}

if [ "${1:-}" = "--stop" ]; then
  stop
  exit 0
fi

for tool in munged slurmctld slurmd sinfo sbatch; do
  if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
    echo "slurm-single-node: $tool not found: install slurm-wlm and munge (apt-get install slurm-wlm munge)" >&2
    exit 1
  fi
done

# munge: a key, then the daemon (as the munge user).
if [ ! -s /etc/munge/munge.key ]; then
  $sudo mkdir -p /etc/munge
  $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
$sudo chown munge:munge /etc/munge/munge.key
$sudo chmod 400 /etc/munge/munge.key
$sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
$sudo chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  $sudo runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    if munge -n </dev/null >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
fi
munge -n </dev/null | unmunge >/dev/null

host="$(hostname -s)"
cpus="$(nproc)"
# RealMemory a bit under what is free, in MB.
available_kb="$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)"
memory=$((available_kb * 8 / 10 / 1024))

if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
  echo "slurm-single-node: $conf exists and was not written by this script: not touching it" >&2
else
  $sudo mkdir -p /etc/slurm "$state/ctld" "$state/d"
  $sudo tee "$conf" >/dev/null <<EOF
$marker
ClusterName=dlens
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
SlurmdTimeout=300
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
fi

running() { [ -f "$state/$1.pid" ] && $sudo kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }
if ! running slurmctld; then $sudo /usr/sbin/slurmctld; fi
if ! running slurmd; then $sudo /usr/sbin/slurmd; fi

# Wait for the node to take jobs.
for _ in $(seq 60); do
  node_state="$(sinfo -h -n "$host" -o %T 2>/dev/null || true)"
  case "$node_state" in
    idle* | mixed* | allocated*) break ;;
    down* | drain*) $sudo scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
sinfo
case "$(sinfo -h -n "$host" -o %T)" in
  idle* | mixed* | allocated*) ;;
  *)
    echo "slurm-single-node: node $host did not come up; see $state/slurmctld.log and $state/slurmd.log" >&2
    exit 1
    ;;
esac
srun -N1 -n1 hostname
