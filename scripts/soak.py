#!/usr/bin/env python3
"""Soak: the agent under steady churn for a long time, sampled every minute (`make soak`; not in CI).

Load, all at once for --minutes (default 30):
  - short loopback TCP connections at --rate per second (default 1,000), 100 bytes each way
    (scripts/conn-workload.c `short`, which writes the ground truth of every connection);
  - --held connections (default 20,000) open the whole time (`hold`);
  - a container started and one stopped every second (busybox, on the local dockerd);
  - two API readers: one reads every interval as it comes (/api/v1/intervals?after=) and adds up
    the churn's bytes, the other reads /api/v1/connections and /status in a loop.

Every second the agent's RSS, heap in use (/status `memory`, from glibc: what is allocated,
whatever the RSS still holds of what was freed), open fds and threads (/proc/PID); every minute,
from /status, its tracked connections and every loss counter. Each minute keeps the floor (the
lowest of its samples: what the agent keeps, not a report being built or a request being served)
and the peak of each; for fds also what the peak's extra fds were. Pass: after warm-up (the first
third, at least 5 min) the floors of the RSS and of the heap in use grow less than 1 MiB per hour
(Theil-Sen slope: the median of the slopes between every two minutes, which one odd minute cannot
move; the least-squares slope and its standard error are printed beside it), every minute's fd and
thread floor is within 2 of the first after warm-up, and every byte the churn carried is in the
intervals read unless /status counted a loss. The table goes to docs/soak.md, a section per mode.

  scripts/soak.py --mode ebpf|ebpfless [--minutes 30] [--rate 1000] [--held 20000]
"""
import argparse
import fcntl
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
from cnmbench.collectors import agent_lost  # noqa: E402
from cnmbench.system import AGENT, ROOT, free_port, log, stop_process, wait_until  # noqa: E402
from cnmbench.workloads import BUSYBOX, build  # noqa: E402

MODES = {
    "ebpf": {},
    "ebpfless": {"DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true"},
}


class Agent:
    def __init__(self, mode, run_dir, interval):
        self.port = free_port()
        env = dict(os.environ, **MODES[mode])
        env.update({
            "DD_CNM_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS": str(interval),
            "DD_CNM_TERMINAL": "never",
            "DD_LOG_LEVEL": "warn",
        })
        self.err = open(os.path.join(run_dir, "agent.err"), "w")
        self.proc = subprocess.Popen([AGENT], env=env, stdout=subprocess.DEVNULL, stderr=self.err)

        def healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}); see {run_dir}/agent.err")
            try:
                return self.get("/status", 2).get("healthy")
            except OSError:
                return False

        wait_until(healthy, 60, "agent healthy", 0.2)
        status = self.get("/status")
        if status.get("mode") != mode:
            raise RuntimeError(f"asked for {mode}, the agent runs {status.get('mode')}: {status.get('mode_reason')}")

    def get(self, path, timeout=30):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return json.load(r)

    def sample(self):
        """RSS (KiB), the kinds of the open fds (a Counter) and the threads of the agent process."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            text = f.read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
        threads = int(re.search(r"Threads:\s+(\d+)", text).group(1))
        return rss, fd_kinds(f"/proc/{self.proc.pid}/fd"), threads


def fd_kinds(directory):
    """What each open fd is: "socket", "pipe", "anon_inode:[eventpoll]", or a path's first two parts."""
    kinds = Counter()
    for fd in os.listdir(directory):
        try:
            target = os.readlink(os.path.join(directory, fd))
        except OSError:
            continue  # closed between the listing and the link
        if target.startswith(("socket:", "pipe:")):
            target = target.split(":")[0]
        elif target.startswith("/"):
            target = "/".join(target.split("/")[:3])
        kinds[target] += 1
    return kinds


