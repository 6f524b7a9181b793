/// Turns the eBPF programs' flow records into per-interval connection deltas.
///
/// Open flows are read every pass (cumulative counters); closed ones arrive once with their final
/// counters. A flow is followed by its record id within its namespace, so a reused address never
/// mixes two sockets' counters.
public struct FlowTracker: Sendable {
    public struct Health: Sendable, Equatable {
        public var tracked = 0
        /// Flows that vanished without their final record: what they carried after their last read is lost.
        public var closedWithoutFinalRecord: UInt64 = 0
        /// Counters that went backwards for one flow (never expected; the flow is re-based).
        public var counterRegressions: UInt64 = 0
        /// Open records ignored because their socket had just closed (read by an iterator in the
        /// instant between its final record and its removal from the kernel's table).
        public var lateRecordsIgnored: UInt64 = 0
        /// Flow ends merged into another because the interval held more than the memory budget
        /// allows one by one (`MemoryRollup`): counted, never lost.
        public var rolledUpForMemory: UInt64 = 0
        /// Open flows past `maxOpenFlows` followed by their counts only (`maxCountedFlows`), whose
        /// deltas go to rolled-up rows.
        public var countedOnly = 0
        /// Open flows the last pass did not follow at all, both tables being at their bounds: what
        /// they carry is not counted until one of them has room.
        public var openNotFollowed = 0

        public init() {}
    }

    private struct Key: Hashable {
        var netns: UInt64
        var id: FlowRecord.ID

        // Hashed for every record, two or three times: two words (a namespace is a 32-bit inode
        // number, a socket's kernel address is unique while it lives), the peer only for UDP.
        func hash(into hasher: inout Hasher) {
            hasher.combine(id.socket ^ netns)
            hasher.combine(id.birth)
            if let peer = id.peer { hasher.combine(peer) }
        }
    }

    private struct ServerEnd: Hashable {
        var netns: UInt64
        var local: Endpoint
    }

    private struct SocketKey: Hashable {
        var netns: UInt64
        var socket: UInt64

        func hash(into hasher: inout Hasher) { hasher.combine(socket ^ netns) }
    }

    /// TCP flows closed in this interval and in the one before, by socket address: their birth
    /// time, which no later record may start again, and when their final record came.
    private struct RecentlyClosed {
        struct Closed {
            var birth: UInt64
            var at: UInt64?
            /// For a flow given up for lost (complete passes stopped listing it), not closed by its
            /// final record: its inode and last counters, from which it goes on if it is listed again.
            /// An iterator may skip a socket while the kernel's table changes under it.
            var resume: (inode: UInt64, accounted: SocketCounters)? = nil
        }
        var generations: [[SocketKey: Closed]] = [[:], [:]]
        /// How long after a socket's final record an iterator may still list it: the instant between
        /// its state's change and its removal from the kernel's table, and a pass's length at most.
        static let lateListingNanos: UInt64 = 1_000_000_000

        mutating func insert(_ key: Key, at now: UInt64?, resume: (inode: UInt64, accounted: SocketCounters)? = nil) {
            generations[0][SocketKey(netns: key.netns, socket: key.id.socket)] = Closed(
                birth: key.id.birth, at: now, resume: resume)
        }
        /// The socket that closed last at this address, if it did lately, and which generation holds it.
        func find(_ key: Key) -> (generation: Int, closed: Closed)? {
            let s = SocketKey(netns: key.netns, socket: key.id.socket)
            // An empty table is not worth hashing the key for.
            if !generations[0].isEmpty, let closed = generations[0][s] { return (0, closed) }
            return generations[1].isEmpty ? nil : generations[1][s].map { (1, $0) }
        }
        mutating func forget(_ key: Key, generation: Int) {
            generations[generation][SocketKey(netns: key.netns, socket: key.id.socket)] = nil
        }
        /// Whether a record with no birth at the address of `closed` may be that socket listed late:
        /// not when the address closed long enough ago that the record must be another socket's,
        /// which took the address since.
        static func mayBeListedLate(_ closed: Closed, now: UInt64?) -> Bool {
            guard let at = closed.at, let now else { return true }
            return now < at || now - at < lateListingNanos
        }
        mutating func nextInterval() {
            let last = generations[0].count
            generations[1] = generations[0]
            generations[0] = Dictionary(minimumCapacity: last)
        }
    }

