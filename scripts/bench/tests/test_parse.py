"""Parsing what the collectors, the kernel and the workload write: bpftrace's maps, pmacctd's CSV, the
agent's JSON and its intake messages, a cgroup's memory files, the ground-truth TSVs."""
import os
import tempfile
import unittest
import urllib.request

from cnmbench.accuracy import accuracy
from cnmbench.collectors import (Intake, agent_lost, agent_observations, bpftrace_lost, ip_from_u32, parse_bpftrace,
                                 parse_pmacct_csv)
from cnmbench.system import Cgroup
from cnmbench.workloads import read_truth

LO_U32 = 16777343  # 127.0.0.1 as acct.bt prints it: the address in network order, read as a little-endian u32


class Bpftrace(unittest.TestCase):
    def test_address(self):
        self.assertEqual(ip_from_u32(LO_U32), "127.0.0.1")
        self.assertEqual(ip_from_u32(0x0A0011AC), "172.17.0.10")

    def test_closed_and_open_sockets(self):
        text = "\n".join([
            "Attaching 4 probes...",
            "ready",
            "",
            f"@ctx[{LO_U32}, 40000, {LO_U32}, 5000]: 100",
            f"@ctx[{LO_U32}, 5000, {LO_U32}, 40000]: 200",
            f"@ctx[{LO_U32}, 5000, 0, 0]: 0",  # a listener: no remote port, left out
            "",
            f"@crx[{LO_U32}, 40000, {LO_U32}, 5000]: 200",
            f"@crx[{LO_U32}, 5000, {LO_U32}, 40000]: 100",
            "",
            "@rx[-1844674407370955]: 7",
            "",
            f"@tup[-1844674407370955]: ({LO_U32}, 40001, {LO_U32}, 5000)",
            f"@tup[18446612]: ({LO_U32}, 5000, {LO_U32}, 40001)",
            "",
            "@tx[18446612]: 7",
            "@tx[-1844674407370955]: 3",
        ])
        obs = parse_bpftrace(text)
        self.assertCountEqual(obs, [
            ("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 100, 200),
            ("tcp", "127.0.0.1", 5000, "127.0.0.1", 40000, 200, 100),
            ("tcp", "127.0.0.1", 40001, "127.0.0.1", 5000, 3, 7),
            ("tcp", "127.0.0.1", 5000, "127.0.0.1", 40001, 7, 0),  # no @rx: 0
        ])

    def test_a_socket_closed_twice_on_one_tuple_is_summed(self):
        text = f"@ctx[{LO_U32}, 40000, {LO_U32}, 5000]: 100\n@ctx[{LO_U32}, 40000, {LO_U32}, 5000]: 50\n"
        self.assertEqual(parse_bpftrace(text), [("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 150, 0)])

    def test_lost(self):
        self.assertEqual(bpftrace_lost("ready\n", ""), {})
        self.assertEqual(bpftrace_lost("Lost 5 events\n", "Lost 3 events\n"), {"perf_lost": 8})
        self.assertEqual(bpftrace_lost("", "ERROR: Map full; can't update element\n"), {"map_full": "see bpftrace.err"})
        self.assertEqual(bpftrace_lost("", "bpf_map_update_elem: E2BIG"), {"map_full": "see bpftrace.err"})


class Pmacctd(unittest.TestCase):
    CSV = [
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES\n",
        "127.0.0.1,127.0.0.1,40000,5000,tcp,2,172\n",
        "127.0.0.1,127.0.0.1,5000,40000,tcp,5,468\n",
        "127.0.0.1,127.0.0.1,40000,5000,tcp,4,248\n",  # the same flow again: summed
        "127.0.0.1,127.0.0.1,0,0,icmp,1,84\n",  # neither TCP nor UDP: left out
        "127.0.0.1,127.0.0.1,40002,6000,udp,5,640\n",
    ]

    def test_rows_summed_per_flow(self):
        self.assertCountEqual(parse_pmacct_csv(self.CSV), [
            ("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 6, 420),
            ("tcp", "127.0.0.1", 5000, "127.0.0.1", 40000, 5, 468),
            ("udp", "127.0.0.1", 40002, "127.0.0.1", 6000, 5, 640),
        ])

    def test_column_order_from_the_header(self):
        rows = ["PROTOCOL,BYTES,PACKETS,DST_PORT,SRC_PORT,DST_IP,SRC_IP\n", "tcp,420,6,5000,40000,10.0.0.2,10.0.0.1\n"]
        self.assertEqual(parse_pmacct_csv(rows), [("tcp", "10.0.0.1", 40000, "10.0.0.2", 5000, 6, 420)])

    def test_empty(self):
        self.assertEqual(parse_pmacct_csv([]), [])
        self.assertEqual(parse_pmacct_csv([self.CSV[0]]), [])

    def test_parsed_then_compared(self):
        truth = [("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 100, 200)]
        a = accuracy(truth, parse_pmacct_csv(self.CSV[:4]), "pmacctd")
        # 420 - 52 * 6 - 8 = 100 and 468 - 52 * 5 - 8 = 200: exact
        self.assertEqual((a["seen"], a["exact"], a["bytes_abs_error_pct"]), (1, 1, 0.0))


class Agent(unittest.TestCase):
    @staticmethod
    def conn(lport, rport, sent, received, type_="tcp"):
        c = {"type": type_, "laddr": {"ip": "127.0.0.1", "port": lport}, "raddr": {"ip": "127.0.0.1", "port": rport}}
        if sent is not None:
            c["bytes_sent"] = sent
        if received is not None:
            c["bytes_received"] = received
        return c

    def test_observations_per_connection_per_interval(self):
        intervals = [
            {"sequence": 1, "connections": [self.conn(40000, 5000, 40, None)]},
            {"sequence": 2},
            {"sequence": 3, "connections": [self.conn(40000, 5000, 60, 200), self.conn(5000, 40000, None, 100)]},
        ]
        self.assertEqual(agent_observations(intervals), [
            ("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 40, 0, 1),
            ("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 60, 200, 1),
            ("tcp", "127.0.0.1", 5000, "127.0.0.1", 40000, 0, 100, 1),
        ])

    def test_a_rolled_up_row_says_how_many(self):
        rolled = dict(self.conn(0, 5000, 300, 600), rolled_up=3)
        self.assertEqual(agent_observations([{"sequence": 1, "connections": [rolled]}]),
                         [("tcp", "127.0.0.1", 0, "127.0.0.1", 5000, 300, 600, 3)])

    def test_lost(self):
        status = {
            "problems": {"capture_ring_dropped": {"count": 3}, "ringbuf_lost": {"count": 1},
                         "docker_unreachable": {"count": 9}, "table_full": {"count": 2}},
            "tracker": {"dropped_table_full": 4, "closed_without_final_counters": 0, "tracked": 10,
                        "peer_fin_assumed": 5},
        }
        self.assertEqual(agent_lost(status), {"capture_ring_dropped": 3, "ringbuf_lost": 1, "table_full": 2,
                                              "tracker.dropped_table_full": 4, "tracker.peer_fin_assumed": 5})
        self.assertEqual(agent_lost({}), {})
        self.assertEqual(agent_lost({"problems": None, "tracker": None}), {})


class StandInIntake(unittest.TestCase):
    def test_counts_every_post_and_answers_202(self):
        intake = Intake()
        try:
            for body in (b"\x03" * 100, b"x" * 7):
                req = urllib.request.Request(intake.url + "/api/v1/connections", data=body, method="POST")
                with urllib.request.urlopen(req, timeout=5) as r:
                    self.assertEqual(r.status, 202)
            self.assertEqual(intake.counts, {"requests": 2, "bytes": 107})
        finally:
            intake.close()


class CgroupMemory(unittest.TestCase):
    @staticmethod
    def cgroup(d, version, files):
        c = Cgroup.__new__(Cgroup)
        c.path, c.memory_path = d, d
        c.file = "cpu.stat" if version == 2 else "cpuacct.usage"
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        return c

    def test_v2(self):
        with tempfile.TemporaryDirectory() as d:
            c = self.cgroup(d, 2, {"memory.max": "134217728\n", "memory.peak": "120000000\n",
                                   "memory.events": "low 0\nhigh 0\nmax 52\noom 2\noom_kill 1\noom_group_kill 0\n"})
            self.assertEqual(c.memory_events(), {"cgroup": d, "version": 2, "limit_bytes": 134217728, "oom_kill": 1,
                                                 "oom": 2, "peak_bytes": 120000000})

    def test_v2_without_memory_peak(self):
        with tempfile.TemporaryDirectory() as d:
            c = self.cgroup(d, 2, {"memory.max": "max\n", "memory.events": "oom 0\noom_kill 0\n"})
            e = c.memory_events()
            self.assertEqual((e["limit_bytes"], e["oom_kill"], e["peak_bytes"]), (None, 0, None))

    def test_v1(self):
        with tempfile.TemporaryDirectory() as d:
            c = self.cgroup(d, 1, {"memory.limit_in_bytes": "134217728\n", "memory.max_usage_in_bytes": "134217728\n",
                                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"})
            self.assertEqual(c.memory_events(), {"cgroup": d, "version": 1, "limit_bytes": 134217728, "oom_kill": 3,
                                                 "oom": None, "peak_bytes": 134217728})

    def test_joins_both_hierarchies_on_v1(self):
        c = Cgroup.__new__(Cgroup)
        c.path, c.memory_path = "/sys/fs/cgroup/cpuacct/x", "/sys/fs/cgroup/memory/x"
        self.assertEqual(c.procs_files(), ["/sys/fs/cgroup/cpuacct/x/cgroup.procs", "/sys/fs/cgroup/memory/x/cgroup.procs"])
        c.memory_path = c.path
        self.assertEqual(c.procs_files(), ["/sys/fs/cgroup/cpuacct/x/cgroup.procs"])


class Truth(unittest.TestCase):
    def test_every_truth_file_of_the_run(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "truth.tsv"), "w") as f:
                f.write("tcp\t127.0.0.1\t40000\t127.0.0.1\t5000\t100\t200\n")
            with open(os.path.join(d, "truth-0.tsv"), "w") as f:
                f.write("tcp\t127.0.0.1\t40001\t127.0.0.1\t5001\t16\t16\nudp\t127.0.0.1\t40002\t127.0.0.1\t6000\t5\t5\n")
            with open(os.path.join(d, "truth-1.tsv"), "w") as f:
                f.write("tcp\t172.17.0.2\t40003\t172.17.0.1\t5002\t6\t100")  # no newline at the end
            with open(os.path.join(d, "observed.tsv"), "w") as f:
                f.write("tcp\t127.0.0.1\t1\t127.0.0.1\t2\t3\t4\n")  # not ground truth
            self.assertEqual(read_truth(d), [
                ("tcp", "127.0.0.1", 40001, "127.0.0.1", 5001, 16, 16),
                ("udp", "127.0.0.1", 40002, "127.0.0.1", 6000, 5, 5),
                ("tcp", "172.17.0.2", 40003, "172.17.0.1", 5002, 6, 100),
                ("tcp", "127.0.0.1", 40000, "127.0.0.1", 5000, 100, 200),
            ])

    def test_none(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(read_truth(d), [])


if __name__ == "__main__":
    unittest.main()
