#!/usr/bin/env bash
# Starts a single-node Slurm (munged, slurmctld, slurmd) for the tests in tests/slurm.rs.
# Idempotent: installs the packages when missing, (re)writes the conf from this machine's
# hostname/CPUs/memory, restarts the daemons only when the conf changed or they are down, and
# waits until `sinfo` shows the node idle. Needs root. Exits non-zero with the reason otherwise.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
die() { echo "tests/slurm/start.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root to install and start Slurm"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
    || die "cannot install slurmctld slurmd slurm-client munge"
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
conf="$(sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEM@/$mem_mb/g" "$here/slurm.conf.in")"
changed=0
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
  changed=1
fi

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  su -s /bin/sh munge -c munged || munged --force || die "munged does not start"
  sleep 1
  munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge does not work"
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() { if running "$1"; then kill "$(cat "$1")"; for _ in $(seq 50); do running "$1" || break; sleep 0.1; done; fi; }
if [ "$changed" = 1 ]; then stop /run/slurmd.pid; stop /run/slurmctld.pid; fi
running /run/slurmctld.pid || slurmctld || die "slurmctld does not start (see /var/log/slurm/slurmctld.log)"
running /run/slurmd.pid || slurmd || die "slurmd does not start (see /var/log/slurm/slurmd.log)"

for _ in $(seq 60); do
  state="$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)"
  case "$state" in
    idle*|mixed*|allocated*) echo "slurm ready: node $host $state, $cpus CPUs, ${mem_mb}M"; exit 0 ;;
    down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
die "node $host not idle after 60 s (sinfo: '${state:-nothing}'); see /var/log/slurm/"
