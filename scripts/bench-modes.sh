#!/usr/bin/env bash
# What each collection mode costs: the agent's CPU per 1,000 short-lived loopback connections and per
# GiB sent over one connection (also as a share of the workload's own CPU), the kernel-side run time
# of the agent's eBPF programs (paid by the workload, inside its system calls), and the agent's
# resident memory with 10,000 open connections. Reports numbers; judges nothing.
#
# Modes (MODES, default all three): sock_length and kernel_counters (DD_CNM_EBPF_STRATEGY=<name>),
# ebpfless (DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true, packet capture on). Also: ebpfless-no-capture
# (DD_CNM_PACKET_CAPTURE=false), and ebpfless-sampled / ebpfless-sampled-no-capture, the same without
# destroy notifications (DD_CNM_DESTROY_NOTIFICATIONS=false). The mode the agent
# actually ran, as /status reports it, is printed beside the one asked for: a build or kernel without
# eBPF shows up there.
#
# Phases, in this order:
#   memory: CONNECTIONS (default 10,000) loopback connections held open by scripts/hold-connections.py;
#     per mode an agent is started, and VmRSS/VmHWM are read once it has made two reports.
#   cpu: per mode a fresh agent, no held connections (and none of the workload's TIME_WAIT sockets
#     left: each window waits for them); the agent's idle CPU rate is measured over IDLE_SECONDS
#     before the workloads and again after them. In between, `conn-workload bulk 1073741824` runs,
#     its window ending after the agent's second sample that follows it, then `conn-workload short
#     10000 5000 100`, its window ending once the agent has made a report after it and the
#     TIME_WAIT sockets it left have expired (the server's side of each connection stays in
#     TIME_WAIT for 60 s, and a mode that reads every socket each sample pays for them all that
#     time). The agent's idle CPU (mean of the two idle rates) for the window's length is subtracted.
# Agent CPU is its cgroup's CPU usage in ns (see make_cgroup; /proc/<pid>/stat ticks as a fallback). BPF run time is the change in
# the sum of run_time_ns of the cnm_* programs the agent holds (found through its fds' prog_id), with
# kernel.bpf_stats_enabled=1 during the eBPF runs when it can be set; that time is spent inside the
# workload's system calls and is already part of the workload's CPU.
#
# Knobs: MODES, CONNECTIONS, INTERVAL (report interval s, default 10), SAMPLE (sample period s,
# default 1), IDLE_SECONDS (default 6), SHORT="N RATE BYTES", BULK_BYTES, SKIP_BUILD=1 (use the last
# built .build/release/cnm-agent as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
scripts/apt-ensure.sh python3 curl gcc