    /// What is kept of a flow followed by its counts only: enough to take the deltas of its
    /// cumulative counters (about 200 bytes with its key, against four times that for `Tracked`).
    private struct Counted {
        var accounted: SocketCounters
        var inode: UInt64
        /// Decided when it was first met, so that every pass rolls it into the same row.
        var direction: ConnectionDirection
        var establishedCounted: Bool
        var missingPasses: UInt8 = 0
        /// The interval it was last reported in: each interval counts it once in its rolled-up row.
        var interval: UInt32
        var seenInPass: UInt64
    }

    /// What is kept of a followed flow: its ends and counts, not its whole last record.
    private struct Tracked {
        var netns: UInt64
        var transport: TransportProtocol
        var local: Endpoint
        var remote: Endpoint
        var inode: UInt64
        var accounted: SocketCounters
        var pending = ConnectionStats()
        var owner: SocketOwner?
        var direction: ConnectionDirection
        var establishedCounted: Bool
        var everEstablished: Bool
        /// When the socket was made (monotonic ns), when the programs saw it made.
        var birth: UInt64?
        var closed = false
        /// How long it lived, once closed with a known birth.
        var closedLifetimeNanos: UInt64? = nil
        var missingPasses = 0
        var seenInPass: UInt64 = 0

        var end: FlowEnd {
            FlowEnd(
                netns: netns,
                transport: transport,
                local: local,
                remote: remote,
                owner: owner,
                direction: direction,
                stats: pending,
                countersKnown: true,
                closedLifetimeNanos: closed ? closedLifetimeNanos : nil
            )
        }
    }

    /// Whether TCP bytes come from the per-call hooks (the sock_length strategy).
    public let hooksCountTCPBytes: Bool
    /// At most this many flows are followed open (the memory budget's share, `MemoryBudget`).
    public let maxOpenFlows: Int
    /// Closed flows kept one by one until the report; past it they are rolled up.
    public let maxClosedEnds: Int
    /// Connections one report carries before they are rolled up.
    public let maxReportConnections: Int
    /// Open flows followed by their counts only, past `maxOpenFlows`.
    public let maxCountedFlows: Int
    /// What `health` counts; its table sizes are taken when it is read.
    private var tally = Health()
    public var health: Health {
        var h = tally
        h.tracked = flows.count + counted.count + closedEnds.count
        h.countedOnly = counted.count
        return h
    }
    /// Flows an iterator has listed open (or that closed since the last flush after being listed).
    private var flows: [Key: Tracked] = [:]
    /// Flows past `maxOpenFlows`, followed by their counts only: each pass adds their deltas to
    /// `closedEnds`, rolled up by their ephemeral port.
    private var counted: [Key: Counted] = [:]
    /// Servers' local ends: the programs saw connections accepted there, or the iterator listed a
    /// socket listening there (an unspecified address listens on every local one). A flow the
    /// programs did not see start (their table was full) whose local end is one is a server's
    /// too: its client's port and its own may both be in the ephemeral range, so the ports alone
    /// cannot tell.
    private var serverEnds = Set<ServerEnd>()
    private static let maxServerEnds = 4096
    private var interval: UInt32 = 0
    /// Flows met only in their final record this interval: most short-lived ones, which need no lookup.
    private var closedEnds: [FlowEnd] = []
    private var unowned: [UInt64: Key] = [:]
    /// Sockets older than the agent that were not followed for lack of room: when one is followed
    /// later, it starts from its counters then, as it would have at the first pass.
    private var skippedInherited = Set<UInt64>()
    /// How many closed ends trigger the next rollup (grows when rolling up cannot shrink them).
    private var closedEndsRollUpAt: Int
    private var notFollowedThisPass = 0
    private var pass: UInt64 = 0
    /// Flows closed lately. An iterator may list a socket an instant after its final record left
    /// (the state changes before the socket is unhashed): such a late open record must not start
    /// the flow again. Without its table entry (deleted at close) the late record has no birth
    /// time, so the socket's address alone is what matches it.
    private var recentlyClosed = RecentlyClosed()
    /// Passes an open flow may be missing before it is taken as closed: its final record may still be
    /// on its way through the ring buffer.
    private let closeGracePasses = 2

