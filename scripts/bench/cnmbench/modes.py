"""What each collection mode costs (bench.py --modes; make bench-modes).

The agent's CPU per 1,000 short-lived loopback connections and per GiB sent over one connection (also
as a share of the workload's own CPU), the kernel-side run time of the agent's eBPF programs (paid by
the workload, inside its system calls), and the agent's resident memory with 10,000 open connections.
Reports numbers; judges nothing.

Modes (--modes MODE,..., or MODES="a b"; default sock_length, kernel_counters, ebpfless): sock_length and
kernel_counters (DD_CNM_EBPF_STRATEGY=<name>), ebpfless (DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true, packet
capture on). Also: ebpfless-no-capture (DD_CNM_PACKET_CAPTURE=false), and ebpfless-sampled /
ebpfless-sampled-no-capture, the same without destroy notifications (DD_CNM_DESTROY_NOTIFICATIONS=false).
The mode the agent actually ran, as /status reports it, is printed beside the one asked for: a build or
kernel without eBPF shows up there.

Phases, in this order:
  memory: --connections (CONNECTIONS, default 10,000) loopback connections held open by
    scripts/hold-connections.py; per mode an agent is started, and VmRSS/VmHWM are read once it has made
    two reports.
  cpu: per mode a fresh agent, no held connections (and none of the workload's TIME_WAIT sockets left:
    each window waits for them); the agent's idle CPU rate is measured over --idle-seconds before the
    workloads and again after them. In between, `conn-workload bulk 1073741824` runs, its window ending
    after the agent's second sample that follows it, then `conn-workload short 10000 5000 100`, its
    window ending once the agent has made a report after it and the TIME_WAIT sockets it left have
    expired (the server's side of each connection stays in TIME_WAIT for 60 s, and a mode that reads
    every socket each sample pays for them all that time). The agent's idle CPU (mean of the two idle
    rates) for the window's length is subtracted.
Agent CPU is its cgroup's CPU usage in ns (one cgroup for every agent of the run; /proc/<pid>/stat ticks
without one). BPF run time is the change in the sum of run_time_ns of the cnm_* programs the agent holds
(found through its fds' prog_id), with kernel.bpf_stats_enabled=1 during the eBPF runs when it can be
set; that time is spent inside the workload's system calls and is already part of the workload's CPU.

Knobs, as flags or environment variables: --connections (CONNECTIONS), --interval (INTERVAL, report
interval s, default 10), --sample (SAMPLE, sample period s, default 1), --idle-seconds (IDLE_SECONDS,
default 6), --short "N RATE BYTES" (SHORT, default "10000 5000 100"), --bulk-bytes (BULK_BYTES, default
1073741824). The agent is .build/release/cnm-agent as last built (make bench-modes builds it first).
"""
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .collectors import Agent
from .report import modes_report
from .system import AGENT, CLK_TCK, Cgroup, cpu_ticks, log, memory_kib, started, wait_until
from .workloads import build, hold_connections, stop_holders

DEFAULT_MODES = "sock_length kernel_counters ebpfless"
HZ = 1000000000  # cpu_ns() reads nanoseconds
BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def calc(v, digits=3):
    """v as a decimal string of that many digits. Every figure is kept as such a string, and later ones are
    computed from those strings, so that the numbers are rounded at the same steps as they always were."""
    return f"{v:.{digits}f}"


def jget(d, path):
    """The value at a key path (dots) of parsed JSON as printed, or "?" when it is missing."""
    v = d
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return "?" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))


def describe(status):
    """What ran, from /status: (mode, chosen strategies, reason and the strategy keys)."""
    chosen = ",".join(x["name"] for x in status.get("strategies", []) if x.get("chosen")) or "?"
    extra = "".join(" %s=%s" % (k, status[k]) for k in ("strategy", "ebpf_strategy") if k in status)
    return str(status.get("mode", "?")), chosen, "%s%s" % (status.get("mode_reason", ""), extra)


