#!/usr/bin/env python3
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
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AGENT = os.path.join(ROOT, ".build", "release", "cnm-agent")
BUSYBOX = "cnm-test/busybox:latest"
CLK_TCK = os.sysconf("SC_CLK_TCK")

started = []  # every Popen this script started, for cleanup
failures = []  # why the harness did not work


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_until(cond, timeout, what, interval=0.1):
    """Polls cond() until it returns a true value (returned) or timeout s pass (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def stop_process(p, sig=signal.SIGTERM, timeout=30):
    """Signals p, waits up to timeout s, then kills it. Returns its exit status."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} did not exit within {timeout} s of signal {sig}: killing it")
            p.kill()
            p.wait(10)
    return p.returncode


def cleanup():
    for p in started:
        if p.poll() is None:
            stop_process(p, signal.SIGKILL, 10)
    for c in list(Cgroup.live):
        c.remove()
    if shutil.which("docker"):
        ids = subprocess.run(["docker", "ps", "-q", "--filter", "label=cnm-bench=1"], capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "kill", *ids], capture_output=True)


# ---- CPU and memory accounting ----


class Cgroup:
    """A cpuacct cgroup (v1, or v2 cpu.stat) for one collector: CPU of every process and thread in it."""

    live = []

    def __init__(self, name):
        self.path = None
        for base, f in (("/sys/fs/cgroup/cpuacct", "cpuacct.usage"), ("/sys/fs/cgroup", "cpu.stat")):
            if os.path.exists(os.path.join(base, f)):
                path = os.path.join(base, f"cnm-bench-{os.getpid()}-{name}")
                try:
                    os.makedirs(path, exist_ok=True)
                    self.path, self.file = path, f
                    Cgroup.live.append(self)
                except OSError:
                    pass
                break

    def add(self, pid):
        if self.path:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def cpu_s(self):
        if not self.path:
            return None
        text = open(os.path.join(self.path, self.file)).read()
        if self.file == "cpuacct.usage":
            return int(text) / 1e9
        return int(re.search(r"usage_usec (\d+)", text).group(1)) / 1e6

    def remove(self):
        if self.path:
            try:
                os.rmdir(self.path)
            except OSError:
                pass
        if self in Cgroup.live:
            Cgroup.live.remove(self)