    public init(
        hooksCountTCPBytes: Bool, maxOpenFlows: Int = .max, maxCountedFlows: Int = 0, maxClosedEnds: Int = .max,
        maxReportConnections: Int = .max
    ) {
        self.hooksCountTCPBytes = hooksCountTCPBytes
        self.maxCountedFlows = max(0, maxCountedFlows)
        self.maxOpenFlows = max(1, maxOpenFlows)
        self.maxClosedEnds = max(2, maxClosedEnds)
        self.maxReportConnections = max(1, maxReportConnections)
        self.closedEndsRollUpAt = self.maxClosedEnds
    }

    /// Inodes of followed flows whose process the programs did not see (sockets older than the agent).
    public var inodesWithoutOwner: Set<UInt64> { Set(unowned.keys) }

    public mutating func assignOwners(_ owners: [UInt64: SocketOwner]) {
        for (inode, owner) in owners {
            guard let key = unowned.removeValue(forKey: inode), let index = flows.index(forKey: key) else { continue }
            if flows.values[index].owner == nil { flows.values[index].owner = owner }
        }
    }

    /// Closed flows between two full passes. `now` is when they were taken (monotonic ns, the
    /// programs' clock): a record reaches the agent within a pass of its close, which is precise
    /// enough to tell a connection that lived under two minutes (rollups) from one that did not.
    public mutating func apply(closed: [FlowRecord], now: UInt64? = nil) {
        for record in closed { observe(closed: record, now: now) }
    }

    /// One closed flow's final record, as it comes.
    public mutating func observe(closed record: FlowRecord, now: UInt64? = nil) {
        observe(record, baseline: false, final: true, now: now)
    }

    /// One full pass: every open flow of the namespaces in `complete` (read whole), and the flows that
    /// closed since the last pass. On the first pass (`baseline`) flows already open start from their
    /// current counters: what they carried before the agent started belongs to no interval.
    public mutating func apply(
        open: [FlowRecord], closed: [FlowRecord], complete: Set<UInt64>, baseline: Bool, now: UInt64? = nil
    ) {
        beginPass()
        for record in open { observe(open: record, baseline: baseline, now: now) }
        endPass(closed: closed, complete: complete, now: now)
    }

    /// A pass taken one open record at a time, as an iterator yields them (no list of them all is
    /// kept): `beginPass`, `observe(open:)` for each, then `endPass`.
    public mutating func beginPass() {
        pass += 1
        notFollowedThisPass = 0
    }

    public mutating func observe(open record: FlowRecord, baseline: Bool, now: UInt64? = nil) {
        if record.flags.contains(.listening) {
            noteServerEnd(record)
            return
        }
        observe(record, baseline: baseline, final: false, now: now)
    }

