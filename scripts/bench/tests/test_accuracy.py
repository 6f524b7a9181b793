"""accuracy(): the ground truth of a run against what a collector reported, per connection."""
import unittest

from cnmbench.accuracy import accuracy

LO = "127.0.0.1"
# one TCP connection: client 40000 -> server 5000, 100 B client -> server, 200 B back
CONN = ("tcp", LO, 40000, LO, 5000, 100, 200)
OTHER = ("tcp", LO, 40001, LO, 5000, 1000, 3000)


def client(conn, sent=None, received=None):
    """The client's view of conn (the agent's and bpftrace's rows: local first)."""
    proto, cip, cp, sip, sp, c2s, s2c = conn
    return (proto, cip, cp, sip, sp, c2s if sent is None else sent, s2c if received is None else received)


def server(conn, sent=None, received=None):
    proto, cip, cp, sip, sp, c2s, s2c = conn
    return (proto, sip, sp, cip, cp, s2c if sent is None else sent, c2s if received is None else received)


class AgentViews(unittest.TestCase):
    def test_exact_both_ends(self):
        a = accuracy([CONN], [client(CONN), server(CONN)], "agent")
        self.assertEqual(a, {"connections": 1, "seen": 1, "exact": 1, "seen_pct": 100.0, "exact_pct": 100.0,
                             "bytes_true": 300, "bytes_abs_error_pct": 0.0, "views": 2, "rolled_rows": 0, "rolled_up": 0})

    def test_one_end_only_is_seen_and_exact(self):
        a = accuracy([CONN], [server(CONN)], "agent")
        self.assertEqual((a["seen"], a["exact"], a["views"], a["bytes_abs_error_pct"]), (1, 1, 1, 0.0))

    def test_short_bytes_missing(self):
        # the client's view lacks 50 of the 200 bytes it received; the server's is right
        a = accuracy([CONN], [client(CONN, received=150), server(CONN)], "agent")
        self.assertEqual((a["seen"], a["exact"]), (1, 0))
        self.assertEqual(a["exact_pct"], 0.0)
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 50 / 300)

    def test_extra_bytes(self):
        # 30 B too many sent by the server's view, 10 B too few received by it: the worst view's error, 40 B
        a = accuracy([CONN], [client(CONN), server(CONN, sent=230, received=90)], "agent")
        self.assertEqual((a["seen"], a["exact"]), (1, 0))
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 40 / 300)

    def test_worst_view_counts_not_the_sum(self):
        a = accuracy([CONN], [client(CONN, sent=90), server(CONN, sent=180)], "agent")
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 20 / 300)  # max(10, 20)

    def test_extra_connection_not_in_the_truth_is_ignored(self):
        harness = ("tcp", LO, 33333, LO, 8080, 5, 7)  # e.g. the harness's own reads of the agent's API
        a = accuracy([CONN], [client(CONN), server(CONN), harness, server(harness)], "agent")
        self.assertEqual((a["connections"], a["seen"], a["exact"], a["views"]), (1, 1, 1, 2))
        self.assertEqual(a["bytes_abs_error_pct"], 0.0)

    def test_unseen_connection_counts_whole(self):
        a = accuracy([CONN, OTHER], [client(CONN), server(CONN)], "agent")
        self.assertEqual((a["connections"], a["seen"], a["exact"]), (2, 1, 1))
        self.assertEqual((a["seen_pct"], a["exact_pct"]), (50.0, 50.0))
        self.assertEqual(a["bytes_true"], 4300)
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 4000 / 4300)

    def test_nothing_reported(self):
        a = accuracy([CONN, OTHER], [], "agent")
        self.assertEqual((a["seen"], a["exact"], a["views"]), (0, 0, 0))
        self.assertEqual(a["bytes_abs_error_pct"], 100.0)

    def test_split_across_intervals_is_summed(self):
        # a long-lived connection reported in three intervals, each with that interval's bytes
        obs = [client(CONN, 40, 0), client(CONN, 60, 150), client(CONN, 0, 50),
               server(CONN, 0, 40), server(CONN, 200, 60)]
        a = accuracy([CONN], obs, "agent")
        self.assertEqual((a["seen"], a["exact"], a["views"], a["bytes_abs_error_pct"]), (1, 1, 2, 0.0))

    def test_split_with_a_missing_interval(self):
        obs = [client(CONN, 40, 0), client(CONN, 0, 50), server(CONN)]  # (60, 150) never reported
        a = accuracy([CONN], obs, "agent")
        self.assertEqual((a["seen"], a["exact"]), (1, 0))
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 210 / 300)

    def test_truth_rows_of_one_key_are_summed(self):
        # two ground-truth rows for one 4-tuple (e.g. one from each conn-workload process) make one connection
        half = ("tcp", LO, 40000, LO, 5000, 50, 100)
        a = accuracy([half, half], [client(CONN), server(CONN)], "agent")
        self.assertEqual((a["connections"], a["exact"], a["bytes_true"]), (1, 1, 300))

    def test_protocol_numbers_and_names(self):
        udp = ("udp", LO, 40002, LO, 6000, 500, 500)
        obs = [(0,) + client(CONN)[1:], (1,) + client(udp)[1:]]
        a = accuracy([CONN, udp], obs, "agent")
        self.assertEqual((a["seen"], a["exact"]), (2, 2))

    def test_protocol_must_match(self):
        a = accuracy([CONN], [("udp",) + client(CONN)[1:]], "agent")
        self.assertEqual(a["seen"], 0)

    def test_no_truth(self):
        a = accuracy([], [client(CONN)], "agent")
        self.assertEqual(a, {"connections": 0, "seen": 0, "exact": 0, "seen_pct": None, "exact_pct": None,
                             "bytes_true": 0, "bytes_abs_error_pct": None, "views": 0, "rolled_rows": 0, "rolled_up": 0})