def descendants(pid):
    """pid and every process below it."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def memory_kib(pid):
    """(VmRSS, VmHWM) summed over pid and its descendants, KiB."""
    rss = hwm = 0
    for p in descendants(pid):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


def ip_from_u32(v):
    return socket.inet_ntoa(struct.pack("<I", int(v) & 0xFFFFFFFF))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- collectors ----


class Collector:
    """Base: a collector process in a cgroup of its own. Subclasses: start(), reported(), stop()."""

    kind = "none"
    proc = None

    def __init__(self, name, run_dir, cfg):
        self.name, self.run_dir, self.cfg = name, run_dir, cfg
        self.cgroup = None
        self.lost = None  # events lost, as the collector itself reports it
        self.notes = []

    def spawn(self, argv, env=None, **kw):
        self.cgroup = Cgroup(os.path.basename(self.run_dir))
        out = open(os.path.join(self.run_dir, f"{self.kind}.out"), "w")
        err = open(os.path.join(self.run_dir, f"{self.kind}.err"), "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, **kw)
        started.append(self.proc)
        self.cgroup.add(self.proc.pid)

    def start(self):
        pass

    def cpu_s(self):
        return self.cgroup.cpu_s() if self.cgroup else None

    def memory(self):
        return memory_kib(self.proc.pid) if self.proc and self.proc.poll() is None else (None, None)

    def while_held(self):
        """Called while the 'many' workload holds its connections: waits until the collector has seen them."""
        time.sleep(1)

    def finish(self):
        """After the workload: waits until everything is reported; returns observations (see accuracy())."""
        return []

    def close(self):
        if self.proc:
            stop_process(self.proc)
        if self.cgroup:
            self.cgroup.remove()


class NoCollector(Collector):
    kind = "none"


class Agent(Collector):
    """cnm-agent; reads /api/v1/intervals as they come (it keeps 16), deduplicated by sequence."""

    kind = "agent"
    MODES = {
        "sock_length": {"DD_CNM_EBPF_STRATEGY": "sock_length"},
        "kernel_counters": {"DD_CNM_EBPF_STRATEGY": "kernel_counters"},
        "ebpfless": {"DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true"},
    }

    def __init__(self, name, run_dir, cfg, mode, interval=None):
        super().__init__(name, run_dir, cfg)
        self.mode = mode
        # a report of 100,000 connections takes the agent seconds to serve as JSON: a longer interval, so
        # that one is read before the next replaces it
        self.interval = interval or cfg.interval
        self.intervals = {}
        self.lock = threading.Lock()
        self.stop_poll = threading.Event()
        self.status = {}

    def get(self, path, timeout=5):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return json.load(r)

    def start(self):
        self.port = free_port()
        env = dict(os.environ)
        env.update(self.MODES[self.mode])
        env.update({
            "DD_CNM_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS": str(self.interval),
            "DD_CNM_TERMINAL": "never",
            "DD_LOG_LEVEL": "warn",
        })
        self.spawn([AGENT], env=env)

        def healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}); see {self.run_dir}/agent.err")
            try:
                return self.get("/status", 2).get("healthy")
            except OSError:
                return False

        wait_until(healthy, 60, "agent healthy", 0.2)
        s = self.get("/status")
        self.ran = f"{s.get('mode')}: {s.get('mode_reason', '')}"
        want_ebpf = self.mode != "ebpfless"
        if (s.get("mode") == "ebpf") != want_ebpf:
            raise RuntimeError(f"agent asked for {self.mode} ran {self.ran}")
        self.poller = threading.Thread(target=self.poll, daemon=True)
        self.poller.start()

    def fetch(self):
        after = max(self.intervals) if self.intervals else None
        d = self.get("/api/v1/intervals" + (f"?after={after}" if after is not None else ""), 10)
        with self.lock:
            for iv in d.get("intervals", []):
                self.intervals.setdefault(iv["sequence"], iv)

    def poll(self):
        # The agent keeps the last 16 reports, but older ones only while they hold 10,000 connections in
        # all (ReportStore.retainedConnections): at 5k connections/s an interval goes as soon as the next one
        # comes. So each is read at once: an empty answer to ?after= costs the agent little.
        while not self.stop_poll.wait(0.5):
            try:
                self.fetch()
            except OSError as e:
                self.notes.append(f"interval fetch failed: {e}")

    def reports(self):
        return self.get("/status").get("reports", 0)

    def wait_reports(self, n, what):
        """Waits until the agent has made n more reports than now."""
        r0 = self.reports()
        wait_until(lambda: self.reports() >= r0 + n, n * self.interval + 20, what, 0.25)

    def while_held(self):
        # two reports that began with every connection open: RSS is measured with all of them tracked
        self.wait_reports(2, "agent reports while connections are held")

    def finish(self):
        # the first report may have begun before the workload ended; the second began after it
        self.wait_reports(2, "agent reports after the workload")
        self.stop_poll.set()
        self.fetch()
        self.status = self.get("/status")
        with open(os.path.join(self.run_dir, "status.json"), "w") as f:
            json.dump(self.status, f, indent=1)
        seqs = sorted(self.intervals)
        if seqs and seqs[-1] - seqs[0] + 1 != len(seqs):
            raise RuntimeError(f"missed agent intervals: {len(seqs)} of {seqs[-1] - seqs[0] + 1} read (accuracy cannot be computed)")
        problems = self.status.get("problems") or {}
        drops = {k: v.get("count") for k, v in problems.items() if re.search(r"drop|lost|full|overflow", k)}
        tracker = self.status.get("tracker") or {}
        for k in ("dropped_table_full", "closed_without_final_counters"):
            if tracker.get(k):
                drops[f"tracker.{k}"] = tracker[k]
        self.lost = drops
        obs = []
        for seq in seqs:
            for c in self.intervals[seq].get("connections", []):
                obs.append((c.get("type"), c["laddr"]["ip"], c["laddr"]["port"], c["raddr"]["ip"], c["raddr"]["port"],
                            c.get("bytes_sent", 0), c.get("bytes_received", 0)))
        return obs


class Bpftrace(Collector):
    """bpftrace running scripts/bench/acct.bt: bytes per socket, printed at exit."""

    kind = "bpftrace"

    def start(self):
        env = dict(os.environ, BPFTRACE_MAP_KEYS_MAX=str(self.cfg.bpftrace_keys))
        self.spawn(["bpftrace", "-B", "line", os.path.join(ROOT, "scripts", "bench", "acct.bt")], env=env)
        out = os.path.join(self.run_dir, "bpftrace.out")

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"bpftrace exited ({self.proc.returncode}); see {self.run_dir}/bpftrace.err")
            return "ready" in open(out).read()

        wait_until(ready, 60, "bpftrace attached")  # BEGIN runs once every probe is attached

    def finish(self):
        self.final_memory = self.memory()
        self.final_cpu = None
        rc = stop_process(self.proc, signal.SIGINT, 120)
        if rc != 0:
            raise RuntimeError(f"bpftrace exited with {rc}; see {self.run_dir}/bpftrace.err")
        text = open(os.path.join(self.run_dir, "bpftrace.out")).read()
        err = open(os.path.join(self.run_dir, "bpftrace.err")).read()
        lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", text + err))
        self.lost = {"perf_lost": lost} if lost else {}
        if re.search(r"map.*full|E2BIG", err, re.I):
            self.lost["map_full"] = "see bpftrace.err"
        closed = {}
        open_tup, tx, rx = {}, {}, {}
        for m in re.finditer(r"^@(ctx|crx)\[(\d+), (\d+), (\d+), (\d+)\]: (\d+)$", text, re.M):
            key = (ip_from_u32(m.group(2)), int(m.group(3)), ip_from_u32(m.group(4)), int(m.group(5)))
            closed.setdefault(key, [0, 0])[0 if m.group(1) == "ctx" else 1] += int(m.group(6))
        for m in re.finditer(r"^@tup\[(-?\d+)\]: \((\d+), (\d+), (\d+), (\d+)\)$", text, re.M):
            open_tup[m.group(1)] = (ip_from_u32(m.group(2)), int(m.group(3)), ip_from_u32(m.group(4)), int(m.group(5)))
        for m in re.finditer(r"^@(tx|rx)\[(-?\d+)\]: (\d+)$", text, re.M):
            (tx if m.group(1) == "tx" else rx)[m.group(2)] = int(m.group(3))
        obs = [("tcp", k[0], k[1], k[2], k[3], v[0], v[1]) for k, v in closed.items() if k[3] != 0]
        for sk, k in open_tup.items():
            obs.append(("tcp", k[0], k[1], k[2], k[3], tx.get(sk, 0), rx.get(sk, 0)))
        return obs

    def memory(self):
        return getattr(self, "final_memory", None) or super().memory()


class Pmacctd(Collector):
    """pmacctd with the print plugin, aggregated per src_host,dst_host,src_port,dst_port,proto."""

    kind = "pmacctd"

    def __init__(self, name, run_dir, cfg, interface, flows):
        super().__init__(name, run_dir, cfg)
        self.interface = interface
        # its cache is allocated whole at start: sized for the workload (two directional flows per connection)
        self.cache_entries = max(16411, 3 * flows)

    def start(self):
        self.csv = os.path.join(self.run_dir, "pmacct.csv")
        self.logfile = os.path.join(self.run_dir, "pmacctd.log")
        conf = os.path.join(self.run_dir, "pmacctd.conf")
        with open(conf, "w") as f:
            f.write(f"""daemonize: false
