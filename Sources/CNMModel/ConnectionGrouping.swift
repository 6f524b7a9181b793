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
    /// How many connections this end stands for: more than one once rolled up (`MemoryRollup`).
    var rolledUp = 1
    /// How many of them measured the RTT in `stats`, which is their average.
    var rttWeight = 0

    init(
        netns: UInt64, transport: TransportProtocol, local: Endpoint, remote: Endpoint, owner: SocketOwner?,
        direction: ConnectionDirection, stats: ConnectionStats, countersKnown: Bool,
        closedLifetimeNanos: UInt64? = nil
    ) {
        self.netns = netns
        self.transport = transport
        self.local = local
        self.remote = remote
        self.owner = owner
        self.direction = direction
        self.stats = stats
        self.countersKnown = countersKnown
        self.closedLifetimeNanos = closedLifetimeNanos
        self.rttWeight = stats.rttMicros != 0 ? 1 : 0
    }

    /// Adds `other`'s counts: every byte stays; RTT is averaged over the connections that measured one;
    /// closed short-lived only if both were.
    mutating func merge(_ other: FlowEnd) {
        let (rtt, variance, weight) = (stats.rttMicros, stats.rttVarMicros, rttWeight)
        stats.merge(other.stats)
        if weight + other.rttWeight > 0 {
            func mean(_ a: UInt32, _ b: UInt32) -> UInt32 {
                let sum = UInt64(a) * UInt64(weight) + UInt64(b) * UInt64(other.rttWeight)
                return UInt32(truncatingIfNeeded: sum / UInt64(weight + other.rttWeight))
            }
            stats.rttMicros = mean(rtt, other.stats.rttMicros)
            stats.rttVarMicros = mean(variance, other.stats.rttVarMicros)
        }
        rttWeight += other.rttWeight
        rolledUp += other.rolledUp
        countersKnown = countersKnown && other.countersKnown
        closedLifetimeNanos = closedLifetimeNanos.flatMap { a in other.closedLifetimeNanos.map { max(a, $0) } }
    }
}

/// What the agent does when an interval has more flows than its memory budget holds one by one:
/// it rolls them up, as Datadog's connection rollups do but whatever their age, rather than let
/// its memory grow. First the ephemeral port goes (the local one of an outgoing connection, the
/// remote one of an incoming), which merges a client's connections to one service; if that is not
/// enough, the remote end goes too (address and port) from the ends that were not merged, which
/// merges a process's connections of one direction and local address to many peers. Counts are summed: no byte is lost, only which connection had it.
enum MemoryRollup {
    /// What merges ends: all of a flow end that is left once its detail is taken off.
    private struct Key: Hashable {
        var netns: UInt64
        var transport: TransportProtocol
        var local: Endpoint
        var remote: Endpoint
        var pid: Int32?
        var containerID: String?
        var direction: ConnectionDirection
        var also: UInt64
    }

    enum Level: Comparable {
        case ephemeralPort
        case remote
    }

    /// Rolls `ends` up at `level`, keeping the order each group first came in. Returns how many
    /// ends were merged into another.
    static func rollUp(_ ends: inout [FlowEnd], level: Level) -> Int {
        rollUp(&ends, level: level, end: \.self, also: { _ in 0 })
    }

    /// Rolls `ends` up by ephemeral port, then by remote end if that leaves more than `bound`.
    static func rollUp(_ ends: inout [FlowEnd], toFit bound: Int) -> Int {
        rollUp(&ends, toFit: bound, end: \.self, also: { _ in 0 })
    }

    static func rollUp<Item>(
        _ items: inout [Item], toFit bound: Int, end: WritableKeyPath<Item, FlowEnd>, also: (Item) -> UInt64
    ) -> Int {
        let merged = rollUp(&items, level: .ephemeralPort, end: end, also: also)
        guard items.count > bound else { return merged }
        return merged + rollUp(&items, level: .remote, end: end, also: also)
    }

    /// The same for items that each hold a flow end; `also` keeps apart items whose ends match but
    /// must not be merged.
    static func rollUp<Item>(
        _ items: inout [Item], level: Level, end: WritableKeyPath<Item, FlowEnd>, also: (Item) -> UInt64
    ) -> Int {
        var index: [Key: Int] = Dictionary(minimumCapacity: min(items.count, 4096))
        var out: [Item] = []
        out.reserveCapacity(min(items.count, 4096))
        var merged = 0
        for var item in items {
            roll(&item[keyPath: end], level)
            let e = item[keyPath: end]
            let key = Key(
                netns: e.netns, transport: e.transport, local: e.local, remote: e.remote, pid: e.owner?.pid,
                containerID: e.owner?.containerID, direction: e.direction, also: also(item))
            if let i = index[key] {
                out[i][keyPath: end].merge(e)
                merged += 1
            } else {
                index[key] = out.count
                out.append(item)
            }
        }
        items = out
        return merged
    }

