import CNMModel

/// Which way a packet passed the namespace's interfaces, which tells which of its ends is a socket here.
public enum PacketWay: Sendable {
    /// Sent by this namespace: its source is local.
    case sent
    /// Arrived for this namespace: its destination is local.
    case received
    /// On the loopback interface, where both ends are local (each packet is taken once, as sent).
    case loopback
}

/// TCP connections and UDP 4-tuples built up from the packets of one network namespace, and judged
/// against the reads of its sockets through sock_diag.
///
/// TCP: payload bytes each way from sequence numbers (the highest end seen less the first byte, so
/// a byte sent twice counts once), packets each way, retransmitted segments, and how the connection
/// opened and ended: SYN, SYN-ACK, FIN both ways, or a reset (111 for a SYN refused, 104 on an open
/// connection, 32 after the peer's FIN). UDP: bytes and datagrams each way since the last report.
///
/// `markSeen` records which sides sock_diag listed while they lived; `takeEnded` hands over each
/// connection once it is over and no later read can list it. Not thread-safe: the capture thread
/// and the collection queue share it under a lock.
public struct WireFlowTable: Sendable {
    public struct Health: Sendable, Equatable {
        public var packets: UInt64 = 0
        /// Packets of new flows not followed because the table was full.
        public var tableFull: UInt64 = 0
        /// Walks of the whole table to make room. Only made when a flow was handed over since the
        /// last, so a flood of new flows into a full table costs each packet a lookup, not a walk.
        public var sweeps: UInt64 = 0
        /// Ended connections pushed out by a new one on the same ends while `maxFlows` of them were
        /// already waiting to be handed over (a flood reusing ports between two passes): what they
        /// carried is lost, and counted here.
        public var displacedDropped: UInt64 = 0

        public init() {}
    }

    /// Both ends, lower one first, so that the two directions of a flow find one entry.
    struct Key: Hashable {
        var transport: TransportProtocol
        var a: Endpoint
        var b: Endpoint

        init(_ transport: TransportProtocol, _ x: Endpoint, _ y: Endpoint) {
            self.transport = transport
            if (x.address, x.port) <= (y.address, y.port) {
                (a, b) = (x, y)
            } else {
                (a, b) = (y, x)
            }
        }
    }

    /// One end of a flow and what it sent.
    struct Sender {
        var endpoint: Endpoint
        var isLocal = false
        /// The start of the latest read window whose dump listed this side's socket (`Int64.min` for
        /// a destroy notification).
        var sightedAt: Int64?
        var packets: UInt64 = 0
        /// UDP payload bytes; TCP's come from `span`.
        var bytes: UInt64 = 0
        var retransmits: UInt64 = 0
        var span = SequenceSpan()
        var synSequence: UInt32?
        /// 64-bit sequence number of its FIN.
        var finSequence: UInt64?
        var initiated = false
        var sentReset = false
        var failure: UInt32?

        init(_ endpoint: Endpoint) { self.endpoint = endpoint }

        func side(_ transport: TransportProtocol) -> CapturedFlow.Side {
            CapturedFlow.Side(
                endpoint: endpoint,
                isLocal: isLocal,
                seenBySockDiag: sightedAt != nil,
                lastListedAt: sightedAt == .min ? nil : sightedAt,
                sent: WireCounts(
                    bytes: transport == .tcp ? span.bytes : bytes, packets: packets, retransmits: retransmits),
                initiated: initiated,
                sentReset: sentReset,
                failure: failure,
                sentFin: transport == .tcp && finSequence != nil
            )
        }
    }

    /// What belongs to the flow as a whole.
    struct State {
        var firstPacket: Int64
        var lastPacket: Int64
        var fromStart = false
        var established = false
        /// When FIN went both ways or a reset was sent.
        var closedAt: Int64?
        /// Given out by `takeEnded`: from then on the entry only takes in late packets.
        var handedOver = false
    }

    struct Flow {
        var transport: TransportProtocol
        var a: Sender
        var b: Sender
        var state: State

        init(_ key: Key, at time: Int64) {
            transport = key.transport
            a = Sender(key.a)
            b = Sender(key.b)
            state = State(firstPacket: time, lastPacket: time)
        }

        var isEnded: Bool { state.closedAt != nil || state.handedOver }

        var captured: CapturedFlow {
            CapturedFlow(
                transport: transport, a: a.side(transport), b: b.side(transport), fromStart: state.fromStart,
                established: state.established)
        }
    }

    /// How much a read window is widened each way: a socket is in the kernel's table an instant
    /// before its SYN leaves, and after its last ACK.
    public static let readSlackNanos: Int64 = 2_000_000
    /// How long an ended connection stays to take its late packets (the last ACK, a FIN sent again)
    /// instead of starting a flow of them.
    public static let lingerNanos: Int64 = 3_000_000_000
    /// A UDP 4-tuple is forgotten after this long without a datagram.
    public static let datagramIdleNanos: Int64 = 120_000_000_000

