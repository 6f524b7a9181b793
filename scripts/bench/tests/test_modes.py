"""The pure parts of --modes and --collection: rounding, reading /status, the printed reports."""
import unittest

from cnmbench.collection import collection_report
from cnmbench.modes import calc, describe, jget
from cnmbench.report import modes_report

HEADER = {"kernel": "6.18.0", "cores": 2, "interval": 10, "sample": "1", "short": (10000, 5000, 100),
          "bulk_bytes": 1073741824, "connections": 10000, "cgroup": "/sys/fs/cgroup/cnm-bench-1-modes"}


class Figures(unittest.TestCase):
    def test_calc_rounds_like_printf(self):
        # what awk's printf gives for these (the figures were computed with awk once)
        self.assertEqual(calc(0.0725), "0.072")  # 0.0725 is just below in binary
        self.assertEqual(calc(2.5, 0), "2")  # to even
        self.assertEqual(calc(71.96, 1), "72.0")
        self.assertEqual(calc(1 / 3, 6), "0.333333")

    def test_net_cpu_from_rounded_strings(self):
        # the figures a short window gives: computed from calc()'s strings, as the report has them
        gross, window, idle_rate = calc(0.7734567), calc(65.4321), calc((4000000 + 3000000) / 1e9 / (6.001 + 6.002), 6)
        net = calc(float(gross) - float(idle_rate) * float(window), 4)
        self.assertEqual((gross, window, idle_rate, net), ("0.773", "65.432", "0.000583", "0.7349"))
        self.assertEqual(calc(float(net) * 1000 * 1000 / 10000, 1), "73.5")

    def test_jget(self):
        s = {"reports": 3, "healthy": True, "capture": {"on": True}, "problems": {"capture_ring_dropped": {"count": 7}}}
        self.assertEqual(jget(s, "reports"), "3")
        self.assertEqual(jget(s, "healthy"), "True")
        self.assertEqual(jget(s, "capture"), '{"on": true}')
        self.assertEqual(jget(s, "problems.capture_ring_dropped.count"), "7")
        self.assertEqual(jget(s, "problems.other.count"), "?")
        self.assertEqual(jget(s, "reports.count"), "?")
        self.assertEqual(jget({}, "polls"), "?")

    def test_describe(self):
        s = {"mode": "ebpf", "mode_reason": "BTF and ring buffer available",
             "strategies": [{"name": "sock_length", "chosen": True}, {"name": "kernel_counters", "chosen": False}],
             "ebpf_strategy": "sock_length"}
        self.assertEqual(describe(s), ("ebpf", "sock_length", "BTF and ring buffer available ebpf_strategy=sock_length"))
        self.assertEqual(describe({"mode": "ebpfless"}), ("ebpfless", "?", ""))


class ModesReport(unittest.TestCase):
    def test_report(self):
        results = {
            "sock_length": {"ran": "ebpf", "chosen": "sock_length", "reason": "asked", "cpu_k": "7.2", "pct_k": "6.6",
                            "cpu_g": "2.9", "pct_g": "0.4", "bpf_k": "11.5", "bpf_g": "27.8", "rss": "54.5",
                            "hwm": "66.1", "idle": "0.4 before, 1.0 after", "details": "short: agent 72 ms during",
                            "notes": ""},
            "ebpfless": {"notes": "memory phase: agent did not start. cpu phase: agent did not start. "},
        }
        self.assertEqual(modes_report(HEADER, ["sock_length", "ebpfless"], results), [
            "",
            "cnm-agent collection modes — 6.18.0, 2 cores, interval 10 s, sample 1 s; short: 10000 connections at"
            " 5000/s, 100 B each way; bulk: 1073741824 B; held: 10000 connections",
            "Agent CPU (ms) is net of its idle rate; short: from the workload's start until its TIME_WAIT sockets expired",
            "(a report included); bulk: until two samples after it. CPU read from the agent's own cgroup (ns):"
            " /sys/fs/cgroup/cnm-bench-1-modes.",
            "BPF (ms) = run time of the agent's cnm_* hook programs, spent inside the workload's system calls (already part of",
            "the workload's CPU); measured with kernel.bpf_stats_enabled=1, which adds its own small cost per run.",
            "",
            "| mode asked → ran | CPU per 1k conns | % of workload | CPU per GiB | % of workload | BPF per 1k conns | BPF per GiB | RSS steady | RSS peak |",
            "|---|---|---|---|---|---|---|---|---|",
            "| sock_length → ebpf (sock_length) | 7.2 ms | 6.6% | 2.9 ms | 0.4% | 11.5 ms | 27.8 ms | 54.5 MiB | 66.1 MiB |",
            "| ebpfless → ? (?) | – | – | – | – | – | – | – | – |",
            "",
            "- sock_length: asked. Idle agent CPU 0.4 before, 1.0 after ms/s. short: agent 72 ms during",
            "- ebpfless: mode unknown. Idle agent CPU ? ms/s.  Notes: memory phase: agent did not start."
            " cpu phase: agent did not start. ",
        ])

    def test_no_cgroup(self):
        lines = modes_report(dict(HEADER, cgroup=None), [], {})
        self.assertTrue(lines[3].endswith("CPU read from the agent's own cgroup (ns): none, 10 ms clock ticks."))


class CollectionReport(unittest.TestCase):
    def test_report(self):
        # 30 s window: 157 ticks at 100 Hz over 29 collections
        self.assertEqual(collection_report(10000, 20004, 1000, 1157, 10, 39, 100, 60314, 89088), [
            "connections open: 10000 (20004 sockets tracked)",
            "collections measured: 29",
            "CPU per collection: 54.1 ms (user+system, includes the HTTP server idling)",
            "RSS: 58.9 MiB now, 87.0 MiB peak",
        ])

    def test_no_collection_in_the_window(self):
        self.assertIn("CPU per collection: 50.0 ms (user+system, includes the HTTP server idling)",
                      collection_report(1, 2, 0, 5, 3, 3, 100, 1024, 1024))


if __name__ == "__main__":
    unittest.main()