pcap_interface: {self.interface}
aggregate: src_host,dst_host,src_port,dst_port,proto
plugins: print
print_output: csv
print_output_file: {self.csv}
print_refresh_time: 3600
print_cache_entries: {self.cache_entries}
plugin_buffer_size: 65536
plugin_pipe_size: 67108864
logfile: {self.logfile}
""")
        open(self.logfile, "w").close()
        self.spawn(["pmacctd", "-f", conf])

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"pmacctd exited ({self.proc.returncode}); see {self.logfile}")
            t = open(self.logfile).read()
            return "link type is" in t and "cache entries" in t

        wait_until(ready, 30, "pmacctd capturing")
        time.sleep(0.3)  # the plugin process announces itself just before it reads its pipe

    def flush(self):
        """pmacctd's core hands packets to the print plugin in plugin_buffer_size batches and does not send a
        partial batch at exit: datagrams to a harness socket (no flow of the ground truth) push the last one."""
        if self.interface != "lo":
            self.notes.append("no flush traffic on " + self.interface + ": the last buffer may be lost at exit")
            return
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(2000):
            tx.sendto(b"f", rx.getsockname())
        tx.close()
        rx.close()
        time.sleep(0.5)

    def finish(self):
        self.final_memory = self.memory()
        self.flush()
        # its own drop counter: libpcap's stats, written to the log on SIGUSR1
        self.proc.send_signal(signal.SIGUSR1)
        try:
            wait_until(lambda: "dropped_packets=" in open(self.logfile).read(), 10, "pmacctd stats")
            m = re.findall(r"received_packets=(\d+) dropped_packets=(\d+)", open(self.logfile).read())[-1]
            self.lost = {"pcap_dropped": int(m[1])}
            self.notes.append(f"pcap received {m[0]} packets")
        except TimeoutError as e:
            self.notes.append(str(e))
        rc = stop_process(self.proc, signal.SIGINT, 120)  # the print plugin writes its cache at exit
        if rc != 0:
            raise RuntimeError(f"pmacctd exited with {rc}; see {self.logfile}")
        wait_until(lambda: os.path.exists(self.csv), 30, "pmacctd output")
        flows = {}
        with open(self.csv) as f:
            header = f.readline().strip().split(",")
            for line in f:
                row = dict(zip(header, line.strip().split(",")))
                if row.get("PROTOCOL") not in ("tcp", "udp"):
                    continue
                key = (row["PROTOCOL"], row["SRC_IP"], int(row["SRC_PORT"]), row["DST_IP"], int(row["DST_PORT"]))
                f_ = flows.setdefault(key, [0, 0])
                f_[0] += int(row["PACKETS"])
                f_[1] += int(row["BYTES"])
        # directional flows: (proto, src, sport, dst, dport, packets, L3 bytes); accuracy() converts to payload
        return [(proto, sip, sp, dip, dp, pk, by) for (proto, sip, sp, dip, dp), (pk, by) in flows.items()]

    def memory(self):
        return getattr(self, "final_memory", None) or super().memory()


# ---- workloads ----


class Workload:
    def __init__(self, cfg, run_dir):
        self.cfg, self.run_dir = cfg, run_dir
        self.truth_file = os.path.join(run_dir, "truth.tsv")

    def cmd(self, *args, truth_file=None, **kw):
        env = dict(os.environ, CONN_WORKLOAD_TRUTH=truth_file or self.truth_file)
        p = subprocess.Popen([self.cfg.workload_bin, *map(str, args)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **kw)
        started.append(p)
        return p

    def run_simple(self, *args, timeout=300):
        p = self.cmd(*args)
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"conn-workload {' '.join(map(str, args))} failed ({p.returncode}): {err.strip()}")
        return json.loads(out.strip().splitlines()[-1])

    def truth(self):
        rows = []
        files = sorted(f for f in os.listdir(self.run_dir) if f.startswith("truth") and f.endswith(".tsv"))
        for line in (l for f in files for l in open(os.path.join(self.run_dir, f))):
            proto, cip, cp, sip, sp, c2s, s2c = line.split("\t")
            rows.append((proto, cip, int(cp), sip, int(sp), int(c2s), int(s2c)))
        return rows


def wl_churn(w, collector, rate, secs, size=100):
    return w.run_simple("short", rate * secs, rate, size)


def wl_bulk(w, collector, total, conns):
    return w.run_simple("bulk", total, conns)


def wl_udp(w, collector, rate, secs, size=100):
    return w.run_simple("udp", rate * secs, rate, size)


def wl_many(w, collector, n, rounds=2, size=16):
    """n connections held open by as many conn-workload processes as the hard limit on open files needs
    (two fds per connection; raising the hard limit needs a capability the harness may lack)."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per = n if hard == resource.RLIM_INFINITY else max(1000, min(n, (hard - 1024) // 2))
    procs = []
    for i, left in enumerate(range(n, 0, -per)):
        k = min(per, left)
        p = w.cmd("hold", k, rounds, size, stdin=subprocess.PIPE, truth_file=os.path.join(w.run_dir, f"truth-{i}.tsv"))
        p.lines = []
        threading.Thread(target=lambda p=p: [p.lines.append(line.strip()) for line in p.stderr], daemon=True).start()
        procs.append(p)
        wait_until(lambda: "ready" in p.lines or p.poll() is not None, 120, f"{k} connections opened")
        if p.poll() is not None:
            raise RuntimeError(f"conn-workload hold failed: {p.lines}")
    collector.while_held()
    w.held_memory = collector.memory()
    results = []
    for p in procs:
        p.stdin.close()
    for p in procs:
        out = p.stdout.read()
        p.wait(60)
        if p.returncode != 0:
            raise RuntimeError(f"conn-workload hold failed ({p.returncode}): {p.lines}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    d = dict(results[0])
    for k in ("connections", "cpu_s", "cpu_user_s", "cpu_sys_s"):
        d[k] = sum(r[k] for r in results)
    d["open_s"] = sum(r["open_s"] for r in results)
    d["rate"] = n / d["open_s"] if d["open_s"] else None  # connections opened per second
    d["processes"] = len(results)
    return d


def docker0_ip():
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True).stdout
    m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)", out)
    return m.group(1) if m else None