    public let maxFlows: Int
    public private(set) var health = Health()
    private var flows: [Key: Flow] = [:]
    /// Ended TCP connections pushed out of `flows` by a new one on the same ends before they were
    /// handed over.
    private var displaced: [Key: [Flow]] = [:]
    private var displacedCount = 0
    /// Flows in `flows` that were handed over (and linger for late packets): what a sweep can free.
    private var handedOverCount = 0

    public init(maxFlows: Int) {
        self.maxFlows = maxFlows
    }

    /// Flows followed, ended ones waiting for late packets included.
    public var count: Int { flows.count }

    /// Takes in one packet seen at `time` (wall clock, ns).
    public mutating func record(_ h: PacketHeaders, way: PacketWay, at time: Int64) {
        health.packets += 1
        let key = Key(h.transport, h.source, h.destination)
        if let index = flows.index(forKey: key) {
            if flows.values[index].isEnded && Self.opensAnotherConnection(h, flows.values[index]) {
                let old = flows.values[index]
                if old.state.handedOver {
                    handedOverCount -= 1
                } else if displacedCount < maxFlows {
                    displaced[key, default: []].append(old)
                    displacedCount += 1
                } else {
                    health.displacedDropped += 1
                }
                flows.values[index] = Flow(key, at: time)
            }
            Self.update(&flows.values[index], h, way: way, at: time)
            return
        }
        guard flows.count < maxFlows || sweepHandedOver() else {
            health.tableFull += 1
            return
        }
        var flow = Flow(key, at: time)
        Self.update(&flow, h, way: way, at: time)
        flows[key] = flow
    }

    /// A SYN, not the one that opened the flow sent again: the ends are reused by a new connection.
    private static func opensAnotherConnection(_ h: PacketHeaders, _ flow: Flow) -> Bool {
        guard h.transport == .tcp, h.flags.contains(.syn), !h.flags.contains(.ack) else { return false }
        let sender = flow.a.endpoint == h.source ? flow.a : flow.b
        return sender.synSequence != h.sequence
    }

    /// Makes room by dropping ended connections already handed over. Returns whether there is room.
    private mutating func sweepHandedOver() -> Bool {
        guard handedOverCount > 0 else { return false }
        health.sweeps += 1
        handedOverCount -= remove { $0.state.handedOver }
        return flows.count < maxFlows
    }

    /// Removes the flows `condition` holds for, in place: rebuilding the table would copy every
    /// entry. Returns how many went.
    @discardableResult
    private mutating func remove(where condition: (Flow) -> Bool) -> Int {
        let gone = flows.compactMap { condition($0.value) ? $0.key : nil }
        for key in gone { flows.removeValue(forKey: key) }
        return gone.count
    }

    private static func update(_ flow: inout Flow, _ h: PacketHeaders, way: PacketWay, at time: Int64) {
        flow.state.lastPacket = max(flow.state.lastPacket, time)
        guard !flow.state.handedOver else { return }
        // Which end sent it; a socket connected to itself is both.
        if flow.a.endpoint == h.source {
            packet(h, way: way, at: time, sender: &flow.a, receiver: &flow.b, &flow.state)
        } else {
            packet(h, way: way, at: time, sender: &flow.b, receiver: &flow.a, &flow.state)
        }
    }

    private static func packet(
        _ h: PacketHeaders,
        way: PacketWay,
        at time: Int64,
        sender s: inout Sender,
        receiver r: inout Sender,
        _ state: inout State
    ) {
        switch way {
        case .sent: s.isLocal = true
        case .received: r.isLocal = true
        case .loopback:
            s.isLocal = true
            r.isLocal = true
        }
        guard h.transport == .tcp else {
            // The first datagram seen says who started talking.
            if s.packets == 0 && r.packets == 0 && !r.initiated { s.initiated = true }
            s.packets += 1
            s.bytes += UInt64(h.payloadLength)
            return
        }
        s.packets += 1
        let syn = h.flags.contains(.syn)
        let ack = h.flags.contains(.ack)
        if !s.span.isStarted {
            s.span.start(at: h.sequence, afterSYN: syn)
            if syn && !ack && r.packets == 0 && s.packets == 1 {
                s.initiated = true
                state.fromStart = true
            }
            // Met mid-stream: the connection was open before the capture saw it.
            if !syn && !state.fromStart { state.established = true }
        } else if syn && s.synSequence == h.sequence {
            s.retransmits += 1
        }
        if syn {
            s.synSequence = h.sequence
            if ack && r.initiated { state.established = true }
        }
        // The SYN takes the sequence number before the first payload byte.
        let start = s.span.unwrap(h.sequence) + (syn ? 1 : 0)
        if h.payloadLength > 0 && s.span.add(start: start, length: UInt64(h.payloadLength)) {
            s.retransmits += 1
        }
        if h.flags.contains(.fin) {
            // The FIN takes the sequence number after the payload; it is no payload byte.
            let fin = start + UInt64(h.payloadLength)
            if h.payloadLength == 0 && s.finSequence == fin { s.retransmits += 1 }
            s.finSequence = fin
            if r.finSequence != nil && state.closedAt == nil { state.closedAt = time }
        }
        if h.flags.contains(.rst) { s.sentReset = true }
        if h.flags.contains(.rst) && state.closedAt == nil {
            // What the kernel sets on the socket that receives it (tcp_reset).
            if !state.established {
                if r.initiated { r.failure = TCPFailure.refused }
            } else {
                r.failure = s.finSequence != nil && r.finSequence == nil ? TCPFailure.brokenPipe : TCPFailure.reset
            }
            state.closedAt = time
        }
    }

