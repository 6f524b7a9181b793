"""The BENCHMARKS.md table."""
import os
import types
import unittest

from cnmbench import system
from cnmbench.report import error_share, fmt, instructions_line, memory_cap_line, report, share_of, throughput

CFG = types.SimpleNamespace(command="make bench", idle_s=2.0, settle_s=1.0, interval=3, memory_cap=128 << 20,
                            out=os.path.join(system.ROOT, ".build", "bench"))
MACH = {"cpu": "Test CPU", "cores": 2, "memory_gib": 4.0, "kernel": "6.1.0", "os": "Debian GNU/Linux 12 (bookworm)",
        "bpftrace": "bpftrace v0.17.0", "pmacctd": "Promiscuous Mode Accounting Daemon, pmacctd 1.7.7",
        "load_before": ["0.10", "0.20", "0.30"]}

NONE = {"workload": "churn-1k", "collector": "none", "ok": True, "workload_result": {"rate": 1000.2},
        "workload_cpu_s": 0.5, "rss_kib": None, "hwm_kib": None, "lost": None, "notes": []}
AGENT = {"workload": "churn-1k", "collector": "agent-sock_length", "ok": True, "ran": "ebpf: sock_length",
         "workload_result": {"rate": 1000.1}, "workload_cpu_s": 0.65, "collector_cpu_s": 0.353, "connections_made": 2000,
         "rss_kib": 51200, "hwm_kib": 76800, "lost": {},
         "notes": ["interval fetch failed: timed out"],
         "accuracy": {"connections": 10, "seen": 10, "exact": 9, "seen_pct": 100.0, "exact_pct": 90.0,
                      "bytes_abs_error_pct": 0.5}}
FAILED = {"workload": "churn-1k", "collector": "pmacctd", "ok": False, "error": "RuntimeError: pmacctd exited (1)"}
BULK_NONE = {"workload": "bulk", "collector": "none", "ok": True, "workload_result": {"gbit_s": 20.0, "rate": 1.0},
             "workload_cpu_s": 2.0, "lost": None}
BULK = {"workload": "bulk", "collector": "bpftrace", "ok": True, "workload_result": {"gbit_s": 15.0},
        "workload_cpu_s": 2.5, "collector_cpu_s": 0.0104, "connections_made": 3, "rss_kib": 20480, "hwm_kib": 30720,
        "lost": {"perf_lost": 3, "map_full": "see bpftrace.err"},
        "accuracy": {"connections": 3, "seen": 2, "exact": 1, "seen_pct": 200 / 3, "exact_pct": 100 / 3,
                     "bytes_abs_error_pct": 33.3333}}
INS = {"instructions_per_closed_connection": 1234.56, "ir": {"20000": 90_000_000, "40000": 114_691_200},
       "binary": ".build/release/cnm-collection-bench"}
CAP_STATUS = {"rss_bytes": 95 << 20, "limit_bytes": 128 << 20, "budget_bytes": 107374182,
              "limit_source": "/sys/fs/cgroup/memory/cnm-bench-1-x/memory.limit_in_bytes"}
CAPPED = dict(AGENT, workload="many-50k-capped",
              accuracy=dict(AGENT["accuracy"], rolled_rows=4, rolled_up=41000),
              memory_cap={"cgroup": "/sys/fs/cgroup/memory/cnm-bench-1-x", "version": 1, "limit_bytes": 128 << 20,
                          "oom_kill": 0, "oom": None, "peak_bytes": 120 << 20, "alive": True, "exit": None,
                          "status_memory": CAP_STATUS})
KILLED = {"workload": "many-50k-capped", "collector": "agent-ebpfless", "ok": False,
          "error": "URLError: <urlopen error [Errno 111] Connection refused>",
          "memory_cap": {"cgroup": "/sys/fs/cgroup/x", "version": 2, "limit_bytes": 128 << 20, "oom_kill": 1,
                         "oom": 3, "peak_bytes": 128 << 20, "alive": False, "exit": -9, "status_memory": None}}


def table(md):
    return [line for line in md.splitlines() if line.startswith("| ")]


