#!/usr/bin/env bash
# Starts a Docker daemon for tests and development on a machine where nothing else does.
# Idempotent: exits 0 at once when the socket already answers.
set -euo pipefail

SOCKET=/var/run/docker.sock
LOG=/var/log/cnm-dockerd.log
DEADLINE_SECONDS=${DOCKERD_START_TIMEOUT:-60}

answers() { docker -H "unix://$SOCKET" info >/dev/null 2>&1; }

if answers; then
    echo "dockerd already answers on $SOCKET"
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "start-dockerd.sh: must run as root to start dockerd" >&2
    exit 1
fi
for tool in dockerd docker; do
    if ! command -v "$tool" >/dev/null; then
        echo "start-dockerd.sh: $tool not found (apt-get install -y docker.io)" >&2
        exit 1
    fi
done

# Docker here runs on cgroup v1: without the controller hierarchies mounted it cannot create
# containers. Mount whatever is missing, the way cgroupfs-mount does. A unified (cgroup2-only)
# host needs nothing, and a directory made there would be a new cgroup, not a mount point.
if ! mountpoint -q /sys/fs/cgroup; then
    mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
fi
if [[ $(stat -fc %T /sys/fs/cgroup) != cgroup2fs ]]; then
    while read -r subsys _ _ enabled; do
        [[ $subsys == \#* || $enabled != 1 ]] && continue
        dir=/sys/fs/cgroup/$subsys
        if ! mountpoint -q "$dir"; then
            mkdir -p "$dir"
            # A controller may already be co-mounted with another (cpu,cpuacct): then leave it.
            mount -n -t cgroup -o "$subsys" cgroup "$dir" 2>/dev/null || rmdir "$dir" 2>/dev/null || true
        fi
    done </proc/cgroups
fi

# A stale pid file from a daemon that died would stop the new one from starting.
if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi

# No iptables: the kernel's netfilter set-up belongs to the tests, and no published ports are needed.
# setsid: the daemon outlives this script and is not killed with its caller's process group.
echo "=== start-dockerd.sh $(date -Is)" >>"$LOG"
# DOCKERD_DATA_ROOT: a data root of its own (no images, networks or containers), as on a new machine.
setsid dockerd --iptables=false ${DOCKERD_DATA_ROOT:+--data-root "$DOCKERD_DATA_ROOT"} >>"$LOG" 2>&1 </dev/null &
pid=$!

deadline=$((SECONDS + DEADLINE_SECONDS))
until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "start-dockerd.sh: dockerd exited while starting; last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "start-dockerd.sh: dockerd did not answer within ${DEADLINE_SECONDS}s; last lines of $LOG:" >&2
        tail -n 30 "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "dockerd started (pid $pid), log in $LOG"
