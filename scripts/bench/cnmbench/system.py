"""What every part of the harness shares: paths, logging, waiting, processes it started, cgroups, memory."""
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# CNM_AGENT measures another build (an older commit's, to compare) with the same harness.
AGENT = os.environ.get("CNM_AGENT") or os.path.join(ROOT, ".build", "release", "cnm-agent")
CLK_TCK = os.sysconf("SC_CLK_TCK")

started = []  # every Popen this harness started, for cleanup
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
    """A cpuacct cgroup (v1, or v2 cpu.stat) for one collector: CPU of every process and thread in it; and,
    when limit_memory() was called, a memory limit on them."""

    live = []

    def __init__(self, name):
        self.path = None
        self.memory_path = None  # where the memory limit is: this cgroup on v2, one of the same name on v1
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

    def cpu_ns(self):
        """The same in whole nanoseconds (cgroup v2 counts microseconds)."""
        text = open(os.path.join(self.path, self.file)).read()
        if self.file == "cpuacct.usage":
            return int(text)
        return int(re.search(r"usage_usec (\d+)", text).group(1)) * 1000

    def limit_memory(self, limit):
        """Caps its processes' memory at limit bytes, swap off: memory.max and memory.swap.max = 0 on v2,
        memory.limit_in_bytes (and memory.memsw.limit_in_bytes, swap included) in the v1 memory hierarchy.
        A process that reads its limit when it starts must join (procs_files()) before it does. Raises
        OSError when the limit cannot be set."""
        if not self.path:
            raise OSError("no cgroup to limit")
        if self.file == "cpu.stat":
            if not os.path.exists(os.path.join(self.path, "memory.max")):
                with open(os.path.join(os.path.dirname(self.path), "cgroup.subtree_control"), "w") as f:
                    f.write("+memory")
            self.memory_path = self.path
            limit_file, swap_file, swap_value = "memory.max", "memory.swap.max", 0
        else:
            if not os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"):
                raise OSError("no memory controller: neither cgroup v2's memory.max nor a v1 memory hierarchy")
            self.memory_path = os.path.join("/sys/fs/cgroup/memory", os.path.basename(self.path))
            os.makedirs(self.memory_path, exist_ok=True)
            limit_file, swap_file, swap_value = "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", limit
        for name, value in ((limit_file, limit), (swap_file, swap_value)):
            path = os.path.join(self.memory_path, name)
            if name == swap_file and not os.path.exists(path):
                continue  # no swap accounting: no swap limit to set
            with open(path, "w") as f:
                f.write(str(value))
            got = open(path).read().strip()
            if got != str(value):
                raise OSError(f"{path}: wrote {value}, reads {got}")

    def procs_files(self):
        """The cgroup.procs files a process writes itself to, to join this cgroup (and its memory cgroup)."""
        dirs = [self.path] + ([self.memory_path] if self.memory_path not in (None, self.path) else [])
        return [os.path.join(d, "cgroup.procs") for d in dirs]

    def memory_events(self):
        """What the memory limit did: limit_bytes, oom_kill, oom (v2 only: v1 counts no OOM events apart from
        kills) and peak_bytes (memory.peak, or v1's memory.max_usage_in_bytes; None when absent), with the
        cgroup and its version."""
        p = self.memory_path

        def read(name):
            try:
                return open(os.path.join(p, name)).read()
            except OSError:
                return None

        def number(text):
            return int(text) if text and text.strip().isdigit() else None

        if self.file == "cpu.stat":
            events = dict(line.split() for line in (read("memory.events") or "").splitlines() if line.strip())
            return {"cgroup": p, "version": 2, "limit_bytes": number(read("memory.max")),
                    "oom_kill": number(events.get("oom_kill")), "oom": number(events.get("oom")),
                    "peak_bytes": number(read("memory.peak"))}
        control = dict(line.split() for line in (read("memory.oom_control") or "").splitlines() if line.strip())
        return {"cgroup": p, "version": 1, "limit_bytes": number(read("memory.limit_in_bytes")),
                "oom_kill": number(control.get("oom_kill")), "oom": None,
                "peak_bytes": number(read("memory.max_usage_in_bytes"))}

    def remove(self):
        for path in {self.path, self.memory_path} - {None}:
            try:
                os.rmdir(path)
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


def cpu_ticks(pid):
    """utime + stime of pid (every thread, also ones that exited) in clock ticks (CLK_TCK per second)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


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


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