read -r -a modes <<<"${MODES:-sock_length kernel_counters ebpfless}"
connections=${CONNECTIONS:-10000}
interval=${INTERVAL:-10}
sample=${SAMPLE:-1}
idle_seconds=${IDLE_SECONDS:-6}
read -r short_n short_rate short_bytes <<<"${SHORT:-10000 5000 100}"
bulk_bytes=${BULK_BYTES:-1073741824}
agent=.build/release/cnm-agent
work=$(mktemp -d /tmp/cnm-bench-modes.XXXXXX)
workload=$work/conn-workload
hz=1000000000  # cpu_ns reads nanoseconds
clk_tck=$(getconf CLK_TCK)

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- cleanup: every process this script started, with bounded waits ----
agent_pid=
holders=()
bpf_stats_saved=
stop_pid() {  # TERM, up to 10 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_agent() { [ -n "$agent_pid" ] && stop_pid "$agent_pid"; agent_pid=; }
stop_holders() { local p; for p in "${holders[@]}"; do stop_pid "$p"; done; holders=(); }
set_bpf_stats() { sysctl -q -w "kernel.bpf_stats_enabled=$1" >/dev/null 2>&1; }
cleanup() {
    stop_agent
    stop_holders
    [ -n "$bpf_stats_saved" ] && set_bpf_stats "$bpf_stats_saved"
    [ -n "$cgroup" ] && rmdir "$cgroup" 2>/dev/null
    log "logs and workload output: $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build ----
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    # Once the eBPF programs are part of the tree, the Makefile generates their embedded object first.
    if grep -q '^bpf:' Makefile; then make --no-print-directory bpf || die "make bpf failed"; fi
    log "swift build -c release --static-swift-stdlib"
    swift build -c release --static-swift-stdlib || die "release build failed (SKIP_BUILD=1 uses the last built binary)"
fi
[ -x "$agent" ] || die "$agent missing"
log "agent binary: $agent, built $(date -r "$agent" '+%F %T')"
gcc -O2 -Wall -pthread -o "$workload" scripts/conn-workload.c || die "building conn-workload failed"

# ---- helpers ----
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
status() { curl -fsS --max-time 5 "http://127.0.0.1:$port/status"; }
# Prints the JSON value at a key path (dots), or "?" when it is missing.
jget() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("?" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else v))' "$1"
}
# The agent runs in a cgroup of its own so its CPU time is read in nanoseconds, all threads
# included (also ones that exited); without one, utime+stime in 10 ms clock ticks.
cgroup=
make_cgroup() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        cgroup=/sys/fs/cgroup/cnm-bench-$$
    elif [ -d /sys/fs/cgroup/cpuacct ]; then
        cgroup=/sys/fs/cgroup/cpuacct/cnm-bench-$$
    fi
    [ -n "$cgroup" ] && mkdir -p "$cgroup" 2>/dev/null || { cgroup=; log "no cgroup for the agent: CPU read in clock ticks"; }
}
cpu_ns() {
    if [ -f "$cgroup/cpu.stat" ]; then awk '/^usage_usec/ {printf "%d\n", $2 * 1000}' "$cgroup/cpu.stat"
    elif [ -f "$cgroup/cpuacct.usage" ]; then cat "$cgroup/cpuacct.usage"
    else awk -v t="$clk_tck" '{printf "%d\n", ($14 + $15) * 1e9 / t}' "/proc/$agent_pid/stat"; fi
}
now() { date +%s.%N; }
nap() { sleep "$1" & wait $!; }  # a signal's trap runs at once, not after the sleep
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
# Sum of run_time_ns over the BPF programs named cnm_* that the agent holds an fd of (a program or a
# link), or "na"; iterator programs (cnm_iter_*, run by the agent's own reads, so inside its CPU)
# apart, as a second number. Programs other processes loaded (tests running beside) are not counted.
bpf_ns() {
    command -v bpftool >/dev/null || { echo na na; return; }
    local ids
    ids=$({ grep -hs '^prog_id:' /proc/$agent_pid/fdinfo/* || true; } | awk '{print $2}' | sort -u | tr '\n' ' ')
    [ -n "$ids" ] || { echo na na; return; }
    bpftool prog show -j 2>/dev/null | python3 -c '
import json, sys
ids = {int(i) for i in sys.argv[1].split()}
progs = [p for p in json.load(sys.stdin) if p.get("id") in ids and p.get("name", "").startswith("cnm_")]
hooks = [p.get("run_time_ns", 0) for p in progs if not p["name"].startswith("cnm_iter")]
iters = [p.get("run_time_ns", 0) for p in progs if p["name"].startswith("cnm_iter")]
print(sum(hooks) if hooks else "na", sum(iters) if iters else "na")' "$ids" 2>/dev/null || echo na na
}
mode_env() {
    case $1 in
        ebpfless) echo DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true ;;
        ebpfless-no-capture) echo DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true DD_CNM_PACKET_CAPTURE=false ;;
        ebpfless-sampled) echo DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true DD_CNM_DESTROY_NOTIFICATIONS=false ;;
        ebpfless-sampled-no-capture)
            echo DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true DD_CNM_DESTROY_NOTIFICATIONS=false DD_CNM_PACKET_CAPTURE=false ;;
        *) echo "DD_CNM_EBPF_STRATEGY=$1" ;;
    esac
}
time_wait_count() { ss -Htan state time-wait 2>/dev/null | wc -l; }

# Starts the agent in mode $1 and waits (up to 120 s) until its first collection is done.
start_agent() {
    local mode=$1 logfile=$2 deadline
    port=$(free_port)
    # shellcheck disable=SC2046  # one word per variable
    env $(mode_env "$mode") DD_CNM_HTTP_ADDR=127.0.0.1:$port DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS=$interval \
        DD_CNM_SAMPLE_INTERVAL=$sample DD_CNM_TERMINAL=never DD_LOG_LEVEL=warn "$agent" >"$logfile" 2>&1 &
    agent_pid=$!
    [ -n "$cgroup" ] && { echo "$agent_pid" >"$cgroup/cgroup.procs" || log "could not move the agent into $cgroup"; }
    deadline=$((SECONDS + 120))
    until curl -fs --max-time 2 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 &&
        [ "$(status | jget healthy)" = True ]; do
        if ! kill -0 "$agent_pid" 2>/dev/null; then
            log "agent ($mode) exited before its first collection; its log:"; tail -20 "$logfile" >&2
            agent_pid=; return 1
        fi
        ((SECONDS < deadline)) || { log "agent ($mode) not healthy after 120 s"; tail -20 "$logfile" >&2; return 1; }
        sleep 0.2
    done
}
# What ran: mode, chosen strategies and the reason, from /status.
describe_mode() {
    status | python3 -c '
import json, sys
s = json.load(sys.stdin)
chosen = ",".join(x["name"] for x in s.get("strategies", []) if x.get("chosen")) or "?"
extra = "".join(" %s=%s" % (k, s[k]) for k in ("strategy", "ebpf_strategy") if k in s)
print("%s\t%s\t%s%s" % (s.get("mode", "?"), chosen, s.get("mode_reason", ""), extra))'
}
reports() { status 2>/dev/null | jget reports 2>/dev/null | grep -E '^[0-9]+$' || echo -1; }
# Waits until the agent has made more than $1 reports, for at most $2 s (default interval + 15).
wait_report_after() {
    local limit=${2:-$((interval + 15))} deadline
    deadline=$((SECONDS + limit))
    while (($(reports) <= $1)); do
        ((SECONDS < deadline)) || { log "no report within $limit s"; return 1; }
        sleep 0.25
    done
}
polls() { status 2>/dev/null | jget polls 2>/dev/null | grep -E '^[0-9]+$' || echo -1; }
# TIME_WAIT sockets whose local port is $1 (the workload's server side).
time_wait_on() { ss -Htan state time-wait "( sport = :$1 )" 2>/dev/null | wc -l; }
# Runs the workload given as arguments and waits for the agent's work on it to end: "bulk": two
# samples later; "short": a report later and once its TIME_WAIT sockets are gone (at most 90 s).
# /status is asked as little as possible meanwhile: each request costs the agent a little CPU.
# Sets w_json, w_cpu (workload CPU s), a_gross (agent CPU s in the window), a_during (during the
# workload only), a_report (two samples / the first report after it), window (s), tw_end (its TIME_WAIT sockets when it ended), bpf and bpf_iter (ns or na).
measure() {
    local t0 b0 i0 s0 td tr t1 b1 i1 s1 p r deadline wport
    p=$(polls); r=$(reports)
    read -r b0 i0 < <(bpf_ns) || true; t0=$(cpu_ns); s0=$(now)
    w_json=$("$workload" "$@") || { log "workload $* failed"; return 1; }
    td=$(cpu_ns)
    wport=$(echo "$w_json" | jget port)
    tw_end=$(time_wait_on "$wport")
    if [ "$1" = bulk ]; then
        nap "$(calc "2 * $sample + 0.3")"
        deadline=$((SECONDS + 30))
        # two samples that began after the workload ended
        while (($(polls) < p + 3)); do
            ((SECONDS < deadline)) || { log "no sample within 30 s"; return 1; }
            sleep 0.25
        done
        tr=$(cpu_ns)
    else
        wait_report_after "$r" || return 1
        tr=$(cpu_ns)
        deadline=$((SECONDS + 90))
        while (($(time_wait_on "$wport") > 0)); do
            ((SECONDS < deadline)) || { log "TIME_WAIT sockets still there after 90 s"; break; }
            sleep 1
        done
        sleep "$(calc "$sample + 0.2")"  # one sample without them
    fi
    t1=$(cpu_ns); read -r b1 i1 < <(bpf_ns) || true; s1=$(now)
    w_cpu=$(echo "$w_json" | jget cpu_s)
    window=$(calc "$s1 - $s0")
    a_gross=$(calc "($t1 - $t0) / $hz")
    a_during=$(calc "($td - $t0) / $hz")
    a_report=$(calc "($tr - $t0) / $hz")
    if [[ ! "$b0$b1" =~ ^[0-9]+$ ]]; then bpf=na; else bpf=$((b1 - b0)); fi
    if [[ ! "$i0$i1" =~ ^[0-9]+$ ]]; then bpf_iter=na; else bpf_iter=$((i1 - i0)); fi
    echo "$w_json" >>"$work/workload.jsonl"
}
mib() { calc "$1 / 1024" 1; }

declare -A ran chosen reason rss hwm tracked cpu_k pct_k cpu_g pct_g bpf_k bpf_g notes idle details
for m in "${modes[@]}"; do notes[$m]=; done

make_cgroup

# ---- memory phase: one set of held connections, an agent per mode ----
if ((connections > 0)); then
    per_holder=5000
    for ((left = connections; left > 0; left -= per_holder)); do
        n=$((left < per_holder ? left : per_holder))
        hlog=$work/holder-$left.log
        (ulimit -n $((n * 2 + 256)) && exec python3 scripts/hold-connections.py "$n") >"$hlog" 2>&1 &
        holders+=($!)
        deadline=$((SECONDS + 60))
        until grep -q ready "$hlog"; do
            kill -0 "${holders[-1]}" 2>/dev/null || { cat "$hlog"; die "hold-connections.py failed"; }
            ((SECONDS < deadline)) || die "hold-connections.py not ready after 60 s"
            sleep 0.2
        done
    done
    log "holding $connections loopback connections ($((connections * 2)) sockets)"
    for m in "${modes[@]}"; do
        log "memory: $m"
        start_agent "$m" "$work/agent-memory-$m.log" || { notes[$m]+="memory phase: agent did not start. "; continue; }
        IFS=$'\t' read -r ran[$m] chosen[$m] reason[$m] < <(describe_mode)
        nap $((2 * interval - 3))
        if wait_report_after 1 30; then
            rss[$m]=$(mib "$(awk '/^VmRSS/{print $2}' /proc/$agent_pid/status)")
            hwm[$m]=$(mib "$(awk '/^VmHWM/{print $2}' /proc/$agent_pid/status)")
            tracked[$m]=$(status | jget connections_tracked)
            log "  ran ${ran[$m]} (${chosen[$m]}): RSS ${rss[$m]} MiB, peak ${hwm[$m]} MiB, ${tracked[$m]} sockets tracked"
        else
            notes[$m]+="memory phase: no second report. "
        fi
        stop_agent
    done
    stop_holders
fi

# ---- cpu phase: a fresh agent per mode ----
# Agent CPU is idle ticks counted over IDLE_SECONDS before the workloads and again after them; a
# window's net CPU is its gross minus the mean idle rate times its length.
idle_ticks() {  # prints "ticks seconds" over IDLE_SECONDS
    local a b s0 s1
    a=$(cpu_ns); s0=$(now); nap "$idle_seconds"; b=$(cpu_ns); s1=$(now)
    echo "$((b - a)) $(calc "$s1 - $s0")"
}
bpf_stats_saved=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || true)
for m in "${modes[@]}"; do
    log "cpu: $m"
    stats=off
    if [[ "$m" != ebpfless* ]] && [ -n "$bpf_stats_saved" ]; then
        set_bpf_stats 1 && stats=on || notes[$m]+="kernel.bpf_stats_enabled could not be set. "
    fi
    if ! start_agent "$m" "$work/agent-cpu-$m.log"; then
        notes[$m]+="cpu phase: agent did not start. "
        [ "$stats" = on ] && set_bpf_stats "$bpf_stats_saved"
        continue
    fi
    IFS=$'\t' read -r ran[$m] chosen[$m] reason[$m] < <(describe_mode)
    log "  ran ${ran[$m]} (strategies chosen: ${chosen[$m]}; ${reason[$m]}); $(time_wait_count) TIME_WAIT sockets on the host"
    sleep 1  # start-up work (first container tag refresh) out of the way
    read -r idle_t0 idle_s0 < <(idle_ticks)

    bulk_ok=0 short_ok=0
    if measure bulk "$bulk_bytes"; then
        bulk_ok=1; bulk_cpu=$w_cpu; bulk_gross=$a_gross; bulk_window=$window; bulk_bpf=$bpf
        log "  bulk: $w_json"
        log "  agent CPU: $a_during s during the workload, $a_gross s in the ${window} s window (two samples after it); BPF ns: $bpf in hooks, $bpf_iter in iterators"
    else
        notes[$m]+="bulk workload failed. "
    fi
    if measure short "$short_n" "$short_rate" "$short_bytes"; then
        short_ok=1; short_cpu=$w_cpu; short_gross=$a_gross; short_window=$window; short_bpf=$bpf
        log "  short: $w_json"
        log "  agent CPU: $a_during s during the workload, $a_report s through the next report," \
            "$a_gross s until its $tw_end TIME_WAIT sockets expired (${window} s window); BPF ns: $bpf in hooks, $bpf_iter in iterators"
        details[$m]="short: agent $(calc "$a_during * 1000" 0) ms during, $(calc "$a_report * 1000" 0) ms through the next report, $(calc "$a_gross * 1000" 0) ms through TIME_WAIT expiry (${window} s, gross); workload CPU $(calc "$w_cpu * 1000" 0) ms, $(echo "$w_json" | jget rate) conn/s"
        [ "$bpf_iter" = na ] || details[$m]+="; BPF iterators (agent side) $(calc "$bpf_iter / 1e6" 1) ms"
    else
        notes[$m]+="short workload failed. "
    fi
    read -r idle_t1 idle_s1 < <(idle_ticks)
    capture_state=$(status | jget capture)
    capture_drops=$(status | jget problems.capture_ring_dropped.count)
    log "  capture: $capture_state"
    [ "$capture_drops" = "?" ] || notes[$m]+="capture ring dropped $capture_drops packets. "
    stop_agent
    [ "$stats" = on ] && set_bpf_stats "$bpf_stats_saved"

    idle_rate=$(calc "($idle_t0 + $idle_t1) / $hz / ($idle_s0 + $idle_s1)" 6)
    idle[$m]="$(calc "$idle_t0 * 1000 / $hz / $idle_s0" 1) before, $(calc "$idle_t1 * 1000 / $hz / $idle_s1" 1) after"
    log "  idle: ${idle[$m]} ms CPU per second"
    if ((bulk_ok)); then
        net=$(calc "$bulk_gross - $idle_rate * $bulk_window" 4)
        gib=$(calc "$bulk_bytes / 1073741824" 6)
        cpu_g[$m]=$(calc "$net * 1000 / $gib" 1)
        pct_g[$m]=$(calc "100 * $net / $bulk_cpu" 1)
        if [ "$bulk_bpf" != na ]; then
            bpf_g[$m]=$(calc "$bulk_bpf / 1e6 / $gib" 1)
            log "  bulk BPF hooks: $(calc "$bulk_bpf / 1e6" 1) ms = $(calc "100 * $bulk_bpf / 1e9 / $bulk_cpu" 1)% of the workload's CPU"
        fi
    fi
    if ((short_ok)); then
        net=$(calc "$short_gross - $idle_rate * $short_window" 4)
        cpu_k[$m]=$(calc "$net * 1000 * 1000 / $short_n" 1)
        pct_k[$m]=$(calc "100 * $net / $short_cpu" 1)
        if [ "$short_bpf" != na ]; then
            bpf_k[$m]=$(calc "$short_bpf / 1e6 * 1000 / $short_n" 1)
            log "  short BPF hooks: $(calc "$short_bpf / 1e6" 1) ms = $(calc "100 * $short_bpf / 1e9 / $short_cpu" 1)% of the workload's CPU"
        fi
    fi
    [[ "$m" != ebpfless* ]] && [ "${ran[$m]:-}" = ebpf ] && [ -z "${bpf_k[$m]:-}" ] && notes[$m]+="no BPF run time (stats off?). "
    true
done

# ---- report ----
echo
echo "cnm-agent collection modes — $(uname -r), $(nproc) cores, interval ${interval} s, sample ${sample} s;" \
    "short: $short_n connections at $short_rate/s, $short_bytes B each way; bulk: $bulk_bytes B; held: $connections connections"
echo "Agent CPU (ms) is net of its idle rate; short: from the workload's start until its TIME_WAIT sockets expired"
echo "(a report included); bulk: until two samples after it. CPU read from the agent's own cgroup (ns): ${cgroup:-none, 10 ms clock ticks}."
echo "BPF (ms) = run time of the agent's cnm_* hook programs, spent inside the workload's system calls (already part of"
echo "the workload's CPU); measured with kernel.bpf_stats_enabled=1, which adds its own small cost per run."
echo
echo "| mode asked → ran | CPU per 1k conns | % of workload | CPU per GiB | % of workload | BPF per 1k conns | BPF per GiB | RSS steady | RSS peak |"
echo "|---|---|---|---|---|---|---|---|---|"
cell() { [ -n "$1" ] && echo "$1$2" || echo "–"; }
for m in "${modes[@]}"; do
    echo "| $m → ${ran[$m]:-?} (${chosen[$m]:-?}) | $(cell "${cpu_k[$m]:-}" " ms") | $(cell "${pct_k[$m]:-}" %) |" \
        "$(cell "${cpu_g[$m]:-}" " ms") | $(cell "${pct_g[$m]:-}" %) |" \
        "$(cell "${bpf_k[$m]:-}" " ms") | $(cell "${bpf_g[$m]:-}" " ms") | $(cell "${rss[$m]:-}" " MiB") | $(cell "${hwm[$m]:-}" " MiB") |"
done
echo
status=0
for m in "${modes[@]}"; do
    echo "- $m: ${reason[$m]:-mode unknown}. Idle agent CPU ${idle[$m]:-?} ms/s. ${details[$m]:-}${notes[$m]:+ Notes: ${notes[$m]}}"
    [[ "${notes[$m]}" =~ "did not start"|failed|"no second report" ]] && status=1
done
exit $status
