"""What a collector reported against the ground truth, per connection."""


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
