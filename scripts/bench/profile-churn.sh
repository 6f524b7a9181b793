#!/usr/bin/env bash
# Where the agent's CPU goes under churn: the release agent (eBPF, sock_length) while conn-workload opens
# 60,000 loopback connections at 5,000 per second, run twice: with no API reader, and with one reading
# /api/v1/intervals every 0.5 s as `make bench` does. Prints the agent's CPU (user + system from
# /proc/<pid>/stat) against the workload's, and perf's top functions for each run (perf record -g, 10 s).
#
#   make release && scripts/bench/profile-churn.sh        (as root; needs perf, gcc, curl, python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.build/profile-churn
mkdir -p "$out"
gcc -O2 -Wall -pthread -o "$out/conn-workload" scripts/conn-workload.c
port=7798
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
    local label=$1 poll=$2 poller=""
    DD_CNM_EBPF_STRATEGY=sock_length DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS=3 DD_CNM_HTTP_ADDR=127.0.0.1:$port \
        .build/release/cnm-agent >"$out/agent-$label.log" 2>&1 &
    local agent=$!
    for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    if [ "$poll" = 1 ]; then
        (
            last=0
            while true; do
                curl -s "127.0.0.1:$port/api/v1/intervals?after=$last" -o "$out/intervals.json" || true
                n=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(max([i["sequence"] for i in d["intervals"]] + [0]))' "$out/intervals.json" 2>/dev/null || echo 0)
                [ "$n" != 0 ] && last=$n
                sleep 0.5
            done
        ) &
        poller=$!
    fi
    local before
    before=$(ticks "$agent")
    "$out/conn-workload" short 60000 5000 100 >"$out/workload-$label.json" 2>/dev/null &
    local workload=$!
    perf record -F 499 -g -p "$agent" -o "$out/perf-$label.data" -- sleep 10 >/dev/null 2>&1
    wait "$workload"
    sleep 4 # the last report, 3 s after the workload's end, is the agent's too
    local after
    after=$(ticks "$agent")
    [ -n "$poller" ] && kill "$poller"
    kill "$agent"
    wait "$agent" 2>/dev/null || true
    local wl_cpu
    wl_cpu=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cpu_s"])' "$out/workload-$label.json")
    python3 -c 'import sys; a=int(sys.argv[2])/100; w=float(sys.argv[3]); print(f"{sys.argv[1]}: agent {a:.2f} s CPU, workload {w:.2f} s: {100*a/w:.1f}%")' \
        "$label" "$((after - before))" "$wl_cpu"
    perf report -i "$out/perf-$label.data" --children --sort symbol --percent-limit 20 --stdio 2>/dev/null |
        grep -E '^ +[0-9]' | grep -E 'JSONEncoder.*encode|CNMServer|CNMModel|CNMBPF|CNMCollector' | head -6 | cut -c1-160
}

run "no API reader" 0
run "API read every 0.5 s" 1
