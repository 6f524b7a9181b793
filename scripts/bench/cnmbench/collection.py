"""CPU per collection and RSS with open connections (bench.py --collection; make bench-collection).

CPU time per collection and resident memory of the agent (in its default mode, 10 s report interval,
1 s sample period) with --connections (CONNECTIONS, default 10,000: 20,000 sockets) TCP connections
open on loopback, held by scripts/hold-connections.py. CPU: user + system from /proc/<pid>/stat over
--window-seconds (WINDOW_SECONDS, default 30), divided by the collections in that window. Reports
numbers; judges nothing.
"""
import os
import sys
import tempfile
import time

from .collectors import Agent
from .system import AGENT, CLK_TCK, cpu_ticks, log, memory_kib
from .workloads import hold_connections, stop_holders


def collection_report(n, tracked, t0, t1, p0, p1, hz, rss, hwm):
    """The lines printed: n connections open, CPU ticks t0..t1 and collections p0..p1 over the window."""
    ms_per_poll = (t1 - t0) * 1000 / hz / max(1, p1 - p0)
    return [
        f"connections open: {n} ({tracked} sockets tracked)",
        f"collections measured: {p1 - p0}",
        f"CPU per collection: {ms_per_poll:.1f} ms (user+system, includes the HTTP server idling)",
        f"RSS: {rss / 1024:.1f} MiB now, {hwm / 1024:.1f} MiB peak",
    ]


def run(opts):
    """The --collection benchmark; opts: the command line (see cli.py)."""
    work = opts.out or tempfile.mkdtemp(prefix="cnm-bench-collection.", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    if not os.access(AGENT, os.X_OK):
        sys.exit(f"bench.py --collection: {AGENT} missing (make release)")
    holders = []
    agent = None
    try:
        # each holder keeps 5,000 connections (10,000 fds): within the usual hard limit on open files
        holders = hold_connections(opts.connections, work)
        run_dir = os.path.join(work, "agent")
        os.makedirs(run_dir, exist_ok=True)
        agent = Agent("agent", run_dir, opts, None, interval=10, sample=1)
        agent.launch(timeout=120)
        time.sleep(3)  # let the first owner scan finish before the measured window
        pid = agent.proc.pid
        t0, p0 = cpu_ticks(pid), agent.get("/status")["polls"]
        time.sleep(opts.window_seconds)
        t1, p1 = cpu_ticks(pid), agent.get("/status")["polls"]
        tracked = agent.get("/status")["connections_tracked"]
        rss, hwm = memory_kib(pid)
        print("\n".join(collection_report(opts.connections, tracked, t0, t1, p0, p1, CLK_TCK, rss, hwm)))
    except (RuntimeError, TimeoutError) as e:
        sys.exit(f"bench.py --collection: {e}")
    finally:
        if agent:
            agent.close(10)
        stop_holders(holders)
        log(f"logs: {work}")