class IntervalReader(threading.Thread):
    """Reads every interval once, in order, and adds up outgoing bytes by remote port."""

    def __init__(self, agent, stop):
        super().__init__(daemon=True)
        self.agent, self.stop = agent, stop
        self.after = None
        self.sequences = []
        self.bytes_by_port = {}
        self.errors = 0

    def read(self):
        path = "/api/v1/intervals" + (f"?after={self.after}" if self.after is not None else "")
        for interval in self.agent.get(path).get("intervals", []):
            seq = interval["sequence"]
            if self.after is not None and seq <= self.after:
                continue
            self.sequences.append(seq)
            self.after = seq
            for c in interval.get("connections", []):
                if c.get("type") == "tcp" and c.get("direction") == "outgoing":
                    port = c["raddr"]["port"]
                    sent, received = self.bytes_by_port.get(port, (0, 0))
                    self.bytes_by_port[port] = (sent + c.get("bytes_sent", 0), received + c.get("bytes_received", 0))

    def run(self):
        while not self.stop.wait(1):
            try:
                self.read()
            except (OSError, ValueError):
                self.errors += 1


class StatusReader(threading.Thread):
    """The second API reader: the last interval and /status, over and over."""

    def __init__(self, agent, stop):
        super().__init__(daemon=True)
        self.agent, self.stop = agent, stop
        self.reads = 0
        self.errors = {}

    def run(self):
        while not self.stop.wait(0.5):
            try:
                self.agent.get("/api/v1/connections")
                self.agent.get("/status")
                self.reads += 1
            except (OSError, ValueError) as e:
                kind = f"{type(e).__name__}: {e}"[:80]
                self.errors[kind] = self.errors.get(kind, 0) + 1


class ContainerChurn(threading.Thread):
    """Starts a container every second and removes the one started the second before."""

    def __init__(self, stop):
        super().__init__(daemon=True)
        self.stop = stop
        self.started = 0
        self.removed = 0
        self.failures = 0
        self.previous = None

    def docker(self, *args):
        r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.failures += 1
        return r

    def run(self):
        n = 0
        while not self.stop.is_set():
            began = time.monotonic()
            name = f"cnm-soak-{os.getpid()}-{n}"
            n += 1
            if self.docker("run", "-d", "--name", name, BUSYBOX, "sleep", "600").returncode == 0:
                self.started += 1
            if self.previous and self.docker("rm", "-f", self.previous).returncode == 0:
                self.removed += 1
            self.previous = name
            self.stop.wait(max(0, 1 - (time.monotonic() - began)))
        if self.previous and self.docker("rm", "-f", self.previous).returncode == 0:
            self.removed += 1


def robust_slope_per_hour(points):
    """Theil-Sen slope of (minute, value) points, per hour: the median of the pairwise slopes."""
    slopes = sorted((y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:]
                    if x2 != x1)
    if not slopes:
        return 0.0
    middle = len(slopes) // 2
    return 60 * (slopes[middle] if len(slopes) % 2 else (slopes[middle - 1] + slopes[middle]) / 2)


def slope_per_hour(points):
    """Least-squares slope of (minute, value) points, per hour, and its standard error."""
    n = len(points)
    if n < 3:
        return 0.0, float("inf")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in points) / (n - 2)
    return 60 * slope, 60 * (residual / sxx) ** 0.5


def write_section(out, mode, text):
    """Replaces (or adds) this mode's section of the soak report (locked: two modes may soak at once)."""
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_section_locked(out, mode, text)