def wl_containers(w, collector, secs, requests=3):
    ip = docker0_ip()
    if not ip:
        raise RuntimeError("no docker0 address: is dockerd running (scripts/start-dockerd.sh)?")
    p = w.cmd("serve", ip, 6, 100, stdin=subprocess.PIPE)
    port = int(p.stdout.readline().split()[1])
    # stdin stays open while the reply comes (nc exits when the server closes), so the container's socket
    # receives every byte the server sent: the server's count is the truth for both ends
    script = (f"for i in $(seq {requests}); do (echo hello; sleep 0.3) | nc {ip} {port} >/dev/null; sleep 0.1; done")
    ids = []
    t0 = time.monotonic()
    for i in range(secs):
        r = subprocess.run(["docker", "run", "-d", "--rm", "--label", "cnm-bench=1", BUSYBOX, "sh", "-c", script],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"docker run failed: {r.stderr.strip()}")
        ids.append(r.stdout.strip())
        time.sleep(max(0, t0 + i + 1 - time.monotonic()))

    def all_gone():
        r = subprocess.run(["docker", "ps", "-q", "--filter", "label=cnm-bench=1"], capture_output=True, text=True)
        return r.stdout.strip() == ""

    wait_until(all_gone, 60, "bench containers exited", 0.5)
    p.stdin.close()
    out = p.stdout.read()
    p.wait(30)
    if p.returncode != 0:
        raise RuntimeError(f"conn-workload serve failed: {p.stderr.read()}")
    d = json.loads(out.strip().splitlines()[-1])
    d["containers"] = len(ids)
    d["wall_s"] = time.monotonic() - t0
    return d