# three connections of one client to one service (one rollup group), and one to another service
GROUP = [("tcp", LO, 40010 + i, LO, 5000, 100 + i, 200 + 2 * i) for i in range(3)]
ELSEWHERE = ("tcp", LO, 40020, LO, 6000, 7, 9)


def outgoing(conns, n=None, sent=0, received=0):
    """The client's rollup of conns: local port 0, their bytes summed (plus sent, received extra)."""
    proto, cip, _, sip, sp = conns[0][:5]
    return (proto, cip, 0, sip, sp, sum(c[5] for c in conns) + sent, sum(c[6] for c in conns) + received,
            len(conns) if n is None else n)


def incoming(conns, sent=0, received=0):
    """The server's rollup of conns: remote port 0."""
    proto, cip, _, sip, sp = conns[0][:5]
    return (proto, sip, sp, cip, 0, sum(c[6] for c in conns) + sent, sum(c[5] for c in conns) + received, len(conns))


class AgentRollups(unittest.TestCase):
    def test_outgoing_and_incoming_rollups_exact(self):
        a = accuracy(GROUP, [outgoing(GROUP), incoming(GROUP)], "agent")
        self.assertEqual((a["connections"], a["seen"], a["exact"], a["views"]), (3, 3, 3, 2))
        self.assertEqual((a["rolled_rows"], a["rolled_up"], a["bytes_abs_error_pct"]), (2, 6, 0.0))

    def test_one_byte_off_fails_the_whole_group(self):
        a = accuracy(GROUP, [outgoing(GROUP, received=-1), incoming(GROUP)], "agent")
        self.assertEqual((a["seen"], a["exact"]), (3, 0))
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 1 / sum(c[5] + c[6] for c in GROUP))
        a = accuracy(GROUP, [outgoing(GROUP), incoming(GROUP, sent=1)], "agent")
        self.assertEqual((a["seen"], a["exact"]), (3, 0))

    def test_rolled_and_plain_rows_of_one_end_are_summed(self):
        # the client rolled up two of the three in one interval and reported the third on its own; the
        # server reported every connection on its own
        obs = [outgoing(GROUP[:2]), client(GROUP[2])] + [server(c) for c in GROUP]
        a = accuracy(GROUP, obs, "agent")
        self.assertEqual((a["seen"], a["exact"], a["views"], a["rolled_up"]), (3, 3, 4, 2))
        self.assertEqual(a["bytes_abs_error_pct"], 0.0)

    def test_a_wrong_plain_view_of_the_other_end_is_still_caught(self):
        obs = [outgoing(GROUP)] + [server(c) for c in GROUP[:2]] + [server(GROUP[2], sent=0)]
        a = accuracy(GROUP, obs, "agent")
        self.assertEqual((a["seen"], a["exact"]), (3, 2))
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * GROUP[2][6] / sum(c[5] + c[6] for c in GROUP))

    def test_plain_connections_beside_a_rollup_are_checked_per_connection(self):
        obs = [outgoing(GROUP), incoming(GROUP), client(ELSEWHERE), server(ELSEWHERE, received=6)]
        a = accuracy(GROUP + [ELSEWHERE], obs, "agent")
        self.assertEqual((a["connections"], a["seen"], a["exact"], a["rolled_rows"]), (4, 4, 3, 2))

    def test_a_rollup_claiming_fewer_connections_than_its_bytes_carry(self):
        # bytes exact, but the row says it merged two of the three: no more than two count
        a = accuracy(GROUP, [outgoing(GROUP, n=2)], "agent")
        self.assertEqual((a["seen"], a["exact"], a["rolled_up"]), (2, 2, 2))

    def test_the_other_ends_plain_views_count_as_seen(self):
        # the client rolled up two of three; the server reported all three on its own, exactly
        a = accuracy(GROUP, [outgoing(GROUP[:2])] + [server(c) for c in GROUP], "agent")
        self.assertEqual((a["seen"], a["exact"]), (3, 0))

    def test_a_rollup_summed_over_intervals(self):
        first, second = outgoing(GROUP[:1]), outgoing(GROUP[1:])
        a = accuracy(GROUP, [first, second], "agent")
        self.assertEqual((a["seen"], a["exact"], a["views"], a["rolled_rows"], a["rolled_up"]), (3, 3, 1, 2, 3))

    def test_a_rollup_of_another_group_is_ignored(self):
        a = accuracy([ELSEWHERE], [outgoing(GROUP), client(ELSEWHERE)], "agent")
        self.assertEqual((a["seen"], a["exact"], a["views"], a["rolled_rows"]), (1, 1, 1, 0))

    def test_a_rollup_missing_a_connection_sees_those_it_stands_for(self):
        a = accuracy(GROUP, [outgoing(GROUP[:2])], "agent")
        self.assertEqual((a["seen"], a["exact"]), (2, 0))
        self.assertAlmostEqual(a["bytes_abs_error_pct"],
                               100.0 * (GROUP[2][5] + GROUP[2][6]) / sum(c[5] + c[6] for c in GROUP))