def write_section_locked(out, mode, text):
    head = "# Soak runs\n\nWritten by `make soak` (scripts/soak.py): see its header for the load and the pass rule.\n"
    doc = open(out).read() if os.path.exists(out) else head
    begin, end = f"<!-- soak:{mode} -->", f"<!-- /soak:{mode} -->"
    block = f"{begin}\n{text}{end}\n"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end) + 1:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    with open(out, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), required=True)
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES", 30)))
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--held", type=int, default=20000)
    ap.add_argument("--interval", type=int, default=10, help="the agent's report interval (s)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "soak.md"))
    ap.add_argument("--note", default="", help="a sentence for the report (what else ran meanwhile)")
    opts = ap.parse_args()

    run_dir = os.path.join(ROOT, ".build", "soak", opts.mode)
    os.makedirs(run_dir, exist_ok=True)
    workload = os.path.join(ROOT, ".build", "soak", "conn-workload")
    build(workload)
    seconds = int(opts.minutes * 60)

    agent = Agent(opts.mode, run_dir, opts.interval)
    log(f"agent pid {agent.proc.pid} on port {agent.port}, mode {opts.mode}")
    # As many holding processes as the hard limit on open files needs (two fds per connection).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per = opts.held if hard == resource.RLIM_INFINITY else max(1000, min(opts.held, (hard - 1024) // 2))
    holders = []
    for i, left in enumerate(range(opts.held, 0, -per)):
        holder = subprocess.Popen([workload, "hold", str(min(per, left)), "1", "64"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, CONN_WORKLOAD_TRUTH=os.path.join(run_dir, f"held-{i}.tsv")))
        for line in holder.stderr:
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError(f"conn-workload hold exited ({holder.wait()})")
        holders.append(holder)
    log(f"{opts.held} connections held")

    stop = threading.Event()
    intervals, status_reader, containers = IntervalReader(agent, stop), StatusReader(agent, stop), ContainerChurn(stop)
    for t in (intervals, status_reader, containers):
        t.start()
    truth = os.path.join(run_dir, "churn.tsv")
    churn = subprocess.Popen([workload, "short", str(opts.rate * seconds), str(opts.rate), "100"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, CONN_WORKLOAD_TRUTH=truth))

    # RSS swings by hundreds of MiB within a minute (a report of 60,000 connections is built and
    # served as JSON, then freed), and fds by a few (API requests, Docker calls): one sample a minute
    # would be noise. Each minute's row has the lowest and highest of its one-second samples; the
    # lowest is what the agent keeps.
    rows = []
    began = time.monotonic()
    window = {"rss": [], "heap": [], "fds": [], "threads": []}
    floor_kinds = peak_kinds = None
    for minute in range(0, int(opts.minutes) + 1):
        while True:
            rss, kinds, threads = agent.sample()
            fds = sum(kinds.values())
            window["rss"].append(rss)
            window["threads"].append(threads)
            if not window["fds"] or fds < min(window["fds"]):
                floor_kinds = kinds
            if not window["fds"] or fds > max(window["fds"]):
                peak_kinds = kinds
            window["fds"].append(fds)
            try:
                window["heap"].append(agent.get("/status", 30)["memory"]["heap_in_use_bytes"] // 1024)
            except (OSError, ValueError, KeyError):
                pass
            wait = began + 60 * minute - time.monotonic()
            if wait <= 0:
                break
            time.sleep(min(1, wait))
        status = agent.get("/status")
        heap_now = (status.get("memory") or {}).get("heap_in_use_bytes", 0) // 1024
        window["heap"] = window["heap"] or [heap_now]
        row = {k: (min(v), max(v)) for k, v in window.items()}
        row.update(minute=minute, heap_samples=len(window["heap"]),
                   tracked=(status.get("tracker") or {}).get("tracked"), lost=agent_lost(status),
                   extra_fds=peak_kinds - floor_kinds)
        rows.append(row)
        window = {"rss": [rss], "heap": [], "fds": [fds], "threads": [threads]}
        floor_kinds = peak_kinds = kinds
        log(f"min {minute}: rss {row['rss'][0] / 1024:.1f}-{row['rss'][1] / 1024:.1f} MiB, "
            f"heap {row['heap'][0] / 1024:.1f}-{row['heap'][1] / 1024:.1f} MiB ({row['heap_samples']} samples), "
            f"fds {row['fds'][0]}-{row['fds'][1]} (+{dict(row['extra_fds'])}), threads {row['threads'][0]}-{row['threads'][1]}, "
            f"tracked {row['tracked']}, lost {row['lost'] or 0}, containers {containers.started}/{containers.removed}")
        if agent.proc.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.proc.returncode})")

    out, err = churn.communicate(timeout=seconds + 300)
    if churn.returncode != 0:
        raise RuntimeError(f"churn workload failed: {err.strip()}")
    result = json.loads(out.strip().splitlines()[-1])
    # Two more intervals: the last churn connections are reported.
    last = intervals.after
    wait_until(lambda: intervals.after is not None and intervals.after >= (last or 0) + 2, 4 * opts.interval + 60,
               "two more intervals", 0.5)
    stop.set()
    for t in (intervals, status_reader, containers):
        t.join(timeout=90)
    intervals.read()
    status = agent.get("/status")
    lost = agent_lost(status)
    for holder in holders:
        holder.stdin.close()
        holder.wait(timeout=120)
    stop_process(agent.proc)

    expected_sent = expected_received = 0
    with open(truth) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            expected_sent += int(fields[5])
            expected_received += int(fields[6])
    got_sent, got_received = intervals.bytes_by_port.get(result["port"], (0, 0))
    missed = intervals.sequences and intervals.sequences[-1] - intervals.sequences[0] + 1 - len(intervals.sequences)

    warm = max(5, int(opts.minutes / 3))
    after = [r for r in rows if r["minute"] >= warm]
    rss_points = [(r["minute"], r["rss"][0] / 1024) for r in after]
    heap_points = [(r["minute"], r["heap"][0] / 1024) for r in after]
    growth, heap_growth = robust_slope_per_hour(rss_points), robust_slope_per_hour(heap_points)
    (ls_growth, ls_error), (ls_heap, ls_heap_error) = slope_per_hour(rss_points), slope_per_hour(heap_points)
    fd_drift = max((abs(r["fds"][0] - after[0]["fds"][0]) for r in after), default=0)
    thread_drift = max((abs(r["threads"][0] - after[0]["threads"][0]) for r in after), default=0)
    bytes_ok = (got_sent, got_received) == (expected_sent, expected_received) or bool(lost)
    verdict = {
        "heap in use (floor) grows < 1 MiB/h after warm-up": heap_growth < 1,
        "RSS floor grows < 1 MiB/h after warm-up": growth < 1,
        "fd floor flat (±2)": fd_drift <= 2,
        "thread floor flat (±2)": thread_drift <= 2,
        "every churn byte reported, or the loss counted": bytes_ok and not missed,
    }

    text = [f"## {opts.mode}\n",
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {opts.minutes:g} min, {os.uname().release}, "
            f"{os.cpu_count()} CPUs. Load: {result['connections']:,} short connections at {opts.rate}/s "
            f"(achieved {result.get('rate', 0):,.0f}/s), {opts.held:,} held, {containers.started} containers "
            f"started and {containers.removed} removed ({containers.failures} docker failures), "
            f"{len(intervals.sequences)} intervals read ({missed or 0} missed, {intervals.errors} read errors), "
            f"{status_reader.reads} reads of /api/v1/connections + /status "
            f"(errors: {', '.join(f'{k} ×{v}' for k, v in status_reader.errors.items()) or 'none'}). "
            f"{opts.note}\n",
            "| minute | RSS floor–peak (MiB) | heap in use, floor–peak (MiB) | fds floor–peak | the peak's extra fds | "
            "threads | tracked | lost (from /status) |",
            "|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(r["extra_fds"].items())) or "–"
        text.append(f"| {r['minute']} | {r['rss'][0] / 1024:.1f}–{r['rss'][1] / 1024:.1f} | "
                    f"{r['heap'][0] / 1024:.1f}–{r['heap'][1] / 1024:.1f} | {r['fds'][0]}–{r['fds'][1]} | {extra} | "
                    f"{r['threads'][0]}–{r['threads'][1]} | {r['tracked']} | "
                    f"{', '.join(f'{k} {v}' for k, v in r['lost'].items()) or '0'} |")
    text.append("")
    text.append(f"After warm-up (minute {warm} on), Theil-Sen slopes (least squares ± one standard error): heap in use "
                f"(floor) {heap_growth:+.2f} MiB/h ({ls_heap:+.2f} ± {ls_heap_error:.2f}), RSS floor {growth:+.2f} MiB/h "
                f"({ls_growth:+.2f} ± {ls_error:.2f}); fd floor within ±{fd_drift}, thread floor within ±{thread_drift}. "
                f"Churn bytes reported: {got_sent:,} sent / {got_received:,} received of "
                f"{expected_sent:,} / {expected_received:,}; losses counted at the end: {lost or 'none'}.\n")
    for rule, ok in verdict.items():
        text.append(f"- {'pass' if ok else 'FAIL'}: {rule}")
    text.append("")
    write_section(opts.out, opts.mode, "\n".join(text) + "\n")
    log("\n".join(text))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
