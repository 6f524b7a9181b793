/// One collection pass: what the kernel said about sockets since the previous pass.
public struct Poll: Sendable {
    /// Complete socket dumps per network namespace (by netns inode). A namespace whose dump failed is
    /// absent, so its sockets are kept as they were instead of being taken for closed.
    public var dumps: [UInt64: [SocketObservation]]
    /// Final observations of sockets the kernel destroyed (sock_diag destroy notifications).
    public var destroyed: [SocketObservation]
    /// Namespaces where destroy notifications are being received, so a vanished socket's final
    /// counters are still to come.
    public var destroyNotified: Set<UInt64>
    /// Namespaces that are gone (no process left in them): every socket still followed there closed.
    public var endedNamespaces: Set<UInt64>
    /// The agent's first pass: sockets already open start from their current counters, since what
    /// they carried before the agent started belongs to no interval it reports.
    public var isBaseline: Bool

    public init(
        dumps: [UInt64: [SocketObservation]] = [:],
        destroyed: [SocketObservation] = [],
        destroyNotified: Set<UInt64> = [],
        endedNamespaces: Set<UInt64> = [],
        isBaseline: Bool = false
    ) {
        self.endedNamespaces = endedNamespaces
        self.dumps = dumps
        self.destroyed = destroyed
        self.destroyNotified = destroyNotified
        self.isBaseline = isBaseline
    }
}

/// Turns successive socket observations into per-interval connection deltas.
///
/// Sockets are followed by `SocketID` (netns + cookie), so a reused port, inode or pid never mixes
/// two sockets' counters. What a socket carried is added to its own pending stats at every pass and
/// grouped by `ConnectionKey` only when an interval is flushed.
public struct ConnectionTracker: Sendable {
    public struct Health: Sendable, Equatable {
        /// Sockets followed right now.
        public var tracked = 0
        /// Sockets not followed because the table was full.
        public var droppedTableFull: UInt64 = 0
        /// Sockets that vanished without final counters: bytes after their last read are lost.
        public var closedWithoutFinalCounters: UInt64 = 0
        /// Counters that went backwards for one socket (never expected; the socket is re-based).
        public var counterRegressions: UInt64 = 0

        public init() {}
    }

    private struct Tracked {
        var observation: SocketObservation
        /// The kernel's raw counters at the last read; deltas are taken against these.
        var rawAccounted: SocketCounters
        /// Whether the one byte `bytes_received` adds for the peer's FIN was already taken off.
        var finSubtracted: Bool
        var pending = ConnectionStats()
        var owner: SocketOwner? = nil
        var direction: ConnectionDirection
        var establishedCounted: Bool
        var finReceived: Bool
        var missingPasses = 0
        var closed = false
        /// The last pass whose dump listed this socket.
        var seenInPass: UInt64 = 0
    }

    private struct ListenerKey: Hashable {
        var transport: TransportProtocol
        var port: UInt16
        var address: IPAddress?  // nil: any address
    }

    public let maxTracked: Int
    public private(set) var health = Health()
    private var sockets: [SocketID: Tracked] = [:]
    /// Followed sockets whose process is not known yet, by inode: what the process scan looks for.
    private var unowned: [UInt64: SocketID] = [:]
    /// Listening sockets per namespace, with the pass they were last seen in: remembered for a while
    /// after they close, since a server may stop listening once it has accepted (`nc -l`).
    private var listeners: [UInt64: [ListenerKey: UInt64]] = [:]
    private var pass: UInt64 = 0
    /// Passes a closed listener is remembered for.
    private let listenerMemoryPasses: UInt64 = 300
    /// Passes a vanished socket waits for its destroy notification before it is closed without it.
    private let destroyGracePasses = 1

    public init(maxTracked: Int) {
        self.maxTracked = maxTracked
    }

    /// Inodes of followed sockets whose owner is not known yet.
    public var inodesWithoutOwner: Set<UInt64> { Set(unowned.keys) }

    /// Gives sockets the owners the process scan found for their inodes.
    public mutating func assignOwners(_ owners: [UInt64: SocketOwner]) {
        for (inode, owner) in owners {
            guard let id = unowned.removeValue(forKey: inode), let index = sockets.index(forKey: id) else { continue }
            sockets.values[index].owner = owner
        }
    }

    public mutating func apply(_ poll: Poll) {
        pass += 1
        for (netns, observations) in poll.dumps {
            var known = listeners[netns, default: [:]].filter { pass - $0.value < listenerMemoryPasses }
            for o in observations where o.isListener && o.local.port != 0 {
                let any = o.local.address.isUnspecified
                known[ListenerKey(transport: o.transport, port: o.local.port, address: any ? nil : o.local.address)] =
                    pass
            }
            listeners[netns] = known
        }
        for netns in poll.endedNamespaces { listeners[netns] = nil }
        for (_, observations) in poll.dumps {
            // TIME_WAIT entries are what is left after a full socket was destroyed: no counters.
            for o in observations where !o.isListener && o.state != .timeWait {
                observe(o, baseline: poll.isBaseline, final: false)
            }
        }
        for o in poll.destroyed where !o.isListener {
            observe(o, baseline: false, final: true)
        }
        // Sockets missing from a complete dump of their namespace have closed, and so have all
        // sockets of a namespace that ended.
        var index = sockets.startIndex
        while index != sockets.endIndex {
            defer { index = sockets.index(after: index) }
            let netns = sockets.keys[index].netns
            guard !sockets.values[index].closed, sockets.values[index].seenInPass != pass else { continue }
            let ended = poll.endedNamespaces.contains(netns)
            guard ended || poll.dumps[netns] != nil else { continue }
            sockets.values[index].missingPasses += 1
            if ended || !poll.destroyNotified.contains(netns)
                || sockets.values[index].missingPasses > destroyGracePasses
            {
                Self.close(&sockets.values[index])
                if sockets.values[index].observation.counters != nil { health.closedWithoutFinalCounters += 1 }
            }
        }
        health.tracked = sockets.count
    }