def flow(src, sport, dst, dport, packets, payload, proto="tcp", syn=True):
    """A pmacctd row for a directional flow carrying payload bytes in packets: L3 bytes as pmacctd counts them."""
    per = 52 if proto == "tcp" else 28
    return (proto, src, sport, dst, dport, packets, payload + per * packets + (8 if proto == "tcp" and syn else 0))


class PmacctdFlows(unittest.TestCase):
    def test_exact_after_header_conversion(self):
        obs = [flow(LO, 40000, LO, 5000, 6, 100), flow(LO, 5000, LO, 40000, 5, 200)]
        a = accuracy([CONN], obs, "pmacctd")
        self.assertEqual((a["seen"], a["exact"], a["views"], a["bytes_abs_error_pct"]), (1, 1, 1, 0.0))

    def test_one_direction_missing(self):
        a = accuracy([CONN], [flow(LO, 40000, LO, 5000, 6, 100)], "pmacctd")
        self.assertEqual((a["seen"], a["exact"]), (1, 0))
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 200 / 300)

    def test_retransmission_shows_as_extra_bytes(self):
        # a 100 B segment sent twice: 152 L3 bytes more than the payload conversion expects
        c2s = flow(LO, 40000, LO, 5000, 7, 100)
        c2s = c2s[:6] + (c2s[6] + 100,)
        a = accuracy([CONN], [c2s, flow(LO, 5000, LO, 40000, 5, 200)], "pmacctd")
        self.assertEqual(a["exact"], 0)
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 100 / 300)

    def test_flow_split_across_rows_is_one_view(self):
        # The same directional flow in two rows: summed into one view, but the SYN's 8 B come off each row,
        # so the view is 8 B short. Hence parse_pmacct_csv merges a flow's rows before accuracy() sees them.
        obs = [("tcp", LO, 40000, LO, 5000, 2, 60 + 52 * 2 + 8), ("tcp", LO, 40000, LO, 5000, 4, 40 + 52 * 4),
               flow(LO, 5000, LO, 40000, 5, 200)]
        a = accuracy([CONN], obs, "pmacctd")
        self.assertEqual((a["seen"], a["exact"], a["views"]), (1, 0, 1))
        self.assertAlmostEqual(a["bytes_abs_error_pct"], 100.0 * 8 / 300)

    def test_syn_options_per_truth_row(self):
        # two connections on one 4-tuple (ports reused): 8 B of SYN options per direction for each
        half = ("tcp", LO, 40000, LO, 5000, 50, 100)
        obs = [("tcp", LO, 40000, LO, 5000, 6, 100 + 52 * 6 + 16), ("tcp", LO, 5000, LO, 40000, 5, 200 + 52 * 5 + 16)]
        a = accuracy([half, half], obs, "pmacctd")
        self.assertEqual((a["connections"], a["exact"]), (1, 1))

    def test_udp_header_only(self):
        udp = ("udp", LO, 40002, LO, 6000, 500, 700)
        obs = [flow(LO, 40002, LO, 6000, 5, 500, "udp"), flow(LO, 6000, LO, 40002, 5, 700, "udp")]
        a = accuracy([udp], obs, "pmacctd")
        self.assertEqual((a["seen"], a["exact"], a["bytes_abs_error_pct"]), (1, 1, 0.0))

    def test_unrelated_flow_ignored(self):
        obs = [flow(LO, 40000, LO, 5000, 6, 100), flow(LO, 5000, LO, 40000, 5, 200),
               flow(LO, 55555, LO, 53, 1, 40, "udp")]
        a = accuracy([CONN, OTHER], obs, "pmacctd")
        self.assertEqual((a["connections"], a["seen"], a["exact"], a["views"]), (2, 1, 1, 1))


if __name__ == "__main__":
    unittest.main()
