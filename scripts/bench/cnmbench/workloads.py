"""The workloads: scripts/conn-workload.c driven per run, each writing the ground truth per connection."""
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

from .system import ROOT, log, started, stop_process, wait_until

BUSYBOX = "cnm-test/busybox:latest"


def build(path):
    """Compiles scripts/conn-workload.c to path."""
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", path, os.path.join(ROOT, "scripts", "conn-workload.c")],
                   check=True)


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
        return read_truth(self.run_dir)


def read_truth(run_dir):
    """The ground truth of a run: every truth*.tsv conn-workload wrote in run_dir (one per process), a row
    per connection: (proto, client ip, client port, server ip, server port, bytes c->s, bytes s->c)."""
    rows = []
    files = sorted(f for f in os.listdir(run_dir) if f.startswith("truth") and f.endswith(".tsv"))
    for name in files:
        with open(os.path.join(run_dir, name)) as f:
            for line in f:
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
    try:
        for i, left in enumerate(range(n, 0, -per)):
            k = min(per, left)
            p = w.cmd("hold", k, rounds, size, stdin=subprocess.PIPE,
                      truth_file=os.path.join(w.run_dir, f"truth-{i}.tsv"))
            p.lines = []
            threading.Thread(target=lambda p=p: [p.lines.append(line.strip()) for line in p.stderr], daemon=True).start()
            procs.append(p)
            wait_until(lambda: "ready" in p.lines or p.poll() is not None, 120, f"{k} connections opened")
            if p.poll() is not None:
                raise RuntimeError(f"conn-workload hold failed: {p.lines}")
        collector.while_held()
    except Exception:
        # a collector that died (an agent killed under its memory cap) must not leave the connections held
        # through the runs after it
        for p in procs:
            stop_process(p, timeout=10)
        raise
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


def hold_connections(n, log_dir, per_holder=5000, timeout=60):
    """n loopback TCP connections held open by scripts/hold-connections.py, per_holder in each process (two
    fds per connection: its limit on open files is raised to fit, within what it may set). Returns the
    processes once every one has said ready; stop_holders() ends them."""
    holders = []
    for left in range(n, 0, -per_holder):
        k = min(left, per_holder)
        hlog = os.path.join(log_dir, f"holder-{left}.log")
        limit = k * 2 + 256

        def set_limit(limit=limit):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with open(hlog, "w") as out:
            try:
                p = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "hold-connections.py"), str(k)],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=set_limit)
            except subprocess.SubprocessError as e:
                stop_holders(holders)
                raise RuntimeError(f"hold-connections.py did not start (open files limit {limit}?): {e}") from e
        started.append(p)
        holders.append(p)

        def ready(p=p, hlog=hlog):
            if p.poll() is not None:
                raise RuntimeError(f"hold-connections.py failed: {open(hlog).read().strip()}")
            return "ready" in open(hlog).read()

        try:
            wait_until(ready, timeout, "hold-connections.py ready", 0.2)
        except (RuntimeError, TimeoutError):
            stop_holders(holders)
            raise
    log(f"holding {n} loopback connections ({n * 2} sockets)")
    return holders


def stop_holders(holders):
    for p in holders:
        stop_process(p, timeout=10)
    holders.clear()
