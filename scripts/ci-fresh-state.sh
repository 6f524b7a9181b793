#!/usr/bin/env bash
# Runs .ci/run the way CI does on a machine that never saw this project, as nearly as one machine
# can: a fresh clone of HEAD beside ../shared (no .build, no .build/python), a dockerd with an empty
# data root of its own (no images, no networks, the default bridge as a first start leaves it), and
# an empty TMPDIR. Installed apt packages stay: they cannot be told apart from the machine's own.
#
# Stops the running dockerd first and leaves the fresh one running afterwards (`make test` keeps
# using whatever answers on /var/run/docker.sock). Needs root.
#
#   scripts/ci-fresh-state.sh        →   exit status of .ci/run; log and timing in the clone's parent
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "ci-fresh-state.sh: must run as root (it restarts dockerd)" >&2; exit 1; }
repo=$(pwd)
parent=$(dirname "$repo")
[[ -d $parent/shared/fixtures ]] || { echo "ci-fresh-state.sh: needs $parent/shared/fixtures" >&2; exit 1; }

clone=$(mktemp -d "$parent/ci-fresh.XXXXXX")
git clone -q "$repo" "$clone"
echo "fresh clone of $(git rev-parse --short HEAD) in $clone"

# The running daemon goes; its data root stays where it was for later use.
if [[ -f /var/run/docker.pid ]] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    pid=$(cat /var/run/docker.pid)
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { echo "ci-fresh-state.sh: dockerd $pid did not stop" >&2; exit 1; }
    echo "stopped dockerd $pid"
fi
data_root=$(mktemp -d /var/tmp/cnm-fresh-docker.XXXXXX)
DOCKERD_DATA_ROOT=$data_root scripts/start-dockerd.sh
echo "dockerd data root: $data_root"

tmp=$(mktemp -d /var/tmp/cnm-fresh-tmp.XXXXXX)
log=$clone.log
start=$SECONDS
status=0
(cd "$clone" && env TMPDIR="$tmp" CI=true bash .ci/run </dev/null) >"$log" 2>&1 || status=$?
echo "exit $status after $((SECONDS - start)) s; log in $log"
grep -E '^(✔|✘) Test run|passed after|failed after' "$log" | tail -n 3 || true
exit "$status"
