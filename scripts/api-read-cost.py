#!/usr/bin/env python3
"""What reading the local API costs the agent (`make bench-api`; not in CI).

With --held loopback TCP connections open (default 5,000: 10,000 connections in each interval, one
per end), the agent's own CPU (utime + stime from /proc/PID/stat) over --reads sequential reads of
/api/v1/connections, less its CPU over an idle window as long, divided by the reads; then --readers
concurrent readers (default 20, as `ab -c 20`) doing --reads reads in all, with their wall time and
failures. CNM_AGENT=path measures another build (an older commit's, to compare).

  scripts/api-read-cost.py [--held 5000] [--reads 100] [--readers 20] [--mode ebpf|ebpfless]
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
from cnmbench.system import AGENT, CLK_TCK, ROOT, free_port, log, stop_process, wait_until  # noqa: E402
from cnmbench.workloads import build  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--held", type=int, default=5000)
    p.add_argument("--reads", type=int, default=100)
    p.add_argument("--readers", type=int, default=20)
    p.add_argument("--mode", choices=["ebpf", "ebpfless"], default="ebpf")
    opts = p.parse_args()

    run_dir = tempfile.mkdtemp(prefix="cnm-api-read-")
    workload = os.path.join(run_dir, "conn-workload")
    build(workload)
    port = free_port()
    env = dict(os.environ, DD_CNM_HTTP_ADDR=f"127.0.0.1:{port}", DD_CNM_TERMINAL="never", DD_LOG_LEVEL="warn",
               DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS="10")
    if opts.mode == "ebpfless":
        env["DD_NETWORK_CONFIG_ENABLE_EBPFLESS"] = "true"
    holder = subprocess.Popen([workload, "hold", str(opts.held), "1", "64"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, CONN_WORKLOAD_TRUTH=os.path.join(run_dir, "held.tsv")))
    for line in holder.stderr:
        if line.strip() == "ready":
            break
    else:
        raise RuntimeError(f"conn-workload hold exited ({holder.wait()})")
    with open(os.path.join(run_dir, "agent.err"), "w") as err:
        agent = subprocess.Popen([AGENT], env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/api/v1/connections"

    def read(timeout=30):
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()

    try:
        def full():
            try:
                return len(json.loads(read())["connections"]) >= 2 * opts.held
            except (OSError, ValueError, KeyError):
                return False

        wait_until(full, 120, f"an interval with the {2 * opts.held} held connections", 0.5)
        size = len(read())
        # The idle cost over as long a window as the reads take, taken after them.
        before, started = cpu_seconds(agent.pid), time.monotonic()
        for _ in range(opts.reads):
            read()
        wall = time.monotonic() - started
        reads_cpu = cpu_seconds(agent.pid) - before
        before = cpu_seconds(agent.pid)
        time.sleep(wall)
        idle_cpu = cpu_seconds(agent.pid) - before
        per_read_ms = max(0.0, reads_cpu - idle_cpu) / opts.reads * 1000

        failures = {}

        def one(_):
            try:
                read()
            except OSError as e:
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(opts.readers) as pool:
            list(pool.map(one, range(opts.reads)))
        concurrent_wall = time.monotonic() - started
    finally:
        stop_process(agent)
        holder.stdin.close()
        holder.wait(timeout=60)

    print(json.dumps({
        "agent": os.path.relpath(AGENT, ROOT) if AGENT.startswith(ROOT) else AGENT,
        "mode": opts.mode, "connections_per_read": 2 * opts.held, "bytes_per_read": size,
        "cpu_ms_per_read": round(per_read_ms, 2), "idle_cpu_ms_in_window": round(idle_cpu * 1000, 1),
        "concurrent_readers": opts.readers, "concurrent_reads": opts.reads,
        "concurrent_wall_s": round(concurrent_wall, 2), "concurrent_failures": failures,
    }))
    log(f"{2 * opts.held} connections, {size:,} bytes a read: {per_read_ms:.2f} ms of agent CPU per read; "
        f"{opts.readers} concurrent readers did {opts.reads} reads in {concurrent_wall:.2f} s, failures {failures or 'none'}")


if __name__ == "__main__":
    main()