# ---- accuracy ----


def accuracy(truth, obs, kind):
    """Per connection of the ground truth (4-tuple): seen by the collector, and bytes exact.

    obs rows: (proto, lip, lport, rip, rport, sent, received). A row may be either end's view (the agent
    and bpftrace report both sockets of a loopback connection); rows of one view are summed over intervals.
    A connection counts as seen if any view of it is there, exact if every view there carries exactly the
    true bytes both ways. pmacctd's rows are directional flows (received None), merged into one view.
    """
    tkeys = {}
    for proto, cip, cp, sip, sp, c2s, s2c in truth:
        k = (proto, cip, cp, sip, sp)
        t = tkeys.setdefault(k, [0, 0])
        t[0] += c2s
        t[1] += s2c
    count = {}
    for proto, cip, cp, sip, sp, _, _ in truth:
        count[(proto, cip, cp, sip, sp)] = count.get((proto, cip, cp, sip, sp), 0) + 1
    if kind == "pmacctd":
        # L3 bytes to payload: 20 B IPv4 header per packet, plus 32 B of TCP header (20 + the 12 B timestamp
        # option Linux sends on every segment) or 8 B of UDP header, and per connection 8 B more for the SYN or
        # SYN-ACK of each direction (its options are 40 B long, not 12). Exact when nothing is retransmitted.
        conv = []
        for proto, sip, sp, dip, dp, pk, by in obs:
            k = (proto, sip, sp, dip, dp) if (proto, sip, sp, dip, dp) in count else (proto, dip, dp, sip, sp)
            if proto == "tcp":
                payload = by - 52 * pk - 8 * count.get(k, 1)
            else:
                payload = by - 28 * pk
            conv.append((proto, sip, sp, dip, dp, payload, None))  # a directional flow: sent by its source
        obs = conv
    views = {}  # (key, side) -> [c2s, s2c]
    for proto, lip, lp, rip, rp, sent, recv in obs:
        proto = {"tcp": "tcp", "udp": "udp", 0: "tcp", 1: "udp"}.get(proto, proto)
        k = (proto, lip, lp, rip, rp)
        if k in tkeys:
            side, c2s, s2c = "client", sent, recv
        else:
            k = (proto, rip, rp, lip, lp)
            if k not in tkeys:
                continue
            side, c2s, s2c = "server", recv, sent
        if kind == "pmacctd":
            side = "flows"
        v = views.setdefault((k, side), [0, 0])
        if c2s is not None:
            v[0] += c2s
        if s2c is not None:
            v[1] += s2c
    seen = exact = 0
    byte_err = 0
    true_bytes = sum(a + b for a, b in tkeys.values())
    by_key = {}
    for (k, side), v in views.items():
        by_key.setdefault(k, []).append(v)
    for k, t in tkeys.items():
        vs = by_key.get(k)
        if not vs:
            byte_err += t[0] + t[1]
            continue
        seen += 1
        if all(v == t for v in vs):
            exact += 1
        # the bytes error of the worst view
        byte_err += max(abs(v[0] - t[0]) + abs(v[1] - t[1]) for v in vs)
    n = len(tkeys)
    return {
        "connections": n,
        "seen": seen,
        "exact": exact,
        "seen_pct": 100.0 * seen / n if n else None,
        "exact_pct": 100.0 * exact / n if n else None,
        "bytes_true": true_bytes,
        "bytes_abs_error_pct": 100.0 * byte_err / true_bytes if true_bytes else None,
        "views": len(views),
    }


