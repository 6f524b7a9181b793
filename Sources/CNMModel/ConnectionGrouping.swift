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
    var byEnds: [EndsKey: SocketOwner?] = Dictionary(minimumCapacity: ends.count)
    var localAddresses = Set<IPAddress>()
    for end in ends {
        byEnds[endsKey(end.transport, end.local, end.remote, end.netns)] = .some(end.owner)
        if !end.local.address.isLoopback && !end.local.address.isUnspecified {
            localAddresses.insert(end.local.address)
        }
    }
    // In the order the ends came: sorting is left to whoever shows them.
    var grouped: [Connection] = []
    grouped.reserveCapacity(ends.count)
    var index: [ConnectionKey: Int] = Dictionary(minimumCapacity: ends.count)
    for end in ends {
        let key = ConnectionKey(
            transport: end.transport,
            local: end.local,
            remote: end.remote,
            netns: end.netns,
            pid: end.owner?.pid,
            direction: end.direction
        )
        if let i = index[key] {
            grouped[i].stats.merge(end.stats)
            continue
        }
        let peer = byEnds[endsKey(end.transport, end.remote, end.local, end.netns)]
        index[key] = grouped.count
        grouped.append(
            Connection(
                key: key,
                stats: end.stats,
                processName: end.owner?.processName,
                localContainerID: end.owner?.containerID,
                remotePid: peer??.pid,
                remoteProcessName: peer??.processName,
                remoteContainerID: peer??.containerID,
                intraHost: peer != nil || end.remote.address.isLoopback
                    || localAddresses.contains(end.remote.address.unmappedV4 ?? end.remote.address),
                countersKnown: end.countersKnown
            ))
    }
    return grouped
}
