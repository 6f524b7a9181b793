/// What one socket (or one peer of a UDP socket) did in an interval, before flows are grouped.
struct FlowEnd {
    var netns: UInt64
    var transport: TransportProtocol
    var local: Endpoint
    var remote: Endpoint
    var owner: SocketOwner?
    var direction: ConnectionDirection
    var stats: ConnectionStats
    var countersKnown: Bool
    /// How long the socket had lived when it closed in this interval; nil while open or when its start is unknown.
    var closedLifetimeNanos: UInt64? = nil
}

/// Groups an interval's flow ends by connection, and describes the remote end of each from the
/// local socket that is that end, when there is one: a flow between two local processes is
/// reported from both sides.
func groupConnections(_ ends: [FlowEnd]) -> [Connection] {
    struct EndsKey: Hashable {
        var transport: TransportProtocol
        var local: Endpoint
        var remote: Endpoint
        var netns: UInt64?  // loopback addresses only mean something inside one namespace
    }
    // A dual-stack socket sees an IPv4 peer as ::ffff:a.b.c.d; the peer's own socket is plain IPv4.
    func plain(_ e: Endpoint) -> Endpoint { Endpoint(e.address.unmappedV4 ?? e.address, e.port) }
    func endsKey(_ t: TransportProtocol, _ l: Endpoint, _ r: Endpoint, _ netns: UInt64) -> EndsKey {
        EndsKey(transport: t, local: plain(l), remote: plain(r), netns: l.address.isLoopback ? netns : nil)
    }
    // Ends are read in place by index (a copy of each would retain its strings).
    var byEnds: [EndsKey: Int] = Dictionary(minimumCapacity: ends.count)
    var localAddresses = Set<IPAddress>()
    for i in ends.indices {
        byEnds[endsKey(ends[i].transport, ends[i].local, ends[i].remote, ends[i].netns)] = i
        let address = ends[i].local.address
        if !address.isLoopback && !address.isUnspecified { localAddresses.insert(address) }
    }
    // In the order the ends came: sorting is left to whoever shows them.
    var grouped: [Connection] = []
    grouped.reserveCapacity(ends.count)
    var index: [ConnectionKey: Int] = Dictionary(minimumCapacity: ends.count)
    for e in ends.indices {
        let key = ConnectionKey(
            transport: ends[e].transport,
            local: ends[e].local,
            remote: ends[e].remote,
            netns: ends[e].netns,
            pid: ends[e].owner?.pid,
            direction: ends[e].direction
        )
        if let i = index[key] {
            grouped[i].stats.merge(ends[e].stats)
            // Two sockets of one key: closed short-lived only if both were.
            let (a, b) = (grouped[i].closedLifetimeNanos, ends[e].closedLifetimeNanos)
            grouped[i].closedLifetimeNanos = a.flatMap { a in b.map { max(a, $0) } }
            continue
        }
        let peerEnd = byEnds[endsKey(key.transport, key.remote, key.local, key.netns)]
        let peer = peerEnd.flatMap { ends[$0].owner }
        let remote = key.remote.address
        index[key] = grouped.count
        grouped.append(
            Connection(
                key: key,
                stats: ends[e].stats,
                processName: ends[e].owner?.processName,
                localContainerID: ends[e].owner?.containerID,
                remotePid: peer?.pid,
                remoteProcessName: peer?.processName,
                remoteContainerID: peer?.containerID,
                intraHost: peerEnd != nil || remote.isLoopback || localAddresses.contains(remote.unmappedV4 ?? remote),
                countersKnown: ends[e].countersKnown,
                closedLifetimeNanos: ends[e].closedLifetimeNanos
            ))
    }
    return grouped
}