    /// Ends the pass: flows of a namespace in `complete` that it did not list are closed after the
    /// grace passes.
    public mutating func endPass(closed: [FlowRecord], complete: Set<UInt64>, now: UInt64? = nil) {
        tally.openNotFollowed = notFollowedThisPass
        for record in closed { observe(record, baseline: false, final: true, now: now) }
        var index = flows.startIndex
        while index != flows.endIndex {
            defer { index = flows.index(after: index) }
            guard !flows.values[index].closed, flows.values[index].seenInPass != pass,
                complete.contains(flows.keys[index].netns)
            else { continue }
            flows.values[index].missingPasses += 1
            if flows.values[index].missingPasses > closeGracePasses {
                Self.close(&flows.values[index], error: 0, now: now)
                let t = flows.values[index]
                if t.transport == .tcp {
                    recentlyClosed.insert(flows.keys[index], at: now, resume: (t.inode, t.accounted))
                }
                tally.closedWithoutFinalRecord += 1
            }
        }
        var gone: [Key] = []
        for index in counted.indices where counted.values[index].seenInPass != pass {
            guard complete.contains(counted.keys[index].netns) else { continue }
            counted.values[index].missingPasses += 1
            if counted.values[index].missingPasses > closeGracePasses { gone.append(counted.keys[index]) }
        }
        // What they carried after their last read is lost; their close is still counted (by its
        // ends' rollup, which the flow's key no longer has: the report shows it as a close only).
        for key in gone {
            if let c = counted.removeValue(forKey: key) {
                recentlyClosed.insert(key, at: now, resume: (c.inode, c.accounted))
            }
            tally.closedWithoutFinalRecord += 1
        }
    }

    private mutating func observe(_ r: FlowRecord, baseline: Bool, final: Bool, now: UInt64?) {
        let key = Key(netns: r.netns, id: r.id)
        let counters = r.counters(hooksCountTCPBytes: hooksCountTCPBytes)
        if let index = flows.index(forKey: key) {
            guard !flows.values[index].closed else { return }
            if Self.account(&flows.values[index], r, counters) { tally.counterRegressions += 1 }
            if !final { flows.values[index].seenInPass = pass }
            flows.values[index].missingPasses = 0
            if r.owner != nil && (flows.values[index].owner == nil || flows.values[index].owner?.containerID == nil) {
                flows.values[index].owner = r.owner
            }
            if final {
                Self.close(&flows.values[index], error: r.error, now: now)
                remember(key, r.transport, now: now)
            }
            return
        }
        if !counted.isEmpty, let index = counted.index(forKey: key) {
            if !final { counted.values[index].seenInPass = pass }
            let (end, regressed) = Self.count(&counted.values[index], r, counters, final: final, interval: interval)
            append(counted: end, regressed: regressed)
            if final {
                counted.remove(at: index)
                remember(key, r.transport, now: now)
            }
            return
        }
        // The address's last closed socket, looked up once for what follows.
        let closed = r.transport == .tcp ? recentlyClosed.find(key) : nil
        // The same socket (address, birth, inode) as a flow given up for lost: it goes on from its
        // last counters.
        var resumed: SocketCounters? = nil
        if !final, let closed, closed.closed.birth == key.id.birth, let resume = closed.closed.resume, r.inode != 0,
            resume.inode == r.inode
        {
            recentlyClosed.forget(key, generation: closed.generation)
            resumed = resume.accounted
        }
        if resumed == nil, let closed {
            // Not followed, and already reported closed: a late open record, a final record after the
            // flow was given up for lost, or the same final record twice would all count it again.
            // A record without a birth (the programs' table was full) matches any closed socket of its
            // address without one: only a final record is taken as the same; an open one is judged by
            // how long ago the address closed, below.
            if closed.closed.birth == key.id.birth && (key.id.birth != 0 || final) { return }
            if !final && !baseline && !r.flags.contains(.tracked)
                && RecentlyClosed.mayBeListedLate(closed.closed, now: now)
            {
                tally.lateRecordsIgnored += 1
                return
            }
        }
        if !final && r.direction == .incoming { noteServerEnd(r) }
        let bornWatched = r.flags.contains(.bornWatched)
        if !final && flows.count >= maxOpenFlows {
            if counted.count < maxCountedFlows {
                let inherited = (baseline || skippedInherited.remove(r.id.socket) != nil) && !bornWatched
                var c = Counted(
                    accounted: resumed ?? (inherited ? counters : .zero), inode: r.inode, direction: direction(of: r),
                    establishedCounted: inherited || resumed != nil, interval: interval &- 1, seenInPass: pass)
                let (end, regressed) = Self.count(&c, r, counters, final: false, interval: interval)
                append(counted: end, regressed: regressed)
                counted[key] = c
                return
            }
            notFollowedThisPass += 1
            if !bornWatched && baseline { skippedInherited.insert(r.id.socket) }
            return
        }
        // A flow older than the agent: its history is not ours to report. That includes one first
        // met in its final record: what it carried before the agent started cannot be told apart.
        let inherited =
            resumed == nil && (baseline || final || skippedInherited.remove(r.id.socket) != nil) && !bornWatched
        let established = r.flags.contains(.established)
        var t = Tracked(
            netns: r.netns,
            transport: r.transport,
            local: r.local,
            remote: r.remote,
            inode: r.inode,
            accounted: resumed ?? (inherited ? counters : .zero),
            owner: r.owner,
            direction: direction(of: r),
            establishedCounted: inherited || resumed != nil,
            everEstablished: established,
            birth: !inherited && r.id.birth != 0 ? r.id.birth : nil
        )
        if !inherited, Self.account(&t, r, counters) { tally.counterRegressions += 1 }
        if final {
            Self.close(&t, error: r.error, now: now)
            remember(key, r.transport, now: now)
            closedEnds.append(t.end)
            if closedEnds.count >= closedEndsRollUpAt { rollUpClosedEnds() }
            return
        }
        t.seenInPass = pass
        if t.owner == nil && r.inode != 0 { unowned[r.inode] = key }
        flows[key] = t
    }

