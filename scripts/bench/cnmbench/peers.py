"""Benchmarks cnm-agent against peers: overhead, accuracy and scale, side by side in one run.

Collectors: none (baseline), cnm-agent in each eBPF strategy (sock_length, kernel_counters) and in
eBPF-less mode (packet capture on), pmacctd (pmacct 1.7.7, libpcap flow accounting, print plugin
aggregated per 4-tuple) and bpftrace (a minimal program on the agent's tracepoints, scripts/bench/acct.bt);
for some workloads also agent-intake, the agent shipping to a stand-in intake on 127.0.0.1.

Workloads (scripts/conn-workload.c, which writes the ground truth per connection: 4-tuple and payload
bytes each way): churn (short TCP connections at fixed rates), bulk (a few connections at full
loopback throughput), many (N concurrent long-lived connections, light traffic), udp (request/reply
datagrams at a fixed rate), containers (busybox containers started every second, each making three
TCP requests to a server on docker0, then exiting). many-50k-capped is many-50k for the agent alone,
its cgroup limited to 128 MiB before it starts: OOM kills, whether it lived and its memory are reported.

Each (workload, collector) run starts a fresh collector, waits until it is ready (the agent: /status
healthy; bpftrace: its BEGIN probe; pmacctd: its log), runs the workload, waits until the collector has
reported everything (the agent: two reports that began after the workload ended; bpftrace and
pmacctd: stopped with SIGINT, their output written at exit), then compares with the ground truth.

Collector CPU: user + system of its own cpuacct cgroup (every process and thread, also ones that exited),
from the workload's start until the collector reported (the agent) or exited (bpftrace, pmacctd: their
final dump included). RSS: VmRSS (steady, at the end) and VmHWM (peak), summed over the collector's
processes. After the runs: the agent's instructions per closed connection, callgrind's count over
cnm-collection-bench when it is built (cnmbench/instructions.py). Judges nothing: the exit status says
whether the harness worked (every collector started, every workload ran and accuracy could be
computed), not whether the numbers are good.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from . import instructions
from .accuracy import accuracy
from .collectors import AGENTS, COLLECTORS, Agent, make_collector
from .report import chart, fmt, instructions_line, report, throughput
from .system import AGENT, ROOT, cleanup, failures, log, machine
from .workloads import Workload, build, wl_bulk, wl_churn, wl_containers, wl_many, wl_udp


class Config:
    pass


MEMORY_CAP = 128 << 20  # many-50k-capped: the agent's cgroup memory.max


def plan(quick):
    """(workload name, function, args, collectors, the collector cgroup's memory limit or None)."""
    if quick:
        return [
            ("churn-1k", wl_churn, (1000, 2), COLLECTORS + ["agent-intake"], None),
            ("bulk", wl_bulk, (256 << 20, 2), ["none", "agent-sock_length"], None),
            ("udp-500", wl_udp, (500, 2), ["none", "agent-sock_length"], None),
        ]
    return [
        ("churn-1k", wl_churn, (1000, 5), COLLECTORS, None),
        ("churn-5k", wl_churn, (5000, 5), COLLECTORS + ["agent-intake"], None),
        ("churn-10k", wl_churn, (10000, 4), COLLECTORS, None),
        ("bulk", wl_bulk, (3 << 30, 3), COLLECTORS, None),
        ("udp-2k", wl_udp, (2000, 5), COLLECTORS, None),
        ("many-10k", wl_many, (10000,), COLLECTORS + ["agent-intake"], None),
        ("many-50k", wl_many, (50000,), COLLECTORS, None),
        ("many-50k-capped", wl_many, (50000,), AGENTS, MEMORY_CAP),
        ("containers", wl_containers, (10,), COLLECTORS, None),
    ]


def expected_connections(fn, args):
    if fn in (wl_churn,):
        return args[0] * args[1]
    if fn is wl_many:
        return args[0]
    if fn is wl_udp:
        return args[0] * args[1] // 50 + 10
    return 1000


def run_one(cfg, wname, fn, args, cname, memory_max=None):
    run_dir = os.path.join(cfg.out, "runs", f"{wname}.{cname}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    res = {"workload": wname, "collector": cname, "ok": False}
    c = make_collector(cname, run_dir, cfg, wname, expected_connections(fn, args))
    c.memory_max = memory_max
    w = Workload(cfg, run_dir)
    try:
        c.start()
        if isinstance(c, Agent):
            res["ran"] = c.ran
        # the collector's idle rate, after its start-up work: subtracted from the window below
        time.sleep(cfg.settle_s)
        i0, it0 = c.cpu_s(), time.monotonic()
        time.sleep(cfg.idle_s)
        cpu0, t0 = c.cpu_s(), time.monotonic()
        idle_rate = (cpu0 - i0) / (t0 - it0) if cpu0 is not None else None
        res["idle_cpu_ms_per_s"] = idle_rate * 1000 if idle_rate is not None else None
        wj = fn(w, c, *args)
        res["workload_result"] = wj
        res["workload_cpu_s"] = wj.get("cpu_s")
        mem = getattr(w, "held_memory", None) or c.memory()
        obs = c.finish()
        cpu1 = c.cpu_s()
        with open(os.path.join(run_dir, "observed.tsv"), "w") as f:
            for o in obs:
                f.write("\t".join(map(str, o)) + "\n")
        res["window_s"] = time.monotonic() - t0
        if cpu0 is not None and cpu1 is not None:
            res["collector_cpu_gross_s"] = cpu1 - cpu0
            res["collector_cpu_s"] = max(0.0, cpu1 - cpu0 - idle_rate * res["window_s"])
        res["rss_kib"], res["hwm_kib"] = mem
        res["lost"] = c.lost
        res["notes"] = c.notes
        res.update(c.figures)
        truth = w.truth()
        if not truth:
            raise RuntimeError("no ground truth rows: accuracy cannot be computed")
        # what CPU per 1k connections divides by: the workload's own count (many: those held), or for UDP the
        # flows of its ground truth
        res["connections_made"] = wj.get("connections") or len({row[:5] for row in truth})
        if c.kind == "bpftrace" and fn is wl_udp:
            c.notes.append("accuracy not computed: the bpftrace program accounts TCP only")
        elif cname != "none":
            res["accuracy"] = accuracy(truth, obs, c.kind)
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 -- every failure is reported, the run goes on
        res["error"] = f"{type(e).__name__}: {e}"
        failures.append(f"{wname} / {cname}: {res['error']}")
        log(f"  FAILED: {res['error']}")
    finally:
        if memory_max:
            res["memory_cap"] = c.memory_cap()
            log(f"  memory cap: {res['memory_cap']}")
        c.close()
    return res


def run(opts):
    """The whole benchmark; opts: the command line (see cli.py)."""
    if os.geteuid() != 0:
        sys.exit("bench.py: run as root (the agent, bpftrace and pmacctd need it)")
    cfg = Config()
    cfg.out = os.path.abspath(opts.out or os.path.join(ROOT, ".build", "bench-quick" if opts.quick else "bench"))
    cfg.interval = 2 if opts.quick else 3
    cfg.bpftrace_keys = 1 << 20
    cfg.settle_s = 1.0
    cfg.idle_s = 1.0 if opts.quick else 2.0
    cfg.memory_cap = MEMORY_CAP
    cfg.command = "make bench-quick" if opts.quick else "make bench"
    os.makedirs(cfg.out, exist_ok=True)
    cfg.workload_bin = os.path.join(cfg.out, "conn-workload")
    build(cfg.workload_bin)
    if not os.access(AGENT, os.X_OK):
        sys.exit(f"bench.py: {AGENT} missing (make release)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.path.exists("/sys/kernel/tracing/events/sock"):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", "/sys/kernel/tracing"], check=False)
    mach = machine()
    t0 = time.monotonic()
    results = []
    only_c = set(filter(None, opts.only_collectors.split(",")))
    only_w = set(filter(None, opts.only_workloads.split(",")))
    try:
        for wname, fn, args, collectors, memory_max in plan(opts.quick):
            if only_w and wname not in only_w:
                continue
            for cname in collectors:
                if only_c and cname not in only_c and cname != "none":
                    continue
                log(f"{wname} / {cname}")
                r = run_one(cfg, wname, fn, args, cname, memory_max)
                results.append(r)
                if r["ok"]:
                    a = r.get("accuracy") or {}
                    log(f"  collector CPU {fmt((r.get('collector_cpu_s') or 0) * 1000, '.0f')} ms, workload CPU "
                        f"{fmt((r.get('workload_cpu_s') or 0) * 1000, '.0f')} ms, throughput {throughput(r)[0]}, "
                        f"seen {a.get('seen')}/{a.get('connections')}, exact {a.get('exact')}, lost {r.get('lost')}")
        ins = instructions.measure()  # alone on the machine, after the runs (about 10 s)
        log(instructions_line(ins))
    finally:
        cleanup()
    elapsed = time.monotonic() - t0
    json.dump({"machine": mach, "results": results, "failures": failures, "elapsed_s": elapsed,
               "instructions": ins, "plan": [(w, f.__name__, a, c, m) for w, f, a, c, m in plan(opts.quick)]},
              open(os.path.join(cfg.out, "results.json"), "w"), indent=1, default=str)
    md = report(cfg, results, mach, elapsed, ins)
    open(os.path.join(cfg.out, "results.md"), "w").write(md)
    have_chart = chart(results, os.path.join(cfg.out, "bench.png"))
    print(md)
    if opts.publish:
        os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
        text = md
        if have_chart:
            shutil.copy(os.path.join(cfg.out, "bench.png"), os.path.join(ROOT, "docs", "bench.png"))
            text = md.replace("\n| workload |", "\n![collector CPU, accuracy and memory](docs/bench.png)\n\n| workload |", 1)
        open(os.path.join(ROOT, "BENCHMARKS.md"), "w").write(text)
        log("wrote BENCHMARKS.md and docs/bench.png")
    log(f"done in {elapsed:.0f} s; results in {cfg.out}")
    if failures:
        log(f"{len(failures)} run(s) failed: the harness did not work end to end")
        sys.exit(1)
