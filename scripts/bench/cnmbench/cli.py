"""Benchmarks cnm-agent against peers: overhead, accuracy and scale, side by side in one run.

Collectors: none (baseline), cnm-agent in each eBPF strategy (sock_length, kernel_counters) and in
eBPF-less mode (packet capture on), pmacctd (pmacct 1.7.7, libpcap flow accounting, print plugin
aggregated per 4-tuple) and bpftrace (a minimal program on the agent's tracepoints, scripts/bench/acct.bt).

Workloads (scripts/conn-workload.c, which writes the ground truth per connection: 4-tuple and payload
bytes each way): churn (short TCP connections at fixed rates), bulk (a few connections at full
loopback throughput), many (N concurrent long-lived connections, light traffic), udp (request/reply
datagrams at a fixed rate), containers (busybox containers started every second, each making three
TCP requests to a server on docker0, then exiting).

Each (workload, collector) run starts a fresh collector, waits until it is ready (the agent: /status
healthy; bpftrace: its BEGIN probe; pmacctd: its log), runs the workload, waits until the collector has
reported everything (the agent: two reports that began after the workload ended; bpftrace and
pmacctd: stopped with SIGINT, their output written at exit), then compares with the ground truth.

Collector CPU: user + system of its own cpuacct cgroup (every process and thread, also ones that exited),
from the workload's start until the collector reported (the agent) or exited (bpftrace, pmacctd: their
final dump included). RSS: VmRSS (steady, at the end) and VmHWM (peak), summed over the collector's
processes. Judges nothing: the exit status says whether the harness worked (every collector started,
every workload ran and accuracy could be computed), not whether the numbers are good.

usage: bench.py [--quick] [--publish] [--out DIR] [--only-collectors a,b] [--only-workloads a,b]
"""
import argparse

from . import peers


def parser():
    ap = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small subset with short durations (CI)")
    ap.add_argument("--publish", action="store_true", help="copy the results to BENCHMARKS.md and docs/bench.png")
    ap.add_argument("--out", help="results directory (default .build/bench, with --quick .build/bench-quick)")
    ap.add_argument("--only-collectors", default="")
    ap.add_argument("--only-workloads", default="")
    return ap


def main(argv=None):
    opts = parser().parse_args(argv)
    peers.run(opts)