    /// Marks the sides of TCP connections whose sockets a sock_diag read listed while they lived.
    /// `window` is when the read ran (wall clock, ns); a destroy notification's socket was alive at
    /// some moment up to its read, so its window starts at `Int64.min`.
    public mutating func markSeen(_ observations: [SocketObservation], during window: ClosedRange<Int64>) {
        let low = window.lowerBound == .min ? .min : window.lowerBound - Self.readSlackNanos
        let high = window.upperBound + Self.readSlackNanos
        for o in observations where o.transport == .tcp && o.isFollowedFlow {
            let local = o.local.plain
            let key = Key(.tcp, local, o.remote.plain)
            if let index = flows.index(forKey: key) {
                Self.mark(&flows.values[index], local, readStart: window.lowerBound, low, high)
            }
            if let index = displaced.index(forKey: key) {
                for i in displaced.values[index].indices {
                    Self.mark(&displaced.values[index][i], local, readStart: window.lowerBound, low, high)
                }
            }
        }
    }

    private static func mark(_ flow: inout Flow, _ local: Endpoint, readStart: Int64, _ low: Int64, _ high: Int64) {
        guard !flow.state.handedOver else { return }
        // A connection met mid-stream may have been open long before its first packet here.
        let starts = flow.state.fromStart ? flow.state.firstPacket : .min
        let ends = flow.state.closedAt != nil ? flow.state.lastPacket : .max
        guard starts <= high && ends >= low else { return }
        if flow.a.endpoint == local { flow.a.sightedAt = max(flow.a.sightedAt ?? .min, readStart) }
        if flow.b.endpoint == local { flow.b.sightedAt = max(flow.b.sightedAt ?? .min, readStart) }
    }

    /// Hands over the TCP connections that are over: closed by FIN both ways or a reset, or whose
    /// sockets are gone: idle since before a complete read of the namespace that listed neither
    /// local side. Call after `markSeen` took in every read that began before now; pass the start
    /// of this pass's read as `completeReadStart` when it read the whole namespace.
    public mutating func takeEnded(completeReadStart: Int64?, now: Int64) -> [CapturedFlow] {
        var out: [CapturedFlow] = []
        for list in displaced.values { out += list.map(\.captured) }
        displaced = [:]
        displacedCount = 0
        var expired = 0
        for index in flows.indices where flows.values[index].transport == .tcp {
            let flow = flows.values[index]
            if flow.state.handedOver {
                if flow.state.lastPacket + Self.lingerNanos < now { expired += 1 }
                continue
            }
            var ended = flow.state.closedAt != nil
            if !ended, let read = completeReadStart, flow.state.lastPacket + Self.readSlackNanos < read {
                let listed =
                    (flow.a.isLocal && flow.a.sightedAt == read) || (flow.b.isLocal && flow.b.sightedAt == read)
                ended = !listed
            }
            guard ended else { continue }
            out.append(flow.captured)
            flows.values[index].state.handedOver = true
            handedOverCount += 1
        }
        if expired > 0 {
            handedOverCount -= remove { $0.state.handedOver && $0.state.lastPacket + Self.lingerNanos < now }
        }
        return out
    }

    /// What each UDP 4-tuple carried since the last call; those silent for `datagramIdleNanos` are
    /// forgotten.
    public mutating func takeDatagrams(now: Int64) -> [CapturedFlow] {
        var out: [CapturedFlow] = []
        var idle: [Key] = []
        for index in flows.indices where flows.values[index].transport == .udp {
            let flow = flows.values[index]
            if flow.a.packets + flow.b.packets > 0 {
                out.append(flow.captured)
                for reset in [\Flow.a, \Flow.b] {
                    flows.values[index][keyPath: reset].packets = 0
                    flows.values[index][keyPath: reset].bytes = 0
                }
            } else if flow.state.lastPacket + Self.datagramIdleNanos < now {
                idle.append(flows.keys[index])
            }
        }
        for key in idle { flows[key] = nil }
        return out
    }
}
