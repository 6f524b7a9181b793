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
    /// When each namespace was read, wall clock in ns: from before its first dump request to after
    /// its destroy notifications were drained. Every socket of a dump was alive at some instant in it.
    public var readWindows: [UInt64: ClosedRange<Int64>]

    public init(
        dumps: [UInt64: [SocketObservation]] = [:],
        destroyed: [SocketObservation] = [],
        destroyNotified: Set<UInt64> = [],
        endedNamespaces: Set<UInt64> = [],
        isBaseline: Bool = false,
        readWindows: [UInt64: ClosedRange<Int64>] = [:]
    ) {
        self.endedNamespaces = endedNamespaces
        self.dumps = dumps
        self.destroyed = destroyed
        self.destroyNotified = destroyNotified
        self.isBaseline = isBaseline
        self.readWindows = readWindows
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
        /// Sockets that vanished between two reads whose last counts came from packet capture, which
        /// followed their connection from its SYN.
        public var completedFromCapture: UInt64 = 0
        /// Connection ends packet capture saw that no socket of the namespace can have taken part in:
        /// a SYN accepted with no listener (address translation for another namespace), datagrams to
        /// no socket. Left out.
        public var capturedWithoutSocket: UInt64 = 0
        /// Connection ends merged into another because the interval held more than the memory budget
        /// allows one by one (`MemoryRollup`): their counts are in the merged row.
        public var rolledUpForMemory: UInt64 = 0
        /// Open flows the last pass did not follow because the table was at its bound (eBPF mode:
        /// their bytes are counted when they close).
        public var openNotFollowed = 0
        /// Sockets past `maxTracked` followed by their counts only (`maxCounted`), whose deltas go
        /// to rolled-up rows.
        public var countedOnly = 0
        /// Sockets reported with their peer's FIN byte taken off though nothing told whether it
        /// came before they were destroyed (`finGuessed`): each may be one byte short.
        public var peerFinAssumed: UInt64 = 0

        public init() {}
    }

    struct Tracked {
        var observation: SocketObservation
        /// The kernel's raw counters at the last read; deltas are taken against these.
        var rawAccounted: SocketCounters
        /// Whether the one byte `bytes_received` adds for the peer's FIN was already taken off.
        var finSubtracted: Bool
        /// It was taken off on a guess: the destroy notification came with no state to say whether
        /// the peer's FIN had arrived (`settleGuessedFin`).
        var finGuessed = false
        var pending = ConnectionStats()
        var owner: SocketOwner? = nil
        var direction: ConnectionDirection
        /// The listening socket an incoming connection arrived on: its process is the connection's
        /// when the connection's own socket is gone from `/proc` before it was looked for.
        var listenerInode: UInt64? = nil
        var establishedCounted: Bool
        var finReceived: Bool
        var missingPasses = 0
        var closed = false
        /// The last pass whose dump listed this socket.
        var seenInPass: UInt64 = 0
        /// The start of that pass's read of the namespace (wall clock, ns), when known.
        var lastReadAt: Int64? = nil
        /// The socket was made after this (wall clock, ns): the start of the read of its namespace
        /// before the one that first met it. Nil for sockets older than the agent.
        var bornAfter: Int64? = nil
        /// At most how long it lived, once closed with a known `bornAfter`.
        var closedLifetimeNanos: UInt64? = nil
    }

    /// A socket past `maxTracked`, followed by its last counters only (no owner is looked for):
    /// what it moves each pass goes to `countedEnds`, rolled up by its ephemeral port, so a host
    /// with more sockets than the budget holds one by one keeps every byte they carry.
    struct Counted {
        var local: Endpoint
        var remote: Endpoint
        var raw: SocketCounters
        var direction: ConnectionDirection
        var transport: TransportProtocol
        var establishedCounted: Bool
        var finReceived: Bool
        var finSubtracted: Bool
        /// Whether the last read found it past the handshake.
        var synchronized = false
        var missingPasses: UInt8 = 0
        /// The interval it was last reported in: each interval counts it once in its rolled-up row.
        var interval: UInt32
        var seenInPass: UInt64
    }

    struct ListenerKey: Hashable {
        var transport: TransportProtocol
        var port: UInt16
        var address: IPAddress?  // nil: any address
    }

    /// A listening socket (or an unconnected UDP one): the last pass that listed it, and its inode,
    /// through which a connection capture saw arrive on its port gets its process.
    struct Listener {
        var pass: UInt64
        var inode: UInt64
    }

    /// A connection end only packet capture saw, waiting for the report; `ownerInode` is the socket
    /// whose process it is attributed to (the listener it arrived on), if any.
    struct CapturedEnd {
        var end: FlowEnd
        var ownerInode: UInt64?
    }

    /// Sockets by the ends they connect, as the wire shows them (IPv4-mapped addresses unmapped).
    struct Tuple: Hashable {
        var transport: TransportProtocol
        var local: Endpoint
        var remote: Endpoint

        init(_ transport: TransportProtocol, _ local: Endpoint, _ remote: Endpoint) {
            self.transport = transport
            self.local = local.plain
            self.remote = remote.plain
        }
    }

    /// What capture counted for a side sock_diag saw, kept a pass longer than the flow, for a socket
    /// that vanishes without final counters in the pass after its connection ended.
    struct WireTotal {
        var flow: CapturedFlow
        var sideIsA: Bool
        var side: CapturedFlow.Side { sideIsA ? flow.a : flow.b }
        /// Its handshake and failure were given to the socket already.
        var outcomeApplied = false
    }

    /// What the tracker keeps only while packet capture runs: empty, and `netns` nil, without it.
    struct CaptureState {
        /// The namespace capture watches.
        var netns: UInt64? = nil
        /// Connection ends only capture saw in this interval.
        var ended: [CapturedEnd] = []
        /// How many `ended` held after its last rollup (the next waits for twice as many).
        var endedAfterRollUp = 0
        /// Capture's counts for sides sock_diag saw, by their ends.
        var wireTotals = Generations<Tuple, [WireTotal]>()
        /// Failures and handshakes capture saw for sockets whose destroy notification has not come yet.
        var pendingOutcomes: [Tuple: PendingOutcome] = [:]
        /// Who opened each connection capture followed from its SYN, by the ends of each local side.
        var directions = Generations<Tuple, ConnectionDirection>()
        /// The payload the peer sent before its FIN, for local sides of connections capture followed from
        /// the SYN to the peer's FIN, by the side's ends: kept for this pass and the next, as the socket's
        /// destroy notification comes in the same pass or the one after.
        var finishedPayloads = Generations<Tuple, UInt64>()
        /// Sockets destroyed with their peer's FIN perhaps counted, by their ends, waiting for the wire's
        /// end of their connection (`finishedPayloads`) in this pass or the next.
        var destroyedWithFinInDoubt = Generations<Tuple, SocketID>()
    }

    public let maxTracked: Int
    // Not optional: Swift 6.3's optimizer crashes (ownership verifier) on optional-chained mutation here.
    var capture = CaptureState()
    /// The namespace packet capture watches, if it runs: there UDP counts come from the wire, and
    /// connections sock_diag never listed are reported from what capture saw.
    public var capturedNamespace: UInt64? {
        get { capture.netns }
        set { capture = CaptureState(netns: newValue) }
    }
    public internal(set) var health = Health()
    var sockets: [SocketID: Tracked] = [:]
    /// Followed sockets whose process is not known yet, by inode: what the process scan looks for.
    private var unowned: [UInt64: SocketID] = [:]
    /// Listening sockets per namespace: remembered for a while after they close, since a server may
    /// stop listening once it has accepted (`nc -l`).
    var listeners: [UInt64: [ListenerKey: Listener]] = [:]
    /// Owners of listening sockets, by inode, once found: the process of a connection that arrived on
    /// one and whose own socket was gone from `/proc` before it was looked for.
    var listenerOwners: [UInt64: SocketOwner] = [:]
    private(set) var pass: UInt64 = 0
    /// When the last pass started reading each namespace (wall clock, ns): what was not there then
    /// was made after it.
    private var lastReadStart: [UInt64: Int64] = [:]
    /// The dump being applied, and how many of its TCP sockets have each local end, both ports of
    /// each in the ephemeral range (`localEndCounts`): counted only once a new socket's direction
    /// needs it, at most once a dump.
    private var currentDump: [SocketObservation] = []
    private var localEndCounts: [Endpoint: Int]? = nil
    /// Passes a closed listener is remembered for.
    private let listenerMemoryPasses: UInt64 = 300
    /// Passes a vanished socket waits for its destroy notification before it is closed without it.
    private let destroyGracePasses = 1

    /// Connections one report carries before they are rolled up (the memory budget's share).
    public let maxReportConnections: Int
    /// Sockets followed by their counts only once `sockets` is full; 0: none, they are dropped.
    public let maxCounted: Int
    var counted: [SocketID: Counted] = [:]
    /// This interval's deltas of counted sockets, rolled up by ephemeral port as they grow.
    private var countedEnds: [FlowEnd] = []
    private var countedEndsRollUpAt = 1024
    /// Sockets destroyed in this interval with their peer's FIN taken off on a guess, to be settled
    /// from their peer's count before the report (`settleGuessedFins`).
    private var finGuesses: [SocketID] = []
    private var flushes: UInt32 = 0
    /// Sockets open at the baseline that neither table took: when one is followed later, it
    /// starts from its counters then, as it would have at the baseline.
    private var skippedInherited = Set<SocketID>()
    private static let maxSkippedInherited = 65_536

    public init(maxTracked: Int, maxReportConnections: Int = .max, maxCounted: Int = 0) {
        self.maxTracked = maxTracked
        self.maxReportConnections = max(1, maxReportConnections)
        self.maxCounted = max(0, maxCounted)
    }

    /// Inodes of followed sockets whose owner is not known yet, and of listening sockets a captured
    /// connection is attributed to.
    public var inodesWithoutOwner: Set<UInt64> {
        var inodes = Set(unowned.keys)
        for c in capture.ended where c.end.owner == nil {
            if let inode = c.ownerInode, listenerOwners[inode] == nil { inodes.insert(inode) }
        }
        // The listeners of incoming sockets without a process are looked for in the same walk.
        for s in sockets.values where s.owner == nil {
            if let inode = s.listenerInode, listenerOwners[inode] == nil { inodes.insert(inode) }
        }
        return inodes
    }

    /// Gives sockets the owners the process scan found for their inodes.
    public mutating func assignOwners(_ owners: [UInt64: SocketOwner]) {
        for (inode, owner) in owners {
            guard let id = unowned.removeValue(forKey: inode), let index = sockets.index(forKey: id) else { continue }
            sockets.values[index].owner = owner
        }
        for known in listeners.values {
            for listener in known.values {
                if let owner = owners[listener.inode] { listenerOwners[listener.inode] = owner }
            }
        }
        for i in capture.ended.indices where capture.ended[i].end.owner == nil {
            guard let inode = capture.ended[i].ownerInode, let owner = listenerOwners[inode] ?? owners[inode] else {
                continue
            }
            listenerOwners[inode] = owner
            capture.ended[i].end.owner = owner
        }
    }

    /// One pass: the sockets sock_diag listed, and, when capture runs, the connections it saw end
    /// (and, on the pass that ends an interval, what UDP carried).
    public mutating func apply(_ poll: Poll, captured traffic: CapturedTraffic? = nil) {
        pass += 1
        // Learnt first: a socket first met in this pass's destroy notifications takes its direction from it.
        if capturedNamespace != nil { learnDirections(traffic?.netns == capturedNamespace ? traffic?.ended ?? [] : []) }
        for (netns, observations) in poll.dumps {
            var known = listeners[netns, default: [:]].filter { pass - $0.value.pass < listenerMemoryPasses }
            for o in observations where o.isListener && o.local.port != 0 {
                let any = o.local.address.isUnspecified
                let key = ListenerKey(transport: o.transport, port: o.local.port, address: any ? nil : o.local.address)
                known[key] = Listener(pass: pass, inode: o.inode)
            }
            listeners[netns] = known
        }
        for netns in poll.endedNamespaces { listeners[netns] = nil }
        if !listenerOwners.isEmpty && !poll.dumps.isEmpty {
            let live = Set(listeners.values.flatMap { $0.values.map(\.inode) })
            listenerOwners = listenerOwners.filter { live.contains($0.key) }
        }
        for (netns, observations) in poll.dumps {
            let readAt = poll.readWindows[netns]?.lowerBound
            let bornAfter = poll.isBaseline ? nil : lastReadStart[netns]
            let closedBy = poll.readWindows[netns]?.upperBound
            currentDump = observations
            for o in observations where o.isFollowedFlow {
                observe(
                    o, baseline: poll.isBaseline, final: false, readAt: readAt, bornAfter: bornAfter, closedBy: closedBy
                )
            }
            currentDump = []
            localEndCounts = nil
        }
        for o in poll.destroyed where !o.isListener {
            let netns = o.id.netns
            observe(
                o, baseline: false, final: true, bornAfter: lastReadStart[netns],
                closedBy: poll.readWindows[netns]?.upperBound)
        }
        applyPendingOutcomes(poll.destroyed)
        takeOffCountedFins(poll.destroyed)
        if let traffic = traffic, traffic.netns == capturedNamespace {
            takeEnded(
                traffic.ended, netns: traffic.netns, destroyNotified: poll.destroyNotified.contains(traffic.netns))
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
                Self.close(&sockets.values[index], closedBy: poll.readWindows[netns]?.upperBound)
                if let wire = takeWireTotal(netns: netns, sockets.values[index]),
                    Self.completeFromWire(&sockets.values[index], wire)
                {
                    health.completedFromCapture += 1
                } else if sockets.values[index].observation.counters != nil {
                    health.closedWithoutFinalCounters += 1
                }
            }
        }
        if !counted.isEmpty { sweepCounted(poll) }
        if let traffic = traffic, traffic.netns == capturedNamespace, !traffic.datagrams.isEmpty {
            takeDatagrams(traffic.datagrams, netns: traffic.netns)
        }
        capture.wireTotals.advance()
        capture.finishedPayloads.advance()
        capture.destroyedWithFinInDoubt.advance()
        for (netns, window) in poll.readWindows { lastReadStart[netns] = window.lowerBound }
        for netns in poll.endedNamespaces { lastReadStart[netns] = nil }
        health.tracked = sockets.count + counted.count
        health.countedOnly = counted.count
    }

    private mutating func observe(
        _ o: SocketObservation,
        baseline: Bool,
        final: Bool,
        readAt: Int64? = nil,
        bornAfter: Int64?,
        closedBy: Int64?
    ) {
        if let index = sockets.index(forKey: o.id) {
            // Updated in place: a socket's state is not copied out and back on every pass.
            let regressed = Self.update(&sockets.values[index], o, final: final, pass: pass, closedBy: closedBy)
            if !final { sockets.values[index].lastReadAt = readAt }
            if regressed { health.counterRegressions += 1 }
            if final && sockets.values[index].finGuessed { finGuesses.append(o.id) }
            // A closed socket's process is no longer to be found.
            if final, sockets.values[index].owner == nil { unowned[sockets.values[index].observation.inode] = nil }
            return
        }
        if let index = counted.index(forKey: o.id) {
            var c = counted.values[index]
            count(&c, o, final: final)
            c.seenInPass = pass
            c.missingPasses = 0
            if final { counted.remove(at: index) } else { counted.values[index] = c }
            return
        }
        let inherited = baseline || (!skippedInherited.isEmpty && skippedInherited.remove(o.id) != nil)
        guard sockets.count < maxTracked else {
            guard counted.count < maxCounted else {
                health.droppedTableFull += 1
                if inherited && skippedInherited.count < Self.maxSkippedInherited { skippedInherited.insert(o.id) }
                return
            }
            let finReceived = o.state.peerFinReceived
            var c = Counted(
                local: o.local, remote: o.remote, raw: inherited ? o.counters ?? .zero : .zero,
                direction: direction(of: o),
                transport: o.transport, establishedCounted: inherited, finReceived: finReceived,
                finSubtracted: inherited && finReceived, synchronized: inherited && o.state.isSynchronized,
                interval: flushes &- 1, seenInPass: final ? 0 : pass)
            count(&c, o, final: final)
            if !final { counted[o.id] = c }
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
            establishedCounted: synchronized || inherited,
            finReceived: o.state.peerFinReceived || (final && synchronized)
        )
        let finAssumed = final && synchronized && !o.state.peerFinReceived
        s.seenInPass = final ? 0 : pass
        if !final { s.lastReadAt = readAt }
        if !inherited { s.bornAfter = bornAfter }
        if s.direction == .incoming {
            s.listenerInode = listener(netns: o.id.netns, transport: o.transport, local: o.local)?.inode
        }
        if inherited {
            s.rawAccounted = o.counters ?? .zero
            s.finSubtracted = s.finReceived
        } else {
            if Self.account(&s, o, finAssumed: finAssumed) { health.counterRegressions += 1 }
            if synchronized && o.transport == .tcp { s.pending.tcpEstablished += 1 }
            if s.finGuessed { finGuesses.append(o.id) }
        }
        if final { Self.close(&s, closedBy: closedBy) }
        if s.owner == nil && o.inode != 0 && !final { unowned[o.inode] = o.id }
        sockets[o.id] = s
    }

    /// A later observation of a followed socket. Returns true when its counters went backwards.
    private static func update(
        _ s: inout Tracked,
        _ o: SocketObservation,
        final: Bool,
        pass: UInt64,
        closedBy: Int64?
    ) -> Bool {
        guard !s.closed else { return false }
        // A final record is in state CLOSE: a connection last listed opening is known to have
        // opened by what it carried.
        let moved = final && (o.counters.map { $0.bytesReceived > 0 || $0.bytesSent > 0 } ?? false)
        let finKnown = s.finReceived || o.state.peerFinReceived
        // A destroyed socket last listed before its peer's FIN has no state to say whether the FIN
        // came: assumed to have, as a socket is mostly destroyed after both FINs.
        let finAssumed = !finKnown && final && (s.observation.state.isSynchronized || moved)
        s.finReceived = finKnown || finAssumed
        let regressed = account(&s, o, finAssumed: finAssumed)
        if !s.establishedCounted && (o.state.isSynchronized || moved) && o.transport == .tcp {
            s.establishedCounted = true
            s.pending.tcpEstablished += 1
        }
        s.missingPasses = 0
        if !final { s.seenInPass = pass }
        if final { close(&s, closedBy: closedBy) }
        return regressed
    }

    /// What a counted socket moved since its last read, as a rolled-up end of this interval.
    private mutating func count(_ c: inout Counted, _ o: SocketObservation, final: Bool) {
        var stats = ConnectionStats()
        let moved = final && (o.counters.map { $0.bytesReceived > 0 || $0.bytesSent > 0 } ?? false)
        let finKnown = c.finReceived || o.state.peerFinReceived
        let finAssumed = !finKnown && final && (c.synchronized || moved)
        c.finReceived = finKnown || finAssumed
        // A counted socket's peer is not looked for: its guess stands.
        var finGuessed = false
        if let now = o.counters {
            if let delta = Self.delta(
                now, since: &c.raw, transport: o.transport, finReceived: c.finReceived, finAssumed: finAssumed,
                finSubtracted: &c.finSubtracted, finGuessed: &finGuessed)
            {
                stats.add(delta)
            } else {
                health.counterRegressions += 1
            }
        }
        if finGuessed { health.peerFinAssumed += 1 }
        if o.transport == .tcp && !c.establishedCounted && (o.state.isSynchronized || moved) {
            c.establishedCounted = true
            stats.tcpEstablished = 1
        }
        c.synchronized = o.state.isSynchronized
        if final && o.transport == .tcp && c.establishedCounted { stats.tcpClosed = 1 }
        stats.rttMicros = o.rttMicros
        stats.rttVarMicros = o.rttVarMicros
        stats.ecnNegotiated = o.ecnNegotiated
        appendCounted(c, netns: o.id.netns, stats: stats, countersKnown: o.counters != nil)
    }

    private mutating func appendCounted(_ c: Counted, netns: UInt64, stats: ConnectionStats, countersKnown: Bool) {
        var end = FlowEnd(
            netns: netns, transport: c.transport, local: c.local, remote: c.remote, owner: nil, direction: c.direction,
            stats: stats, countersKnown: countersKnown)
        end.rolledUp = c.interval == flushes ? 0 : 1
        MemoryRollup.roll(&end, .ephemeralPort)
        countedEnds.append(end)
        if countedEnds.count >= countedEndsRollUpAt {
            health.rolledUpForMemory += UInt64(MemoryRollup.rollUp(&countedEnds, level: .ephemeralPort))
            countedEndsRollUpAt = max(1024, countedEnds.count * 2)
        }
    }

    /// Counted sockets a complete dump did not list have closed, after the same grace as followed
    /// ones: their close is counted, what they carried after their last read is lost.
    private mutating func sweepCounted(_ poll: Poll) {
        var gone: [SocketID] = []
        for index in counted.indices where counted.values[index].seenInPass != pass {
            let netns = counted.keys[index].netns
            let ended = poll.endedNamespaces.contains(netns)
            guard ended || poll.dumps[netns] != nil else { continue }
            counted.values[index].missingPasses &+= 1
            guard
                ended || !poll.destroyNotified.contains(netns)
                    || counted.values[index].missingPasses > destroyGracePasses
            else { continue }
            gone.append(counted.keys[index])
        }
        for id in gone {
            guard let c = counted.removeValue(forKey: id) else { continue }
            var stats = ConnectionStats()
            if c.transport == .tcp && c.establishedCounted { stats.tcpClosed = 1 }
            health.closedWithoutFinalCounters += 1
            appendCounted(c, netns: id.netns, stats: stats, countersKnown: true)
        }
    }

    /// A connection that never completed its handshake (refused, timed out) is no closed connection.
    private static func close(_ s: inout Tracked, closedBy: Int64?) {
        s.closed = true
        if let bornAfter = s.bornAfter, let closedBy {
            s.closedLifetimeNanos = UInt64(clamping: closedBy - bornAfter)
        }
        if s.observation.transport == .tcp && s.establishedCounted { s.pending.tcpClosed += 1 }
    }

    /// Adds what the kernel's counters moved since the last read. Returns true when they went backwards.
    private static func account(_ s: inout Tracked, _ o: SocketObservation, finAssumed: Bool = false) -> Bool {
        let inode = s.observation.inode
        s.observation = o
        // A destroy notification has no inode any more; keep the one the socket was known by.
        if o.inode == 0 { s.observation.inode = inode }
        if o.rttMicros != 0 {
            s.pending.rttMicros = o.rttMicros
            s.pending.rttVarMicros = o.rttVarMicros
        }
        if o.ecnNegotiated { s.pending.ecnNegotiated = true }
        guard let now = o.counters else { return false }
        guard
            let delta = delta(
                now, since: &s.rawAccounted, transport: o.transport, finReceived: s.finReceived,
                finAssumed: finAssumed, finSubtracted: &s.finSubtracted, finGuessed: &s.finGuessed)
        else { return true }
        s.pending.add(delta)
        return false
    }

    /// What the kernel's counters moved since `raw`, which takes them; nil when they went backwards.
    /// `bytes_received` counts the peer's FIN as one byte. It can only be in this delta if the delta
    /// received anything, which keeps a reset connection (no FIN) exact when no data came. A FIN
    /// only assumed (`finAssumed`) is taken off on a guess (`finGuessed`).
    private static func delta(
        _ now: SocketCounters, since raw: inout SocketCounters, transport: TransportProtocol, finReceived: Bool,
        finAssumed: Bool, finSubtracted: inout Bool, finGuessed: inout Bool
    ) -> SocketCounters? {
        defer { raw = now }
        guard var delta = now.since(raw) else { return nil }
        if transport == .tcp && finReceived && !finSubtracted && delta.bytesReceived > 0 {
            delta.bytesReceived -= 1
            finSubtracted = true
            finGuessed = finAssumed
        }
        return delta
    }

    private mutating func direction(of o: SocketObservation) -> ConnectionDirection {
        if localEndCounts == nil && !currentDump.isEmpty && o.transport == .tcp && Self.isEphemeral(o.local.port)
            && Self.isEphemeral(o.remote.port)
        {
            localEndCounts = Self.localEndCounts(currentDump)
        }
        return direction(netns: o.id.netns, transport: o.transport, local: o.local, remote: o.remote)
    }

    /// A dump lists listening sockets before connections: a server that starts listening while
    /// it runs can be missing from it while its first connections are in it. Its port may be in
    /// the ephemeral range like its clients', but its local end is shared by all its connections,
    /// where a client's is shared at most by its connections to other servers (the kernel reuses a
    /// port for other destinations): how many sockets of the dump have each local end.
    static func localEndCounts(_ observations: [SocketObservation]) -> [Endpoint: Int] {
        var counts: [Endpoint: Int] = [:]
        for o in observations
        where o.transport == .tcp && !o.isListener && isEphemeral(o.local.port) && isEphemeral(o.remote.port) {
            counts[o.local, default: 0] += 1
        }
        return counts
    }

    func direction(netns: UInt64, transport: TransportProtocol, local: Endpoint, remote: Endpoint)
        -> ConnectionDirection
    {
        if listener(netns: netns, transport: transport, local: local) != nil { return .incoming }
        // No listener seen (it closed before any read): the SYN, when capture saw it, says who opened.
        if netns == capturedNamespace {
            let tuple = Tuple(transport, local, remote)
            if let seen = capture.directions[tuple] { return seen }
        }
        // Both ends in the dump: the server's local end is the one far more sockets share.
        if transport == .tcp, let counts = localEndCounts, let mine = counts[local], let peers = counts[remote] {
            if mine > 2 * peers { return .incoming }
            if peers > 2 * mine { return .outgoing }
        }
        // No listener seen (it closed before the first read): a client's own port is ephemeral, a
        // server's is not.
        if !Self.isEphemeral(local.port) && Self.isEphemeral(remote.port) { return .incoming }
        return .outgoing
    }

    /// The listening socket (or unconnected UDP socket) a connection to `local` arrives on.
    func listener(netns: UInt64, transport: TransportProtocol, local: Endpoint) -> Listener? {
        guard let known = listeners[netns] else { return nil }
        let exact = ListenerKey(transport: transport, port: local.port, address: local.address)
        let any = ListenerKey(transport: transport, port: local.port, address: nil)
        if let found = known[exact] ?? known[any] { return found }
        // A v4 peer of a dual-stack v6 listener shows up as a mapped address, and a v4 packet's
        // address may belong to a v6 socket's mapped one.
        if let v4 = local.address.unmappedV4 {
            return known[ListenerKey(transport: transport, port: local.port, address: v4)]
        }
        if case .v4(let a) = local.address {
            let mapped = IPAddress.v6(high: 0, low: 0xFFFF_0000_0000 | UInt64(a))
            return known[ListenerKey(transport: transport, port: local.port, address: mapped)]
        }
        return nil
    }

    /// Settles the guess a socket destroyed in this interval made about its peer's FIN
    /// (`finGuessed`) from its peer's own count, when the peer is a socket on this host: an orphaned
    /// socket (closed by its process) is destroyed as soon as its own FIN is acknowledged, which can
    /// be before the peer's FIN comes. A TCP receiver counts the FIN only after every byte before
    /// it, so it received the FIN if it counted one byte more than the peer sent, and did not if it
    /// counted exactly what the peer sent, however old the peer's count is.
    private mutating func settleGuessedFins() {
        // Each guessing socket by its ends as its peer has them.
        var byPeerEnds: [Tuple: Dictionary<SocketID, Tracked>.Index] = [:]
        for id in finGuesses {
            guard let index = sockets.index(forKey: id), sockets.values[index].finGuessed else { continue }
            let o = sockets.values[index].observation
            byPeerEnds[Tuple(.tcp, o.remote, o.local)] = index
        }
        finGuesses = []
        guard !byPeerEnds.isEmpty else { return }
        // Found first, settled after: a mutation while `indices` holds the table would copy it.
        var settled: [(index: Dictionary<SocketID, Tracked>.Index, peerPayload: UInt64)] = []
        for peer in sockets.indices where sockets.values[peer].observation.transport == .tcp {
            let p = sockets.values[peer].observation
            guard let index = byPeerEnds[Tuple(.tcp, p.local, p.remote)], index != peer, p.counters != nil else {
                continue
            }
            // Loopback ends of different namespaces are different connections.
            if p.local.address.isLoopback && sockets.keys[index].netns != sockets.keys[peer].netns { continue }
            settled.append((index, sockets.values[peer].rawAccounted.bytesSent))
        }
        for s in settled { Self.settleGuessedFin(&sockets.values[s.index], peerPayload: s.peerPayload) }
    }

    /// Settles a guessed FIN (`finGuessed`) from what the peer sent before its FIN: given back if the
    /// socket received exactly that, kept off if one byte more.
    static func settleGuessedFin(_ s: inout Tracked, peerPayload: UInt64) {
        guard s.finGuessed else { return }
        if s.rawAccounted.bytesReceived == peerPayload {
            s.pending.bytesReceived += 1
            s.finSubtracted = false
            s.finGuessed = false
        } else if s.rawAccounted.bytesReceived == peerPayload + 1 {
            s.finGuessed = false
        }
    }

    /// Linux's default `ip_local_port_range`.
    static func isEphemeral(_ port: UInt16) -> Bool { (32768...60999).contains(port) }

    /// Ends the interval: every followed socket's pending stats, grouped by connection, with what is
    /// known of the remote end when it is a socket on this host. Closed sockets are then forgotten.
    public mutating func flush() -> [Connection] {
        // Each socket's end taken in place; closed sockets are noted to be forgotten, open ones
        // start the next interval with nothing pending.
        if !finGuesses.isEmpty { settleGuessedFins() }
        var ends: [FlowEnd] = []
        ends.reserveCapacity(sockets.count + capture.ended.count + countedEnds.count)
        var closedIDs: [SocketID] = []
        var index = sockets.startIndex
        while index != sockets.endIndex {
            let id = sockets.keys[index]
            let s = sockets.values[index]
            ends.append(
                FlowEnd(
                    netns: id.netns,
                    transport: s.observation.transport,
                    local: s.observation.local,
                    remote: s.observation.remote,
                    owner: s.owner ?? s.listenerInode.flatMap { listenerOwners[$0] },
                    direction: s.direction,
                    stats: s.pending,
                    // Capture counts what UDP sockets of its namespace carry; sock_diag keeps no count.
                    countersKnown: s.observation.counters != nil
                        || (id.netns == capturedNamespace && s.observation.transport == .udp),
                    closedLifetimeNanos: s.closed ? s.closedLifetimeNanos : nil
                ))
            if s.closed {
                closedIDs.append(id)
                if s.finGuessed { health.peerFinAssumed += 1 }
            } else {
                sockets.values[index].pending = ConnectionStats()
            }
            index = sockets.index(after: index)
        }
        ends += capture.ended.map(\.end)
        ends += countedEnds
        countedEnds = []
        countedEndsRollUpAt = 1024
        flushes &+= 1
        capture.ended = []
        capture.endedAfterRollUp = 0
        sockets.remove(closedIDs, whose: \.closed)
        unowned = unowned.filter { sockets[$0.value] != nil }
        health.tracked = sockets.count + counted.count
        if ends.count > maxReportConnections {
            health.rolledUpForMemory += UInt64(MemoryRollup.rollUp(&ends, toFit: maxReportConnections))
        }
        return groupConnections(ends)
    }
}