    private mutating func observe(
        _ o: SocketObservation,
        baseline: Bool,
        final: Bool
    ) {
        if let index = sockets.index(forKey: o.id) {
            // Updated in place: a socket's state is not copied out and back on every pass.
            let regressed = Self.update(&sockets.values[index], o, final: final, pass: pass)
            if regressed { health.counterRegressions += 1 }
            // A closed socket's process is no longer to be found.
            if final, sockets.values[index].owner == nil { unowned[sockets.values[index].observation.inode] = nil }
            return
        }
        guard sockets.count < maxTracked else {
            health.droppedTableFull += 1
            return
        }
        // A socket first seen in its destroy notification lived and died between two reads; it had
        // completed the handshake if it moved any data.
        let synchronized =
            final ? (o.counters.map { $0.bytesReceived > 0 || $0.bytesSent > 0 } ?? false) : o.state.isSynchronized
        var s = Tracked(
            observation: o,
            rawAccounted: .zero,
            finSubtracted: false,
            direction: direction(of: o),
            establishedCounted: synchronized || baseline,
            finReceived: o.state.peerFinReceived || (final && synchronized)
        )
        s.seenInPass = final ? 0 : pass
        if baseline {
            s.rawAccounted = o.counters ?? .zero
            s.finSubtracted = s.finReceived
        } else {
            if Self.account(&s, o) { health.counterRegressions += 1 }
            if synchronized && o.transport == .tcp { s.pending.tcpEstablished += 1 }
        }
        if final { Self.close(&s) }
        if s.owner == nil && o.inode != 0 && !final { unowned[o.inode] = o.id }
        sockets[o.id] = s
    }

    /// A later observation of a followed socket. Returns true when its counters went backwards.
    private static func update(
        _ s: inout Tracked,
        _ o: SocketObservation,
        final: Bool,
        pass: UInt64
    ) -> Bool {
        guard !s.closed else { return false }
        s.finReceived = s.finReceived || o.state.peerFinReceived || (final && s.observation.state.isSynchronized)
        let regressed = account(&s, o)
        if !s.establishedCounted && o.state.isSynchronized && o.transport == .tcp {
            s.establishedCounted = true
            s.pending.tcpEstablished += 1
        }
        s.missingPasses = 0
        if !final { s.seenInPass = pass }
        if final { close(&s) }
        return regressed
    }

    private static func close(_ s: inout Tracked) {
        s.closed = true
        if s.observation.transport == .tcp { s.pending.tcpClosed += 1 }
    }

    /// Adds what the kernel's counters moved since the last read. Returns true when they went backwards.
    private static func account(_ s: inout Tracked, _ o: SocketObservation) -> Bool {
        let inode = s.observation.inode
        s.observation = o
        // A destroy notification has no inode any more; keep the one the socket was known by.
        if o.inode == 0 { s.observation.inode = inode }
        if o.rttMicros != 0 {
            s.pending.rttMicros = o.rttMicros
            s.pending.rttVarMicros = o.rttVarMicros
        }
        guard let now = o.counters else { return false }
        guard var delta = now.since(s.rawAccounted) else {
            s.rawAccounted = now
            return true
        }
        // `bytes_received` counts the peer's FIN as one byte. It can only be in this delta if the
        // delta received anything, which keeps a reset connection (no FIN) exact when no data came.
        if o.transport == .tcp && s.finReceived && !s.finSubtracted && delta.bytesReceived > 0 {
            delta.bytesReceived -= 1
            s.finSubtracted = true
        }
        s.pending.add(delta)
        s.rawAccounted = now
        return false
    }

    private func direction(of o: SocketObservation) -> ConnectionDirection {
        let known = listeners[o.id.netns] ?? [:]
        let exact = ListenerKey(transport: o.transport, port: o.local.port, address: o.local.address)
        let any = ListenerKey(transport: o.transport, port: o.local.port, address: nil)
        if known[exact] != nil || known[any] != nil { return .incoming }
        // A v4 peer of a dual-stack v6 listener shows up as a mapped address.
        if let v4 = o.local.address.unmappedV4,
            known[ListenerKey(transport: o.transport, port: o.local.port, address: v4)] != nil
        {
            return .incoming
        }
        // No listener seen (it closed before the first read): a client's own port is ephemeral, a
        // server's is not.
        if !Self.isEphemeral(o.local.port) && Self.isEphemeral(o.remote.port) { return .incoming }
        return .outgoing
    }

    /// Linux's default `ip_local_port_range`.
    static func isEphemeral(_ port: UInt16) -> Bool { (32768...60999).contains(port) }

    /// Ends the interval: every followed socket's pending stats, grouped by connection, with what is
    /// known of the remote end when it is a socket on this host. Closed sockets are then forgotten.
    public mutating func flush() -> [Connection] {
        let ends = sockets.map { id, s in
            FlowEnd(
                netns: id.netns,
                transport: s.observation.transport,
                local: s.observation.local,
                remote: s.observation.remote,
                owner: s.owner,
                direction: s.direction,
                stats: s.pending,
                countersKnown: s.observation.counters != nil
            )
        }
        sockets = sockets.filter { !$0.value.closed }
        for index in sockets.indices { sockets.values[index].pending = ConnectionStats() }
        unowned = unowned.filter { sockets[$0.value] != nil }
        health.tracked = sockets.count
        return groupConnections(ends)
    }
}
