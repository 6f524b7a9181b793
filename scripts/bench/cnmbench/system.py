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

    def cpu_ns(self):
        """The same in whole nanoseconds (cgroup v2 counts microseconds)."""
        text = open(os.path.join(self.path, self.file)).read()
        if self.file == "cpuacct.usage":
            return int(text)
        return int(re.search(r"usage_usec (\d+)", text).group(1)) * 1000

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