# ---- the run ----


class Config:
    pass


def make_collector(name, run_dir, cfg, workload, flows):
    if name == "none":
        return NoCollector(name, run_dir, cfg)
    if name.startswith("agent-"):
        return Agent(name, run_dir, cfg, name[len("agent-"):], 10 if flows > 20000 and workload.startswith("many") else None)
    if name == "bpftrace":
        return Bpftrace(name, run_dir, cfg)
    if name == "pmacctd":
        return Pmacctd(name, run_dir, cfg, "docker0" if workload.startswith("containers") else "lo", flows)
    raise ValueError(name)


COLLECTORS = ["none", "agent-sock_length", "agent-kernel_counters", "agent-ebpfless", "bpftrace", "pmacctd"]


def plan(quick):
    """(workload name, function, args, collectors)."""
    if quick:
        return [
            ("churn-1k", wl_churn, (1000, 2), COLLECTORS),
            ("bulk", wl_bulk, (256 << 20, 2), ["none", "agent-sock_length"]),
            ("udp-500", wl_udp, (500, 2), ["none", "agent-sock_length"]),
        ]
    return [
        ("churn-1k", wl_churn, (1000, 5), COLLECTORS),
        ("churn-5k", wl_churn, (5000, 5), COLLECTORS),
        ("churn-10k", wl_churn, (10000, 4), COLLECTORS),
        ("bulk", wl_bulk, (3 << 30, 3), COLLECTORS),
        ("udp-2k", wl_udp, (2000, 5), COLLECTORS),
        ("many-10k", wl_many, (10000,), COLLECTORS),
        ("many-50k", wl_many, (50000,), COLLECTORS),
        ("containers", wl_containers, (10,), COLLECTORS),
    ]


def expected_connections(fn, args):
    if fn in (wl_churn,):
        return args[0] * args[1]
    if fn is wl_many:
        return args[0]
    if fn is wl_udp:
        return args[0] * args[1] // 50 + 10
    return 1000