    /// The ends with the detail of `level` taken off.
    static func roll(_ end: inout FlowEnd, _ level: Level) {
        switch end.direction {
        case .outgoing: end.local.port = 0
        case .incoming: end.remote.port = 0
        case .none:
            if ConnectionTracker.isEphemeral(end.local.port) {
                end.local.port = 0
            } else if ConnectionTracker.isEphemeral(end.remote.port) {
                end.remote.port = 0
            }
        }
        // Only an end the ephemeral port did not merge loses its remote end: a client's row to one
        // service keeps the service's address and port.
        if level == .remote && end.rolledUp <= 1 {
            end.remote = Endpoint(end.remote.address.family == .v4 ? .v4(0) : .v6(high: 0, low: 0), 0)
        }
    }
}

/// The connections of one set of ends, in the order they were made, chained through `next` (ends
/// that match but differ in process, direction or namespace are rare), and the end met last,
/// whose owner describes the peer.
private struct Chain {
    var first = -1
    var last = -1
    var latestEnd = -1
}

/// The connection of `chain` that has `key`, or nil once `new` (the index the caller gives the
/// connection it makes for `key`) is linked at the chain's end.
private func joinChain(
    _ chain: inout Chain, end: Int, key: ConnectionKey, new: Int, grouped: [Connection], next: inout [Int]
) -> Int? {
    chain.latestEnd = end
    guard chain.first >= 0 else {
        (chain.first, chain.last) = (new, new)
        return nil
    }
    var i = chain.first
    while i >= 0 {
        if grouped[i].key == key { return i }
        i = next[i]
    }
    next[chain.last] = new
    chain.last = new
    return nil
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

        // Every end is looked up twice a report: three words, not five fields.
        func hash(into hasher: inout Hasher) {
            hasher.combine(local)
            hasher.combine(remote)
            // A namespace is a 32-bit inode number.
            hasher.combine((netns.map { $0 << 1 | 1 } ?? 0) << 1 | (transport == .tcp ? 1 : 0))
        }
    }
    // A dual-stack socket sees an IPv4 peer as ::ffff:a.b.c.d; the peer's own socket is plain IPv4.
    func plain(_ e: Endpoint) -> Endpoint { Endpoint(e.address.unmappedV4 ?? e.address, e.port) }
    func endsKey(_ t: TransportProtocol, _ l: Endpoint, _ r: Endpoint, _ netns: UInt64) -> EndsKey {
        EndsKey(transport: t, local: plain(l), remote: plain(r), netns: l.address.isLoopback ? netns : nil)
    }
    // One table for both jobs (merging an end into its connection, finding its peer), so each
    // end costs one lookup.
    var chains: [EndsKey: Chain] = Dictionary(minimumCapacity: ends.count)
    var next: [Int] = []
    next.reserveCapacity(ends.count)
    var localAddresses = Set<IPAddress>()
    var lastLocalAddress: IPAddress?
    // In the order the ends came: sorting is left to whoever shows them.
    var grouped: [Connection] = []
    grouped.reserveCapacity(ends.count)
    // Ends are read in place by index (a copy of each would retain its strings).
    for e in ends.indices {
        let key = ConnectionKey(
            transport: ends[e].transport,
            local: ends[e].local,
            remote: ends[e].remote,
            netns: ends[e].netns,
            pid: ends[e].owner?.pid,
            direction: ends[e].direction
        )
        let address = key.local.address
        if address != lastLocalAddress && !address.isLoopback && !address.isUnspecified {
            localAddresses.insert(address)
            lastLocalAddress = address
        }
        // One lookup whether the ends are new or not: a new chain starts empty (`first` -1).
        let new = grouped.count
        let match = joinChain(
            &chains[endsKey(key.transport, key.local, key.remote, key.netns), default: Chain()], end: e, key: key,
            new: new, grouped: grouped, next: &next)
        if let i = match {
            grouped[i].stats.merge(ends[e].stats)
            grouped[i].rolledUp += ends[e].rolledUp
            // Two sockets of one key: closed short-lived only if both were.
            let (a, b) = (grouped[i].closedLifetimeNanos, ends[e].closedLifetimeNanos)
            grouped[i].closedLifetimeNanos = a.flatMap { a in b.map { max(a, $0) } }
            continue
        }
        next.append(-1)
        grouped.append(
            Connection(
                key: key,
                stats: ends[e].stats,
                processName: ends[e].owner?.processName,
                localContainerID: ends[e].owner?.containerID,
                countersKnown: ends[e].countersKnown,
                closedLifetimeNanos: ends[e].closedLifetimeNanos,
                rolledUp: ends[e].rolledUp
            ))
    }
    // The peer of each connection: the local socket at its other end, once every end is known.
    for i in grouped.indices {
        let key = grouped[i].key
        let peerEnd = chains[endsKey(key.transport, key.remote, key.local, key.netns)]?.latestEnd
        if let peerEnd, let peer = ends[peerEnd].owner {
            grouped[i].remotePid = peer.pid
            grouped[i].remoteProcessName = peer.processName
            grouped[i].remoteContainerID = peer.containerID
        }
        let remote = key.remote.address
        grouped[i].intraHost =
            peerEnd != nil || remote.isLoopback || localAddresses.contains(remote.unmappedV4 ?? remote)
    }
    return grouped
}
