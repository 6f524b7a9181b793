"""What a collector reported against the ground truth, per connection (per rollup group where the agent
merged connections)."""


def group_of(k):
    """The rollup group of a connection key (proto, client ip, client port, server ip, server port): what an
    outgoing rollup (client ip, server ip and port) and an incoming one (the same seen from the server) keep."""
    return (k[0], k[1], k[3], k[4])


def error(v, t):
    return abs(v[0] - t[0]) + abs(v[1] - t[1])


def accuracy(truth, obs, kind):
    """Per connection of the ground truth (4-tuple): seen by the collector, and bytes exact.

    obs rows: (proto, lip, lport, rip, rport, sent, received[, rolled_up]). A row may be either end's view
    (the agent and bpftrace report both sockets of a loopback connection); rows of one view are summed over
    intervals. A connection counts as seen if any view of it is there, exact if every view there carries
    exactly the true bytes both ways. pmacctd's rows are directional flows (received None), merged into one
    view.

    An agent row whose ephemeral port is 0 is a rollup of rolled_up connections, made when the agent's memory
    budget cannot hold a row each: outgoing (local port 0, the client's end) or incoming (remote port 0,
    the server's end). Its connections cannot be told apart, so that end is checked per group (group_of):
    its rows of the group, rolled and plain, summed against the group's true bytes. As many connections of
    the group are seen as that end's rows stand for (rolled_up, plus one per plain row's connection), and
    those are exact if the group's sums are exact both ways (and the other end's views of them are).
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
    groups = {}  # group -> its connection keys
    for k in tkeys:
        groups.setdefault(group_of(k), []).append(k)
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
    rolled = {}  # group -> {side: [c2s, s2c, connections] of its rollup rows}
    rolled_rows = rolled_up = 0
    for row in obs:
        proto, lip, lp, rip, rp, sent, recv = row[:7]
        proto = {"tcp": "tcp", "udp": "udp", 0: "tcp", 1: "udp"}.get(proto, proto)
        if kind == "agent" and (lp == 0 or rp == 0):
            if lp == 0:  # outgoing: the client's end
                g, side, c2s, s2c = (proto, lip, rip, rp), "client", sent, recv
            else:
                g, side, c2s, s2c = (proto, rip, lip, lp), "server", recv, sent
            if g not in groups:
                continue
            n = row[7] if len(row) > 7 and row[7] else 1
            v = rolled.setdefault(g, {}).setdefault(side, [0, 0, 0])
            v[0] += c2s
            v[1] += s2c
            v[2] += n
            rolled_rows += 1
            rolled_up += n
            continue
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
    # an end that rolled up part of a group: its plain rows of the group join the group's sum
    for g, sides in rolled.items():
        for side, v in sides.items():
            for k in groups[g]:
                plain = views.pop((k, side), None)
                if plain:
                    v[0] += plain[0]
                    v[1] += plain[1]
                    v[2] += 1
    seen = exact = 0
    byte_err = 0
    true_bytes = sum(a + b for a, b in tkeys.values())
    by_key = {}
    for (k, side), v in views.items():
        by_key.setdefault(k, []).append(v)
    for g, ks in groups.items():
        sums = list(rolled.get(g, {}).values())
        if not sums:
            for k in ks:
                t, vs = tkeys[k], by_key.get(k)
                if not vs:
                    byte_err += t[0] + t[1]
                    continue
                seen += 1
                if all(v == t for v in vs):
                    exact += 1
                # the bytes error of the worst view
                byte_err += max(error(v, t) for v in vs)
            continue
        t = [sum(tkeys[k][0] for k in ks), sum(tkeys[k][1] for k in ks)]
        covered = [min(v[2], len(ks)) for v in sums]  # the connections each rolled-up end's rows stand for
        seen += max(max(covered), sum(1 for k in ks if k in by_key))
        if all(v[:2] == t for v in sums):
            exact += min(min(covered), sum(1 for k in ks if all(v == tkeys[k] for v in by_key.get(k, []))))
        # the worst end's error: a rolled-up end's over the group, the other end's summed over its views
        other = sum(max(error(v, tkeys[k]) for v in by_key[k]) for k in ks if k in by_key)
        byte_err += max(max(error(v[:2], t) for v in sums), other)
    n = len(tkeys)
    return {
        "connections": n,
        "seen": seen,
        "exact": exact,
        "seen_pct": 100.0 * seen / n if n else None,
        "exact_pct": 100.0 * exact / n if n else None,
        "bytes_true": true_bytes,
        "bytes_abs_error_pct": 100.0 * byte_err / true_bytes if true_bytes else None,
        "views": len(views) + sum(len(sides) for sides in rolled.values()),
        "rolled_rows": rolled_rows,
        "rolled_up": rolled_up,
    }