class Table(unittest.TestCase):
    def setUp(self):
        self.saved = list(system.failures)

    def tearDown(self):
        system.failures[:] = self.saved

    def test_rows(self):
        md = report(CFG, [NONE, AGENT, FAILED, BULK_NONE, BULK], MACH, 641.2, INS)
        self.assertEqual(table(md), [
            "| workload | collector | collector CPU | CPU per 1k conns | % wl | throughput | slowdown | wl CPU + | RSS steady / peak | seen | exact | byte error | lost |",
            "| churn-1k | none | – | – | – | 1000.2 /s | – | – | – | – | – | – | – |",
            "| churn-1k | agent-sock_length | 353 ms | 176.5 ms | 54.3% | 1000.1 /s | +0.0% | +30.0% | 50.0 / 75.0 MiB | 100.0% (10/10) | 90.0% (9) | 0.50% | 0 |",
            "| churn-1k | pmacctd | failed: RuntimeError: pmacctd exited (1) | | | | | | | | | | |",
            "| bulk | none | – | – | – | 20.0 Gbit/s | – | – | – | – | – | – | – |",
            "| bulk | bpftrace | 10 ms | 3466.7 ms | 0.4% | 15.0 Gbit/s | +25.0% | +25.0% | 20.0 / 30.0 MiB | 66.7% (2/3) | 33.3% (1) | 33.33% | perf_lost 3, map_full see bpftrace.err |",
        ])
        self.assertEqual({row.count("|") for row in table(md)}, {14})

    def test_header_and_sections(self):
        system.failures.append("churn-1k / pmacctd: RuntimeError: pmacctd exited (1)")
        md = report(CFG, [NONE, AGENT, FAILED], MACH, 641.2, INS)
        lines = md.splitlines()
        self.assertEqual(lines[0], "# Benchmarks: cnm-agent against peers")
        self.assertRegex(lines[2], r"^Written by `make bench` on \d{4}-\d\d-\d\d \d\d:\d\d UTC in 641 s\.$")
        self.assertEqual(lines[3], "Machine: Test CPU, 2 cores, 4.0 GiB, Linux 6.1.0, Debian GNU/Linux 12 (bookworm);"
                                   " bpftrace v0.17.0; Promiscuous Mode Accounting Daemon. Load average before: 0.10 0.20 0.30.")
        self.assertEqual(lines[4], instructions_line(INS))
        self.assertIn("`many-50k-capped`: `many-50k` for the agent modes alone, their cgroup limited to 128 MiB", md)
        self.assertIn("measured over 2 s just before the workload, after 1 s of settling", md)
        self.assertIn("agent report interval 3 s", md)
        tail = md[md.index("Agent modes as /status reported them:"):]
        self.assertEqual(tail.splitlines(), [
            "Agent modes as /status reported them:",
            "- agent-sock_length: ebpf: sock_length",
            "",
            "Notes:",
            "- churn-1k / agent-sock_length: interval fetch failed: timed out",
            "",
            "Failures:",
            "- churn-1k / pmacctd: RuntimeError: pmacctd exited (1)",
            "",
            "Workload parameters and raw results: `.build/bench/results.json`; per run: collector logs and ground truth under `runs/`.",
        ])
        self.assertTrue(md.endswith("under `runs/`.\n"))

    def test_no_baseline(self):
        row = table(report(CFG, [AGENT], MACH, 1, INS))[1]
        self.assertEqual(row.split(" | ")[6:8], ["–", "–"])  # slowdown and wl CPU + need the run with no collector

    def test_instructions_line(self):
        self.assertEqual(instructions_line(INS),
                         "Agent instructions per closed connection: 1,235 (callgrind's instruction count of"
                         " `.build/release/cnm-collection-bench 40000 1` less that of `20000 1`, over 20,000: the"
                         " per-closed-flow path alone, start-up left out, whatever the machine's load).")
        self.assertEqual(instructions_line({"note": "cnm-collection-bench not built"}),
                         "Agent instructions per closed connection: not measured (cnm-collection-bench not built).")

    def test_memory_cap_section_and_rollups(self):
        md = report(CFG, [CAPPED, KILLED], MACH, 1, INS)
        section = md[md.index("Under the memory cap:"):md.index("Agent modes as")].strip().splitlines()
        self.assertEqual(section, [
            "Under the memory cap:",
            "- many-50k-capped / agent-sock_length: OOM kills 0, alive; cgroup v1 limit 128.0 MiB, peak 120.0 MiB;"
            " agent's /status: RSS 95.0 MiB, limit 128.0 MiB from"
            " /sys/fs/cgroup/memory/cnm-bench-1-x/memory.limit_in_bytes, budget 102.4 MiB",
            "- many-50k-capped / agent-ebpfless: OOM kills 1, dead (exit status -9); OOM events 3; cgroup v2 limit"
            " 128.0 MiB, peak 128.0 MiB; no /status from the agent;"
            " run failed: URLError: <urlopen error [Errno 111] Connection refused>",
        ])
        self.assertIn("- many-50k-capped / agent-sock_length: 41000 connections in 4 rolled-up rows;"
                      " interval fetch failed: timed out", md)
        self.assertEqual(memory_cap_line(KILLED), section[2])

    def test_a_share_short_of_all_never_prints_as_all(self):
        self.assertEqual(share_of(49_998, 50_000), "99.9%")
        self.assertEqual(share_of(50_000, 50_000), "100.0%")
        self.assertEqual(share_of(1, 50_000), "0.1%")
        self.assertEqual(share_of(0, 50_000), "0.0%")
        self.assertEqual(share_of(4_071, 4_602), "88.5%")
        self.assertEqual(share_of(None, 10), "–")
        self.assertEqual(share_of(3, 0), "–")
        self.assertEqual(error_share(0.0), "0.00%")
        self.assertEqual(error_share(0.0004), "<0.01%")
        self.assertEqual(error_share(27.891), "27.89%")

    def test_fmt_and_throughput(self):
        self.assertEqual(fmt(None), "–")
        self.assertEqual(fmt(1.25), "1.2")
        self.assertEqual(fmt(353.4, ".0f", " ms"), "353 ms")
        self.assertEqual(fmt(0.0, "+.1f", "%"), "+0.0%")
        self.assertEqual(throughput({"workload_result": {"gbit_s": 3.5, "rate": 1}}), (3.5, "Gbit/s"))
        self.assertEqual(throughput({"workload_result": {"rate": 1000.0}}), (1000.0, "/s"))
        self.assertEqual(throughput({}), (None, "/s"))


if __name__ == "__main__":
    unittest.main()