def run_one(cfg, wname, fn, args, cname):
    run_dir = os.path.join(cfg.out, "runs", f"{wname}.{cname}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    res = {"workload": wname, "collector": cname, "ok": False}
    c = make_collector(cname, run_dir, cfg, wname, expected_connections(fn, args))
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
        if c.kind == "bpftrace" and fn is wl_udp:
            c.notes.append("accuracy not computed: the bpftrace program accounts TCP only")
        elif cname != "none":
            res["accuracy"] = accuracy(w.truth(), obs, c.kind)
            if not res["accuracy"]["connections"]:
                raise RuntimeError("no ground truth rows: accuracy cannot be computed")
        else:
            if not w.truth():
                raise RuntimeError("no ground truth rows")
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 -- every failure is reported, the run goes on
        res["error"] = f"{type(e).__name__}: {e}"
        failures.append(f"{wname} / {cname}: {res['error']}")
        log(f"  FAILED: {res['error']}")
    finally:
        c.close()
    return res


def throughput(r):
    wj = r.get("workload_result") or {}
    if "gbit_s" in wj:
        return wj["gbit_s"], "Gbit/s"
    return wj.get("rate"), "/s"


def machine():
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
    osr = "?"
    if os.path.exists("/etc/os-release"):
        m = re.search(r'PRETTY_NAME="([^"]+)"', open("/etc/os-release").read())
        osr = m.group(1) if m else osr

    def ver(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except Exception:  # noqa: BLE001
            return "?"

    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "memory_gib": round(mem, 1), "os": osr,
        "bpftrace": ver(["bpftrace", "--version"]), "pmacctd": ver(["pmacctd", "-V"]),
        "load_before": open("/proc/loadavg").read().split()[:3],
    }


def fmt(v, spec=".1f", unit=""):
    return "–" if v is None else f"{v:{spec}}{unit}"


def report(cfg, results, mach, elapsed):
    base = {r["workload"]: r for r in results if r["collector"] == "none" and r["ok"]}
    lines = [
        "# Benchmarks: cnm-agent against peers",
        "",
        f"Written by `{cfg.command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {elapsed:.0f} s.",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, Linux {mach['kernel']}, {mach['os']};"
        f" {mach['bpftrace']}; {mach['pmacctd'].split(',')[0]}. Load average before: {' '.join(mach['load_before'])}.",
        "",
        "Collector CPU: user + system of the collector's own cgroup (all processes and threads) from the workload's"
        " start until it had reported everything, net of the collector's idle rate (measured over"
        f" {cfg.idle_s:.0f} s just before the workload, after {cfg.settle_s:.0f} s of settling; per-run idle rates in"
        " results.json) (the agent: two reports after the workload; bpftrace, pmacctd: exit,"
        f" final dump included); agent report interval {cfg.interval} s (10 s with more than 20,000 held connections,"
        " so that a report is read before the next replaces it). `% wl` is that CPU as a share of the"
        " workload's own CPU (getrusage). Slowdown: the workload's throughput against the run with no collector (churn"
        " and UDP run at a fixed rate, so their slowdown shows as the workload's CPU growing: `wl CPU +`)."
        " Collector CPU includes the agent answering the harness's reads of its intervals (every 0.5 s)."
        " RSS: steady (VmRSS at the end, for `many` while the connections were held) / peak (VmHWM), all processes."
        " Accuracy: ground truth from the workload (4-tuple and payload bytes each way per connection); `seen` = share of"
        " connections the collector reported, `exact` = share whose bytes both ways are exactly right in every view"
        " reported (the agent and bpftrace report both ends of a loopback connection; both must be right)."
        " pmacctd counts L3 bytes per direction: converted to payload by subtracting 52 B per TCP packet (IP 20 +"
        " TCP 20 + timestamps 12) and 8 B per direction for the SYN options, 28 B per UDP datagram. The bpftrace"
        " program accounts TCP only. Lost: what the collector itself reports (agent /status problems and tracker"
        " counters; pmacctd's libpcap drops; bpftrace's lost events). Byte error: the sum over connections of the"
        " worst view's |reported - true| bytes, as a share of the true bytes (a missed connection counts whole).",
        "",
        "| workload | collector | collector CPU | % wl | throughput | slowdown | wl CPU + | RSS steady / peak | seen | exact | byte error | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r["ok"]:
            lines.append(f"| {r['workload']} | {r['collector']} | failed: {r.get('error', '?')} |||||||||| |")
            continue
        b = base.get(r["workload"])
        tp, unit = throughput(r)
        slow = wlp = None
        if b and r["collector"] != "none":
            btp, _ = throughput(b)
            if btp and tp:
                slow = 100.0 * (btp - tp) / btp
            if b.get("workload_cpu_s") and r.get("workload_cpu_s"):
                wlp = 100.0 * (r["workload_cpu_s"] - b["workload_cpu_s"]) / b["workload_cpu_s"]
        cpu = r.get("collector_cpu_s")
        share = 100.0 * cpu / r["workload_cpu_s"] if cpu is not None and r.get("workload_cpu_s") else None
        a = r.get("accuracy") or {}
        rss = f"{fmt(r['rss_kib'] / 1024 if r.get('rss_kib') else None)} / {fmt(r['hwm_kib'] / 1024 if r.get('hwm_kib') else None)} MiB"
        lost = r.get("lost")
        lost_s = "–" if lost is None else (", ".join(f"{k} {v}" for k, v in lost.items()) or "0")
        if r["collector"] == "none":
            cpu_s = share_s = rss = "–"
            seen = exact = err = "–"
        else:
            cpu_s = fmt(cpu * 1000 if cpu is not None else None, ".0f", " ms")
            share_s = fmt(share, ".1f", "%")
            seen = f"{fmt(a.get('seen_pct'), '.1f', '%')} ({a.get('seen')}/{a.get('connections')})"
            exact = f"{fmt(a.get('exact_pct'), '.1f', '%')} ({a.get('exact')})"
            err = fmt(a.get("bytes_abs_error_pct"), ".2f", "%")
        lines.append(f"| {r['workload']} | {r['collector']} | {cpu_s} | {share_s} | {fmt(tp, '.1f')} {unit} | "
                     f"{fmt(slow, '+.1f', '%')} | {fmt(wlp, '+.1f', '%')} | {rss} | {seen} | {exact} | {err} | {lost_s} |")
    notes = [f"- {r['workload']} / {r['collector']}: {'; '.join(r['notes'])}" for r in results if r.get("notes")]
    ran = sorted({f"- {r['collector']}: {r['ran']}" for r in results if r.get("ran")})
    lines += ["", "Agent modes as /status reported them:", *ran]
    if notes:
        lines += ["", "Notes:", *notes]
    if failures:
        lines += ["", "Failures:", *[f"- {f}" for f in failures]]
    lines += ["", f"Workload parameters and raw results: `{os.path.relpath(cfg.out, ROOT)}/results.json`; "
              "per run: collector logs and ground truth under `runs/`.", ""]
    return "\n".join(lines)


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return False
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    collectors = [c for c in dict.fromkeys(r["collector"] for r in results) if c != "none"]
    by = {(r["workload"], r["collector"]): r for r in results if r["ok"]}
    fig, axes = plt.subplots(3, 1, figsize=(12, 11))
    width = 0.8 / max(1, len(collectors))
    metrics = [
        ("collector CPU, % of the workload's CPU (log)", lambda r: 100 * r["collector_cpu_s"] / r["workload_cpu_s"]
         if r.get("collector_cpu_s") is not None and r.get("workload_cpu_s") else None, True),
        ("connections with exact bytes, %", lambda r: (r.get("accuracy") or {}).get("exact_pct"), False),
        ("peak RSS, MiB", lambda r: r["hwm_kib"] / 1024 if r.get("hwm_kib") else None, False),
    ]
    for ax, (title, get, logy) in zip(axes, metrics):
        for i, c in enumerate(collectors):
            xs, ys = [], []
            for j, w in enumerate(workloads):
                r = by.get((w, c))
                v = get(r) if r else None
                if v is not None:
                    xs.append(j + i * width)
                    ys.append(max(v, 1e-3) if logy else v)
            ax.bar(xs, ys, width, label=c)
        ax.set_title(title)
        ax.set_xticks([j + width * (len(collectors) - 1) / 2 for j in range(len(workloads))])
        ax.set_xticklabels(workloads)
        if logy:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small subset with short durations (CI)")
    ap.add_argument("--publish", action="store_true", help="copy the results to BENCHMARKS.md and docs/bench.png")
    ap.add_argument("--out", help="results directory (default .build/bench, with --quick .build/bench-quick)")
    ap.add_argument("--only-collectors", default="")
    ap.add_argument("--only-workloads", default="")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.py: run as root (the agent, bpftrace and pmacctd need it)")
    cfg = Config()
    cfg.out = os.path.abspath(opts.out or os.path.join(ROOT, ".build", "bench-quick" if opts.quick else "bench"))
    cfg.interval = 2 if opts.quick else 3
    cfg.bpftrace_keys = 1 << 20
    cfg.settle_s = 1.0
    cfg.idle_s = 1.0 if opts.quick else 2.0
    cfg.command = "make bench-quick" if opts.quick else "make bench"
    os.makedirs(cfg.out, exist_ok=True)
    cfg.workload_bin = os.path.join(cfg.out, "conn-workload")
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", cfg.workload_bin,
                    os.path.join(ROOT, "scripts", "conn-workload.c")], check=True)
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
        for wname, fn, args, collectors in plan(opts.quick):
            if only_w and wname not in only_w:
                continue
            for cname in collectors:
                if only_c and cname not in only_c and cname != "none":
                    continue
                log(f"{wname} / {cname}")
                r = run_one(cfg, wname, fn, args, cname)
                results.append(r)
                if r["ok"]:
                    a = r.get("accuracy") or {}
                    log(f"  collector CPU {fmt((r.get('collector_cpu_s') or 0) * 1000, '.0f')} ms, workload CPU "
                        f"{fmt((r.get('workload_cpu_s') or 0) * 1000, '.0f')} ms, throughput {throughput(r)[0]}, "
                        f"seen {a.get('seen')}/{a.get('connections')}, exact {a.get('exact')}, lost {r.get('lost')}")
    finally:
        cleanup()
    elapsed = time.monotonic() - t0
    json.dump({"machine": mach, "results": results, "failures": failures, "elapsed_s": elapsed,
               "plan": [(w, f.__name__, a, c) for w, f, a, c in plan(opts.quick)]},
              open(os.path.join(cfg.out, "results.json"), "w"), indent=1, default=str)
    md = report(cfg, results, mach, elapsed)
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


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