def bpf_ns(pid):
    """(hooks, iterators): the sum of run_time_ns over the BPF programs named cnm_* that pid holds an fd of
    (a program or a link), iterator programs (cnm_iter_*, run by the agent's own reads, so inside its CPU)
    apart; None where there are none or bpftool cannot tell. Programs other processes loaded (tests
    running beside) are not counted."""
    if not shutil.which("bpftool"):
        return None, None
    ids = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(fdinfo)
    except OSError:
        fds = []
    for fd in fds:
        try:
            with open(os.path.join(fdinfo, fd)) as f:
                ids.update(int(line.split()[1]) for line in f if line.startswith("prog_id:"))
        except (OSError, ValueError, IndexError):
            pass
    if not ids:
        return None, None
    try:
        out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, timeout=60).stdout
        progs = [p for p in json.loads(out) if p.get("id") in ids and p.get("name", "").startswith("cnm_")]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None, None
    hooks = [p.get("run_time_ns", 0) for p in progs if not p["name"].startswith("cnm_iter")]
    iters = [p.get("run_time_ns", 0) for p in progs if p["name"].startswith("cnm_iter")]
    return (sum(hooks) if hooks else None), (sum(iters) if iters else None)


def time_wait(port=None):
    """TIME_WAIT sockets on the host, or those whose local port is port (the workload's server side)."""
    argv = ["ss", "-Htan", "state", "time-wait"] + ([f"( sport = :{port} )"] if port is not None else [])
    try:
        return len(subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        return 0


def read_bpf_stats():
    try:
        return open(BPF_STATS).read().strip()
    except OSError:
        return ""


def set_bpf_stats(value):
    try:
        with open(BPF_STATS, "w") as f:
            f.write(str(value))
        return True
    except OSError:
        return False


def na(v):
    return "na" if v is None else str(v)


class Run:
    """One --modes run: its settings, the shared cgroup, the agent now running and the figures so far."""

    def __init__(self, opts):
        self.modes = opts.modes
        self.connections = opts.connections
        self.interval = opts.interval
        self.sample = opts.sample  # as given: passed to the agent and printed so
        self.sample_s = float(opts.sample)
        self.idle_seconds = opts.idle_seconds
        self.short_n, self.short_rate, self.short_bytes = opts.short
        self.bulk_bytes = opts.bulk_bytes
        self.work = opts.out
        self.workload = os.path.join(self.work, "conn-workload")
        self.cgroup = None
        self.agent = None
        # per mode: ran, chosen, reason, rss, hwm, tracked, cpu_k, pct_k, cpu_g, pct_g, bpf_k, bpf_g, idle,
        # details, notes (the report's columns and lines)
        self.r = {m: {"notes": ""} for m in self.modes}

    def note(self, m, text):
        self.r[m]["notes"] += text

    # ---- the agent ----

    def cpu_ns(self):
        """The agent's CPU: its cgroup's usage (ns), or without one utime + stime in clock ticks."""
        if self.cgroup.path:
            return self.cgroup.cpu_ns()
        return int(cpu_ticks(self.agent.proc.pid) * 1e9 / CLK_TCK)

    def start_agent(self, mode, name):
        """Starts the agent in mode and waits (up to 120 s) until its first collection is done."""
        a = Agent(mode, os.path.join(self.work, name), self, mode, interval=self.interval, sample=self.sample)
        os.makedirs(a.run_dir, exist_ok=True)
        a.shared_cgroup = self.cgroup
        self.agent = a
        try:
            a.launch(timeout=120)
            return True
        except (RuntimeError, TimeoutError, OSError) as e:
            if isinstance(e, TimeoutError):
                log(f"agent ({mode}) not healthy after 120 s; its log:")
            elif a.proc and a.proc.poll() is not None:
                log(f"agent ({mode}) exited before its first collection; its log:")
            else:
                log(f"agent ({mode}) did not start: {e}")
            for f in ("agent.out", "agent.err"):
                try:
                    for line in open(os.path.join(a.run_dir, f)).read().splitlines()[-20:]:
                        print(line, file=sys.stderr)
                except OSError:
                    pass
            self.stop_agent()
            return False

    def stop_agent(self):
        if self.agent:
            self.agent.close(10)
            self.agent = None

    def status(self):
        """/status, or {} when the agent does not answer."""
        try:
            return self.agent.get("/status")
        except (OSError, ValueError):
            return {}

    def counter(self, key):
        v = self.status().get(key)
        return v if isinstance(v, int) else -1

    def describe(self, m):
        s = self.status()
        if s:
            self.r[m]["ran"], self.r[m]["chosen"], self.r[m]["reason"] = describe(s)

    def wait_report_after(self, n, limit=None):
        """Waits until the agent has made more than n reports, for at most limit s (default interval + 15)."""
        limit = limit if limit is not None else self.interval + 15
        try:
            wait_until(lambda: self.counter("reports") > n, limit, "report", 0.25)
            return True
        except TimeoutError:
            log(f"no report within {limit} s")
            return False

    # ---- one workload ----

    def measure(self, *args):
        """Runs conn-workload with args and waits for the agent's work on it to end: "bulk": two samples
        later; "short": a report later and once its TIME_WAIT sockets are gone (at most 90 s). /status is
        asked as little as possible meanwhile: each request costs the agent a little CPU. Returns the
        window's figures (strings, as calc() rounds them; None when it failed): w_json, w_cpu (the
        workload's CPU s), a_gross (agent CPU s in the window), a_during (during the workload only),
        a_report (through two samples / the first report after it), window (s), tw_end (its TIME_WAIT
        sockets when it ended), bpf and bpf_iter (ns or None)."""
        pid = self.agent.proc.pid
        p, r = self.counter("polls"), self.counter("reports")
        b0, i0 = bpf_ns(pid)
        t0, s0 = self.cpu_ns(), time.monotonic()
        argv = [self.workload, *map(str, args)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        out, _ = proc.communicate()
        try:
            w = json.loads(out)
        except ValueError:
            w = None
        if proc.returncode != 0 or not isinstance(w, dict):
            log(f"workload {' '.join(map(str, args))} failed")
            return None
        td = self.cpu_ns()
        wport = jget(w, "port")
        tw_end = time_wait(wport)
        if args[0] == "bulk":
            time.sleep(2 * self.sample_s + 0.3)
            try:  # two samples that began after the workload ended
                wait_until(lambda: self.counter("polls") >= p + 3, 30, "sample", 0.25)
            except TimeoutError:
                log("no sample within 30 s")
                return None
            tr = self.cpu_ns()
        else:
            if not self.wait_report_after(r):
                return None
            tr = self.cpu_ns()
            try:
                wait_until(lambda: time_wait(wport) == 0, 90, "TIME_WAIT sockets gone", 1)
            except TimeoutError:
                log("TIME_WAIT sockets still there after 90 s")
            time.sleep(self.sample_s + 0.2)  # one sample without them
        t1 = self.cpu_ns()
        b1, i1 = bpf_ns(pid)
        s1 = time.monotonic()
        with open(os.path.join(self.work, "workload.jsonl"), "a") as f:
            f.write(out.strip() + "\n")
        return {
            "w_json": out.strip(), "w": w, "w_cpu": w["cpu_s"],
            "window": calc(s1 - s0),
            "a_gross": calc((t1 - t0) / HZ), "a_during": calc((td - t0) / HZ), "a_report": calc((tr - t0) / HZ),
            "tw_end": tw_end,
            "bpf": b1 - b0 if b0 is not None and b1 is not None else None,
            "bpf_iter": i1 - i0 if i0 is not None and i1 is not None else None,
        }

    def idle_ticks(self):
        """(CPU ns, seconds) over --idle-seconds."""
        a, s0 = self.cpu_ns(), time.monotonic()
        time.sleep(self.idle_seconds)
        b, s1 = self.cpu_ns(), time.monotonic()
        return b - a, calc(s1 - s0)

    # ---- the phases ----

    def memory_phase(self):
        """One set of held connections, an agent per mode."""
        holders = hold_connections(self.connections, self.work)
        try:
            for m in self.modes:
                log(f"memory: {m}")
                if not self.start_agent(m, f"agent-memory-{m}"):
                    self.note(m, "memory phase: agent did not start. ")
                    continue
                self.describe(m)
                time.sleep(max(0, 2 * self.interval - 3))
                if self.wait_report_after(1, 30):
                    rss, hwm = memory_kib(self.agent.proc.pid)
                    res = self.r[m]
                    res["rss"], res["hwm"] = calc(rss / 1024, 1), calc(hwm / 1024, 1)
                    res["tracked"] = jget(self.status(), "connections_tracked")
                    log(f"  ran {res.get('ran', '')} ({res.get('chosen', '')}): RSS {res['rss']} MiB, peak {res['hwm']} MiB,"
                        f" {res['tracked']} sockets tracked")
                else:
                    self.note(m, "memory phase: no second report. ")
                self.stop_agent()
        finally:
            stop_holders(holders)

    def cpu_phase(self, stats_saved):
        """A fresh agent per mode."""
        for m in self.modes:
            res = self.r[m]
            log(f"cpu: {m}")
            stats = False
            if not m.startswith("ebpfless") and stats_saved:
                stats = set_bpf_stats(1)
                if not stats:
                    self.note(m, "kernel.bpf_stats_enabled could not be set. ")
            if not self.start_agent(m, f"agent-cpu-{m}"):
                self.note(m, "cpu phase: agent did not start. ")
                if stats:
                    set_bpf_stats(stats_saved)
                continue
            self.describe(m)
            log(f"  ran {res.get('ran', '')} (strategies chosen: {res.get('chosen', '')}; {res.get('reason', '')});"
                f" {time_wait()} TIME_WAIT sockets on the host")
            time.sleep(1)  # start-up work (first container tag refresh) out of the way
            idle_t0, idle_s0 = self.idle_ticks()

            bulk = self.measure("bulk", self.bulk_bytes)
            if bulk:
                log(f"  bulk: {bulk['w_json']}")
                log(f"  agent CPU: {bulk['a_during']} s during the workload, {bulk['a_gross']} s in the {bulk['window']} s"
                    f" window (two samples after it); BPF ns: {na(bulk['bpf'])} in hooks, {na(bulk['bpf_iter'])} in iterators")
            else:
                self.note(m, "bulk workload failed. ")
            short = self.measure("short", self.short_n, self.short_rate, self.short_bytes)
            if short:
                log(f"  short: {short['w_json']}")
                log(f"  agent CPU: {short['a_during']} s during the workload, {short['a_report']} s through the next report,"
                    f" {short['a_gross']} s until its {short['tw_end']} TIME_WAIT sockets expired ({short['window']} s window);"
                    f" BPF ns: {na(short['bpf'])} in hooks, {na(short['bpf_iter'])} in iterators")
                res["details"] = (
                    f"short: agent {calc(float(short['a_during']) * 1000, 0)} ms during,"
                    f" {calc(float(short['a_report']) * 1000, 0)} ms through the next report,"
                    f" {calc(float(short['a_gross']) * 1000, 0)} ms through TIME_WAIT expiry ({short['window']} s, gross);"
                    f" workload CPU {calc(short['w_cpu'] * 1000, 0)} ms, {jget(short['w'], 'rate')} conn/s")
                if short["bpf_iter"] is not None:
                    res["details"] += f"; BPF iterators (agent side) {calc(short['bpf_iter'] / 1e6, 1)} ms"
            else:
                self.note(m, "short workload failed. ")
            idle_t1, idle_s1 = self.idle_ticks()
            s = self.status()
            capture_drops = jget(s, "problems.capture_ring_dropped.count")
            log(f"  capture: {jget(s, 'capture')}")
            if capture_drops != "?":
                self.note(m, f"capture ring dropped {capture_drops} packets. ")
            self.stop_agent()
            if stats:
                set_bpf_stats(stats_saved)

            idle_rate = calc((idle_t0 + idle_t1) / HZ / (float(idle_s0) + float(idle_s1)), 6)
            res["idle"] = (f"{calc(idle_t0 * 1000 / HZ / float(idle_s0), 1)} before,"
                           f" {calc(idle_t1 * 1000 / HZ / float(idle_s1), 1)} after")
            log(f"  idle: {res['idle']} ms CPU per second")
            if bulk:
                net = calc(float(bulk["a_gross"]) - float(idle_rate) * float(bulk["window"]), 4)
                gib = calc(self.bulk_bytes / 1073741824, 6)
                res["cpu_g"] = calc(float(net) * 1000 / float(gib), 1)
                res["pct_g"] = calc(100 * float(net) / bulk["w_cpu"], 1)
                if bulk["bpf"] is not None:
                    res["bpf_g"] = calc(bulk["bpf"] / 1e6 / float(gib), 1)
                    log(f"  bulk BPF hooks: {calc(bulk['bpf'] / 1e6, 1)} ms ="
                        f" {calc(100 * bulk['bpf'] / 1e9 / bulk['w_cpu'], 1)}% of the workload's CPU")
            if short:
                net = calc(float(short["a_gross"]) - float(idle_rate) * float(short["window"]), 4)
                res["cpu_k"] = calc(float(net) * 1000 * 1000 / self.short_n, 1)
                res["pct_k"] = calc(100 * float(net) / short["w_cpu"], 1)
                if short["bpf"] is not None:
                    res["bpf_k"] = calc(short["bpf"] / 1e6 * 1000 / self.short_n, 1)
                    log(f"  short BPF hooks: {calc(short['bpf'] / 1e6, 1)} ms ="
                        f" {calc(100 * short['bpf'] / 1e9 / short['w_cpu'], 1)}% of the workload's CPU")
            if not m.startswith("ebpfless") and res.get("ran") == "ebpf" and not res.get("bpf_k"):
                self.note(m, "no BPF run time (stats off?). ")


def die(msg):
    log(f"error: {msg}")
    sys.exit(1)


def run(opts):
    """The whole --modes benchmark; opts: the command line (see cli.py). Exits 1 when a mode did not run."""
    if not opts.out:
        opts.out = tempfile.mkdtemp(prefix="cnm-bench-modes.", dir="/tmp")
    os.makedirs(opts.out, exist_ok=True)
    b = Run(opts)
    stats_saved = ""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        if not os.access(AGENT, os.X_OK):
            die(f"{AGENT} missing (make release)")
        log(f"agent binary: {AGENT}, built {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(os.path.getmtime(AGENT)))}")
        try:
            build(b.workload)
        except (OSError, subprocess.CalledProcessError):
            die("building conn-workload failed")
        b.cgroup = Cgroup("modes")
        if not b.cgroup.path:
            log("no cgroup for the agent: CPU read in clock ticks")
        if b.connections > 0:
            try:
                b.memory_phase()
            except (RuntimeError, TimeoutError) as e:  # the held connections could not be opened
                die(str(e))
        stats_saved = read_bpf_stats()
        b.cpu_phase(stats_saved)
        header = {
            "kernel": platform.release(), "cores": len(os.sched_getaffinity(0)), "interval": b.interval,
            "sample": b.sample, "short": (b.short_n, b.short_rate, b.short_bytes), "bulk_bytes": b.bulk_bytes,
            "connections": b.connections, "cgroup": b.cgroup.path,
        }
        print("\n".join(modes_report(header, b.modes, b.r)))
    finally:
        b.stop_agent()
        if stats_saved:
            set_bpf_stats(stats_saved)
        if b.cgroup:
            b.cgroup.remove()
        log(f"logs and workload output: {b.work}")
    if any(re.search(r"did not start|failed|no second report", b.r[m]["notes"]) for m in b.modes):
        sys.exit(1)