    /// What a counted-only flow's counters moved, as an end rolled up by its ephemeral port, with its
    /// close when `final`; and whether the counters went backwards.
    private static func count(
        _ c: inout Counted, _ r: FlowRecord, _ counters: SocketCounters, final: Bool, interval: UInt32
    ) -> (FlowEnd, Bool) {
        var stats = ConnectionStats()
        if r.inode != 0 { c.inode = r.inode }
        let delta = counters.since(c.accounted)
        if let delta { stats.add(delta) }
        c.accounted = counters
        stats.rttMicros = r.rttMicros
        stats.rttVarMicros = r.rttVarMicros
        stats.ecnNegotiated = r.flags.contains(.ecnNegotiated)
        let established = r.flags.contains(.established)
        if r.transport == .tcp && !c.establishedCounted && established {
            c.establishedCounted = true
            stats.tcpEstablished = 1
        }
        if final && r.transport == .tcp {
            if c.establishedCounted { stats.tcpClosed = 1 }
            if r.error > 0 { stats.tcpFailures[UInt32(r.error)] = 1 }
        }
        c.missingPasses = 0
        var end = FlowEnd(
            netns: r.netns, transport: r.transport, local: r.local, remote: r.remote, owner: r.owner,
            direction: c.direction, stats: stats, countersKnown: true)
        end.rolledUp = c.interval == interval ? 0 : 1
        c.interval = interval
        MemoryRollup.roll(&end, .ephemeralPort)
        return (end, delta == nil)
    }

    private mutating func append(counted end: FlowEnd, regressed: Bool) {
        if regressed { tally.counterRegressions += 1 }
        closedEnds.append(end)
        if closedEnds.count >= closedEndsRollUpAt { rollUpClosedEnds() }
    }

    /// Keeps the interval's closed flows within their bound: by ephemeral port first, then by remote
    /// end; if even that leaves more than half the bound, the next rollup waits for twice as many.
    private mutating func rollUpClosedEnds() {
        tally.rolledUpForMemory += UInt64(MemoryRollup.rollUp(&closedEnds, toFit: maxClosedEnds / 2))
        closedEndsRollUpAt = max(maxClosedEnds, closedEnds.count * 2)
    }

    private mutating func remember(_ key: Key, _ transport: TransportProtocol, now: UInt64?) {
        if transport == .tcp { recentlyClosed.insert(key, at: now) }
    }

