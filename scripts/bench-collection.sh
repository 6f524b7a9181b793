#!/usr/bin/env bash
# CPU time per collection and resident memory of the agent with N open TCP connections on loopback
# (default 10,000: 20,000 sockets). Reports numbers; judges nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/apt-ensure.sh python3 curl
connections=${CONNECTIONS:-10000}
window=${WINDOW_SECONDS:-30}
agent=.build/release/cnm-agent
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Each holder keeps 5,000 connections (10,000 fds): within the usual hard limit on open files.
per_holder=5000
holders=()
trap 'kill ${holders[*]} ${agent_pid:-} 2>/dev/null || true' EXIT
for ((left = connections; left > 0; left -= per_holder)); do
    n=$((left < per_holder ? left : per_holder))
    log=/tmp/cnm-bench-holder-$left.log
    (ulimit -n $((n * 2 + 256)) && exec python3 scripts/hold-connections.py "$n") > "$log" 2>&1 &
    holders+=($!)
    until grep -q ready "$log"; do
        kill -0 "${holders[-1]}" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.2
    done
done

DD_CNM_HTTP_ADDR=127.0.0.1:$port DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS=10 DD_CNM_SAMPLE_INTERVAL=1 \
    DD_CNM_TERMINAL=never DD_LOG_LEVEL=warn $agent &
agent_pid=$!
until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
sleep 3  # let the first owner scan finish before the measured window

cpu_ticks() { awk '{print $14 + $15}' /proc/$agent_pid/stat; }
polls() { curl -fs "http://127.0.0.1:$port/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["polls"])'; }
t0=$(cpu_ticks); p0=$(polls)
sleep "$window"
t1=$(cpu_ticks); p1=$(polls)
hz=$(getconf CLK_TCK)
status=$(curl -fs "http://127.0.0.1:$port/status")
tracked=$(echo "$status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections_tracked"])')
rss=$(awk '/VmRSS/{print $2}' /proc/$agent_pid/status)
hwm=$(awk '/VmHWM/{print $2}' /proc/$agent_pid/status)
python3 - "$t0" "$t1" "$p0" "$p1" "$hz" "$rss" "$hwm" "$tracked" "$connections" <<'PY'
import sys
t0, t1, p0, p1, hz, rss, hwm, tracked, n = map(int, sys.argv[1:])
ms_per_poll = (t1 - t0) * 1000 / hz / max(1, p1 - p0)
print(f"connections open: {n} ({tracked} sockets tracked)")
print(f"collections measured: {p1 - p0}")
print(f"CPU per collection: {ms_per_poll:.1f} ms (user+system, includes the HTTP server idling)")
print(f"RSS: {rss / 1024:.1f} MiB now, {hwm / 1024:.1f} MiB peak")
PY
