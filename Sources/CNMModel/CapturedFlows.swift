/// What one side of a captured flow put on the wire.
public struct WireCounts: Sendable, Equatable, Hashable {
    /// Payload bytes, each counted once: TCP from sequence numbers (retransmissions and the SYN and
    /// FIN sequence slots excluded), UDP from datagram lengths.
    public var bytes: UInt64
    /// Packets, every one seen (pure ACKs and retransmissions included).
    public var packets: UInt64
    /// TCP segments that carried data (or a SYN or FIN) already sent.
    public var retransmits: UInt64

    public init(bytes: UInt64 = 0, packets: UInt64 = 0, retransmits: UInt64 = 0) {
        self.bytes = bytes
        self.packets = packets
        self.retransmits = retransmits
    }
}

/// A TCP connection, or what a UDP 4-tuple carried since the last report, as packet capture saw it in
/// the agent's network namespace: what each side sent, and how the connection began and ended.
public struct CapturedFlow: Sendable, Equatable {
    public struct Side: Sendable, Equatable {
        public var endpoint: Endpoint
        /// A socket of the capturing namespace: packets it sent left from here, or those it received
        /// arrived here (both sides on the loopback interface).
        public var isLocal: Bool
        /// sock_diag listed this side's socket while the flow lived (in a read, or a destroy
        /// notification), so the kernel's own counters describe it: capture does not report it again.
        public var seenBySockDiag: Bool
        /// The start of the last read window (wall clock, ns) whose dump listed this side's socket: it
        /// tells which socket this was when one pair of ends was used twice.
        public var lastListedAt: Int64?
        public var sent: WireCounts
        /// Sent the SYN (TCP) or the first datagram seen (UDP).
        public var initiated: Bool
        /// Sent a TCP reset.
        public var sentReset: Bool
        /// The errno this side's socket ended with: 111 its SYN was answered by a reset, 104 a reset
        /// arrived on the open connection, 32 one arrived after the peer's FIN.
        public var failure: UInt32?
        /// Sent a FIN: the peer's `bytes_received` counts one byte more than this side's payload.
        public var sentFin: Bool

        public init(
            endpoint: Endpoint,
            isLocal: Bool,
            seenBySockDiag: Bool = false,
            lastListedAt: Int64? = nil,
            sent: WireCounts = WireCounts(),
            initiated: Bool = false,
            sentReset: Bool = false,
            failure: UInt32? = nil,
            sentFin: Bool = false
        ) {
            self.endpoint = endpoint
            self.isLocal = isLocal
            self.seenBySockDiag = seenBySockDiag
            self.lastListedAt = lastListedAt
            self.sent = sent
            self.initiated = initiated
            self.sentReset = sentReset
            self.failure = failure
            self.sentFin = sentFin
        }
    }

    public var transport: TransportProtocol
    public var a: Side
    public var b: Side
    /// Followed from its SYN: the counts cover the connection's whole life.
    public var fromStart: Bool
    /// The handshake completed, or data flowed in a connection older than the capture.
    public var established: Bool

    public init(transport: TransportProtocol, a: Side, b: Side, fromStart: Bool, established: Bool) {
        self.transport = transport
        self.a = a
        self.b = b
        self.fromStart = fromStart
        self.established = established
    }

    /// Both sides, each with the one it talks to.
    public var ends: [(side: Side, peer: Side)] { [(a, b), (b, a)] }
}

/// What packet capture in one network namespace brings to a pass.
public struct CapturedTraffic: Sendable {
    /// The namespace the capture watches (the agent's own).
    public var netns: UInt64
    /// TCP connections that ended since the last pass.
    public var ended: [CapturedFlow]
    /// What each UDP 4-tuple carried since the last report; given on the pass that ends an interval.
    public var datagrams: [CapturedFlow]

    public init(netns: UInt64, ended: [CapturedFlow] = [], datagrams: [CapturedFlow] = []) {
        self.netns = netns
        self.ended = ended
        self.datagrams = datagrams
    }
}

extension SocketObservation {
    /// Whether the connection tracker follows this socket as a flow of its own: a connected socket
    /// with a full kernel state, not the remains of one.
    public var isFollowedFlow: Bool { !isListener && !isTimeWaitRemains }

    /// What the kernel keeps of a TCP connection after it destroyed the socket (`inet_timewait_sock`):
    /// listed by sock_diag under the destroyed socket's cookie, in TIME_WAIT or, when the socket was
    /// closed before the peer's FIN came, in FIN_WAIT2; with no inode and no `tcp_info`. A full
    /// socket in FIN_WAIT2 (shut down for writing, still held) always has `tcp_info`.
    public var isTimeWaitRemains: Bool {
        state == .timeWait || (transport == .tcp && state == .finWait2 && counters == nil)
    }
}

extension Endpoint {
    /// The same endpoint with an IPv4-mapped IPv6 address written as IPv4, as it is on the wire.
    public var plain: Endpoint { Endpoint(address.unmappedV4 ?? address, port) }
}
