"""The collectors under test, each a process in a cgroup of its own: none, cnm-agent, bpftrace, pmacctd."""
import http.server
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.request

from .system import AGENT, ROOT, Cgroup, free_port, log, memory_kib, started, stop_process, wait_until


# argv prefix: sh writes its pid to each cgroup.procs file given before "--", then execs the rest
JOIN_CGROUPS = ["sh", "-c", 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"', "sh"]


def ip_from_u32(v):
    return socket.inet_ntoa(struct.pack("<I", int(v) & 0xFFFFFFFF))


class Collector:
    """Base: a collector process in a cgroup of its own. Subclasses: start(), reported(), stop()."""

    kind = "none"
    proc = None

    def __init__(self, name, run_dir, cfg):
        self.name, self.run_dir, self.cfg = name, run_dir, cfg
        self.cgroup = None
        # a cgroup that several collectors use in turn (--modes: one for every agent of the run), not removed
        # at close; None: a cgroup of the collector's own
        self.shared_cgroup = None
        self.lost = None  # events lost, as the collector itself reports it
        self.notes = []
        self.memory_max = None  # bytes: its cgroup's memory limit, set before it starts
        self.figures = {}  # its own results, for results.json

    def spawn(self, argv, env=None, **kw):
        self.cgroup = self.shared_cgroup or Cgroup(os.path.basename(self.run_dir))
        if self.memory_max:
            # the agent reads its cgroup's limit when it starts: it joins the cgroup before it execs
            self.cgroup.limit_memory(self.memory_max)
            argv = JOIN_CGROUPS + self.cgroup.procs_files() + ["--"] + argv
        out = open(os.path.join(self.run_dir, f"{self.kind}.out"), "w")
        err = open(os.path.join(self.run_dir, f"{self.kind}.err"), "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, **kw)
        started.append(self.proc)
        if self.memory_max:
            return
        if self.cgroup is not self.shared_cgroup:
            self.cgroup.add(self.proc.pid)
            return
        try:
            self.cgroup.add(self.proc.pid)
        except OSError as e:
            log(f"could not move the {self.kind} into {self.cgroup.path}: {e}")

    def start(self):
        pass

    def cpu_s(self):
        return self.cgroup.cpu_s() if self.cgroup else None

    def memory(self):
        return memory_kib(self.proc.pid) if self.proc and self.proc.poll() is None else (None, None)

    def memory_cap(self):
        """Under a memory limit, at the end of its run: what the cgroup's limit did (Cgroup.memory_events),
        whether the collector is still alive and else its exit status."""
        alive = self.proc is not None and self.proc.poll() is None
        d = self.cgroup.memory_events() if self.cgroup and self.cgroup.memory_path else {}
        return dict(d, alive=alive, exit=None if alive or self.proc is None else self.proc.returncode)

    def while_held(self):
        """Called while the 'many' workload holds its connections: waits until the collector has seen them."""
        time.sleep(1)

    def finish(self):
        """After the workload: waits until everything is reported; returns observations (see accuracy())."""
        return []

    def close(self, timeout=30):
        if self.proc:
            stop_process(self.proc, timeout=timeout)
        if self.cgroup and self.cgroup is not self.shared_cgroup:
            self.cgroup.remove()


class NoCollector(Collector):
    kind = "none"


class Agent(Collector):
    """cnm-agent; reads /api/v1/intervals as they come (it keeps 16), deduplicated by sequence.

    mode: a key of MODES, any other eBPF strategy by name, or None for the agent's own choice."""

    kind = "agent"
    MODES = {
        "sock_length": {"DD_CNM_EBPF_STRATEGY": "sock_length"},
        "kernel_counters": {"DD_CNM_EBPF_STRATEGY": "kernel_counters"},
        "ebpfless": {"DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true"},
        # eBPF-less without packet capture, and sampled only (no destroy notifications), as where those are
        # unavailable
        "ebpfless-no-capture": {"DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true", "DD_CNM_PACKET_CAPTURE": "false"},
        "ebpfless-sampled": {"DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true", "DD_CNM_DESTROY_NOTIFICATIONS": "false"},
        "ebpfless-sampled-no-capture": {"DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true",
                                        "DD_CNM_DESTROY_NOTIFICATIONS": "false", "DD_CNM_PACKET_CAPTURE": "false"},
    }

    @classmethod
    def mode_env(cls, mode):
        if mode is None:
            return {}
        return cls.MODES.get(mode, {"DD_CNM_EBPF_STRATEGY": mode})

    def __init__(self, name, run_dir, cfg, mode, interval=None, sample=None):
        super().__init__(name, run_dir, cfg)
        self.mode = mode
        # a report of 100,000 connections takes the agent seconds to serve as JSON: a longer interval, so
        # that one is read before the next replaces it
        self.interval = interval or cfg.interval
        self.sample = sample  # the sample period (s), or None for the agent's default
        self.intervals = {}
        self.lock = threading.Lock()
        self.stop_poll = threading.Event()
        self.status = {}
        self.extra_env = {}

    def get(self, path, timeout=5):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return json.load(r)

    def launch(self, timeout=60):
        """Starts the agent and waits until /status says healthy: its first collection is done."""
        self.port = free_port()
        env = dict(os.environ)
        env.update(self.mode_env(self.mode))
        env.update({
            "DD_CNM_HTTP_ADDR": f"127.0.0.1:{self.port}",
            "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS": str(self.interval),
            "DD_CNM_TERMINAL": "never",
            "DD_LOG_LEVEL": "warn",
        })
        if self.sample is not None:
            env["DD_CNM_SAMPLE_INTERVAL"] = str(self.sample)
        env.update(self.extra_env)
        self.spawn([AGENT], env=env)

        def healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited ({self.proc.returncode}); see {self.run_dir}/agent.err")
            try:
                return self.get("/status", 2).get("healthy")
            except OSError:
                return False

        wait_until(healthy, timeout, "agent healthy", 0.2)

    def start(self):
        self.launch()
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
        self.lost = agent_lost(self.status)
        return agent_observations(self.intervals[seq] for seq in seqs)

    def memory_cap(self):
        """Collector.memory_cap() and the agent's own view, /status memory: now, or at finish() if it died."""
        d = super().memory_cap()
        try:
            d["status_memory"] = self.get("/status").get("memory")
        except (OSError, ValueError):
            d["status_memory"] = self.status.get("memory")
        return d


class Intake:
    """A stand-in for Datadog's intake on 127.0.0.1: answers 202 to every POST, counting requests and body
    bytes (as sent: zstd-compressed protobuf)."""

    def __init__(self):
        counts = self.counts = {"requests": 0, "bytes": 0}
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # libcurl keeps its connection open between messages

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    counts["requests"] += 1
                    counts["bytes"] += len(body)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class IntakeAgent(Agent):
    """The agent in its default eBPF strategy, also shipping every interval to a local Intake as it would to
    Datadog's: what encoding, compressing and sending add. Its API is still read for accuracy."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.intake = Intake()
        self.extra_env = {"DD_API_KEY": "bench", "DD_PROCESS_CONFIG_PROCESS_DD_URL": self.intake.url,
                          "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}  # libcurl would honour a proxy variable

    def finish(self):
        obs = super().finish()

        def drained():
            self.status = self.get("/status")
            i = self.status.get("intake") or {}
            return i.get("queue_depth") == 0 and i.get("in_flight") == 0

        try:  # the last interval's messages may still be on their way
            wait_until(drained, 10, "intake queue drained", 0.25)
        except TimeoutError as e:
            self.notes.append(str(e))
        i = self.status.get("intake") or {}
        c = self.intake.counts
        self.figures["intake"] = dict(c, agent={k: i.get(k) for k in ("sent", "retried", "dropped")})
        self.notes.append(f"intake received {c['requests']} requests, {c['bytes']} bytes (agent: sent {i.get('sent')},"
                          f" retried {i.get('retried')}, dropped {i.get('dropped')})")
        return obs

    def close(self, timeout=30):
        super().close(timeout)
        self.intake.close()


def agent_lost(status):
    """What the agent's /status says it lost: problems about drops, and the tracker's loss counters."""
    problems = status.get("problems") or {}
    drops = {k: v.get("count") for k, v in problems.items() if re.search(r"drop|lost|full|overflow", k)}
    tracker = status.get("tracker") or {}
    for k in ("dropped_table_full", "closed_without_final_counters", "peer_fin_assumed"):
        if tracker.get(k):
            drops[f"tracker.{k}"] = tracker[k]
    return drops


def agent_observations(intervals):
    """Observations (see accuracy()) from the agent's intervals, in order: a row per connection per interval,
    with the number of connections rolled up into it (1 for a plain row)."""
    obs = []
    for iv in intervals:
        for c in iv.get("connections", []):
            obs.append((c.get("type"), c["laddr"]["ip"], c["laddr"]["port"], c["raddr"]["ip"], c["raddr"]["port"],
                        c.get("bytes_sent", 0), c.get("bytes_received", 0), c.get("rolled_up") or 1))
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
        self.lost = bpftrace_lost(text, err)
        return parse_bpftrace(text)

    def memory(self):
        return getattr(self, "final_memory", None) or super().memory()


def bpftrace_lost(text, err):
    """What bpftrace itself says it lost: perf events (stdout or stderr), a full map (stderr)."""
    lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", text + err))
    lost = {"perf_lost": lost} if lost else {}
    if re.search(r"map.*full|E2BIG", err, re.I):
        lost["map_full"] = "see bpftrace.err"
    return lost


def parse_bpftrace(text):
    """Observations (see accuracy()) from acct.bt's maps as printed at exit: @ctx/@crx per closed socket's
    4-tuple (u32 addresses), and for sockets still open @tup (their 4-tuple) with @tx/@rx by socket."""
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
        with open(self.csv) as f:
            return parse_pmacct_csv(f)

    def memory(self):
        return getattr(self, "final_memory", None) or super().memory()


def parse_pmacct_csv(lines):
    """Directional flows from the print plugin's CSV (a header line, then a row per flow; rows of one
    flow summed): (proto, src, sport, dst, dport, packets, L3 bytes); accuracy() converts to payload."""
    lines = iter(lines)
    flows = {}
    header = next(lines, "").strip().split(",")
    for line in lines:
        row = dict(zip(header, line.strip().split(",")))
        if row.get("PROTOCOL") not in ("tcp", "udp"):
            continue
        key = (row["PROTOCOL"], row["SRC_IP"], int(row["SRC_PORT"]), row["DST_IP"], int(row["DST_PORT"]))
        f_ = flows.setdefault(key, [0, 0])
        f_[0] += int(row["PACKETS"])
        f_[1] += int(row["BYTES"])
    return [(proto, sip, sp, dip, dp, pk, by) for (proto, sip, sp, dip, dp), (pk, by) in flows.items()]


def make_collector(name, run_dir, cfg, workload, flows):
    if name == "none":
        return NoCollector(name, run_dir, cfg)
    if name == "agent-intake":
        return IntakeAgent(name, run_dir, cfg, None, 10 if flows > 20000 and workload.startswith("many") else None)
    if name.startswith("agent-"):
        return Agent(name, run_dir, cfg, name[len("agent-"):], 10 if flows > 20000 and workload.startswith("many") else None)
    if name == "bpftrace":
        return Bpftrace(name, run_dir, cfg)
    if name == "pmacctd":
        return Pmacctd(name, run_dir, cfg, "docker0" if workload.startswith("containers") else "lo", flows)
    raise ValueError(name)


COLLECTORS = ["none", "agent-sock_length", "agent-kernel_counters", "agent-ebpfless", "bpftrace", "pmacctd"]
AGENTS = [c for c in COLLECTORS if c.startswith("agent-")]