    /// Adds what the flow's counters moved since the last read. Returns true when they went backwards.
    private static func account(_ t: inout Tracked, _ r: FlowRecord, _ counters: SocketCounters) -> Bool {
        if r.inode != 0 { t.inode = r.inode }
        // A closing socket has given its local port back by the time its final record is taken.
        if r.local.port != 0 { t.local = r.local }
        t.remote = r.remote
        if r.rttMicros != 0 {
            t.pending.rttMicros = r.rttMicros
            t.pending.rttVarMicros = r.rttVarMicros
        }
        if r.flags.contains(.ecnNegotiated) { t.pending.ecnNegotiated = true }
        if r.flags.contains(.established) { t.everEstablished = true }
        if r.transport == .tcp && !t.establishedCounted && t.everEstablished {
            t.establishedCounted = true
            t.pending.tcpEstablished += 1
        }
        guard let delta = counters.since(t.accounted) else {
            t.accounted = counters
            return true
        }
        t.pending.add(delta)
        t.accounted = counters
        return false
    }

    private static func close(_ t: inout Tracked, error: Int32, now: UInt64?) {
        t.closed = true
        if let birth = t.birth, let now { t.closedLifetimeNanos = now >= birth ? now - birth : 0 }
        guard t.transport == .tcp else { return }
        if t.everEstablished { t.pending.tcpClosed += 1 }
        if error > 0 { t.pending.tcpFailures[UInt32(error), default: 0] += 1 }
    }

    /// Only flows whose start the programs missed lack a direction: one whose local end is a
    /// server's the programs saw accept connections is incoming; otherwise a client's own port is
    /// ephemeral, a server's is not.
    private func direction(of r: FlowRecord) -> ConnectionDirection {
        if let known = r.direction { return known }
        if isServerEnd(r.local, netns: r.netns) { return .incoming }
        let isEphemeral = ConnectionTracker.isEphemeral
        return !isEphemeral(r.local.port) && isEphemeral(r.remote.port) ? .incoming : .outgoing
    }

    private func isServerEnd(_ local: Endpoint, netns: UInt64) -> Bool {
        guard !serverEnds.isEmpty else { return false }
        for address in [local.address, .v4(0), .v6(high: 0, low: 0)] {
            if serverEnds.contains(ServerEnd(netns: netns, local: Endpoint(address, local.port))) { return true }
        }
        return false
    }

    /// A listener, or a connection the programs saw accepted (noted when the flow is first met).
    private mutating func noteServerEnd(_ r: FlowRecord) {
        guard r.transport == .tcp, serverEnds.count < Self.maxServerEnds else { return }
        serverEnds.insert(ServerEnd(netns: r.netns, local: r.local))
    }

    /// Ends the interval: every flow's pending stats grouped by connection; closed flows are forgotten.
    public mutating func flush() -> [Connection] {
        var ends = closedEnds
        closedEnds = []  // before growing `ends`, so it grows in place instead of being copied
        closedEnds.reserveCapacity(ends.count)
        ends.reserveCapacity(ends.count + flows.count)
        // Each flow's end taken in place; closed flows are noted to be forgotten, open ones start
        // the next interval with nothing pending.
        var closedKeys: [Key] = []
        var index = flows.startIndex
        while index != flows.endIndex {
            ends.append(flows.values[index].end)
            if flows.values[index].closed {
                closedKeys.append(flows.keys[index])
            } else {
                flows.values[index].pending = ConnectionStats()
            }
            index = flows.index(after: index)
        }
        if ends.count > maxReportConnections {
            tally.rolledUpForMemory += UInt64(MemoryRollup.rollUp(&ends, toFit: maxReportConnections))
        }
        closedEndsRollUpAt = maxClosedEnds
        interval &+= 1
        recentlyClosed.nextInterval()
        flows.remove(closedKeys, whose: \.closed)
        unowned = unowned.filter { flows[$0.value] != nil }
        // Only sockets a pass still lists are worth remembering: the rest have closed.
        if !skippedInherited.isEmpty && notFollowedThisPass == 0 { skippedInherited = [] }
        return groupConnections(ends)
    }
}
