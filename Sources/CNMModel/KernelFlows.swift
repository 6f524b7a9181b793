/// One record from the eBPF programs (`struct cnm_flow_record`), in model types: a TCP socket, or
/// one peer of a UDP socket, with every counter the programs keep for it.
public struct FlowRecord: Sendable, Equatable {
    /// A TCP socket is one flow; an unconnected UDP socket is one flow per peer.
    public struct ID: Hashable, Sendable {
        /// The socket's kernel address: unique while it lives, and soon reused after.
        public var socket: UInt64
        public var peer: Endpoint?
        /// When the programs first saw the flow born (monotonic ns), 0 for one already open: tells
        /// the lives of one reused address apart.
        public var birth: UInt64

        public init(socket: UInt64, peer: Endpoint? = nil, birth: UInt64 = 0) {
            self.socket = socket
            self.peer = peer
            self.birth = birth
        }
    }

    public struct Flags: OptionSet, Sendable, Equatable {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The handshake completed while the programs were attached, or before.
        public static let established = Flags(rawValue: 1 << 0)
        public static let closed = Flags(rawValue: 1 << 1)
        /// Followed from its first state change: the per-call byte counters cover its whole life.
        public static let bornWatched = Flags(rawValue: 1 << 2)
        /// The peer's FIN arrived; the kernel's `bytes_received` counts it as one byte.
        public static let finReceived = Flags(rawValue: 1 << 3)
        /// The flow has a table entry (owner, per-call counters).
        public static let tracked = Flags(rawValue: 1 << 4)
        /// ECN (RFC 3168) was negotiated in the handshake.
        public static let ecnNegotiated = Flags(rawValue: 1 << 5)
        /// Not a flow: a listening TCP socket, its local end only.
        public static let listening = Flags(rawValue: 1 << 6)
    }

    public var id: ID
    /// Non-zero for a closed flow read from the deferred table (its key there).
    public var closedTag: UInt32 = 0
    public var netns: UInt64
    public var transport: TransportProtocol
    public var local: Endpoint
    public var remote: Endpoint
    public var direction: ConnectionDirection?
    public var state: TCPState?
    public var pid: Int32?
    public var processName: ProcessName?
    /// Kernfs id of the owner's cgroup, 0 when unknown.
    public var cgroupID: UInt64
    /// The container that cgroup belongs to, filled in by the reader that knows cgroup names.
    public var containerID: String?
    public var inode: UInt64
    /// Counted by the per-call hooks.
    public var hookCounters: SocketCounters
    /// The kernel's tcp_sock counters: payload bytes sent once each, bytes received (with the FIN),
    /// segments, retransmitted segments and the TCP-quality counters.
    public var kernelCounters: SocketCounters
    public var rttMicros: UInt32
    public var rttVarMicros: UInt32
    /// `sk_err` when the socket closed (111 refused, 104 reset, 110 timed out), 0 for none.
    public var error: Int32
    public var flags: Flags

    // Inlinable: the ring buffer's reader builds one per record, in place.
    @inlinable
    public init(
        id: ID,
        netns: UInt64,
        transport: TransportProtocol,
        local: Endpoint,
        remote: Endpoint,
        direction: ConnectionDirection? = nil,
        state: TCPState? = nil,
        pid: Int32? = nil,
        processName: ProcessName? = nil,
        cgroupID: UInt64 = 0,
        containerID: String? = nil,
        inode: UInt64 = 0,
        hookCounters: SocketCounters = .zero,
        kernelCounters: SocketCounters = .zero,
        rttMicros: UInt32 = 0,
        rttVarMicros: UInt32 = 0,
        error: Int32 = 0,
        flags: Flags = []
    ) {
        self.id = id
        self.netns = netns
        self.transport = transport
        self.local = local
        self.remote = remote
        self.direction = direction
        self.state = state
        self.pid = pid
        self.processName = processName
        self.cgroupID = cgroupID
        self.containerID = containerID
        self.inode = inode
        self.hookCounters = hookCounters
        self.kernelCounters = kernelCounters
        self.rttMicros = rttMicros
        self.rttVarMicros = rttVarMicros
        self.error = error
        self.flags = flags
    }

    /// The process the programs saw using the flow, if any.
    public var owner: SocketOwner? {
        pid.map { SocketOwner(pid: $0, processName: processName ?? ProcessName(), containerID: containerID) }
    }

    /// The flow's cumulative counters under the chosen strategy.
    ///
    /// UDP has only the per-call counts. TCP takes its bytes from the per-call hooks when they
    /// exist and saw the whole connection (`bornWatched`); otherwise, and always for packets and
    /// retransmits, from the kernel's own counters, less the byte the kernel counts for the FIN.
    public func counters(hooksCountTCPBytes: Bool) -> SocketCounters {
        guard transport == .tcp else { return hookCounters }
        var c = kernelCounters
        if flags.contains(.finReceived) && c.bytesReceived > 0 { c.bytesReceived -= 1 }
        if hooksCountTCPBytes && flags.contains(.bornWatched) {
            c.bytesSent = hookCounters.bytesSent
            c.bytesReceived = hookCounters.bytesReceived
        }
        return c
    }
}

/// What the eBPF programs could not do, summed over CPUs, counted since they were loaded.
public struct EBPFTelemetry: Sendable, Equatable {
    public var tableFull: UInt64 = 0
    public var ringBufferDeferred: UInt64 = 0
    public var closedLost: UInt64 = 0
    public var udpPeerUnknown: UInt64 = 0
    public var syscallTableFull: UInt64 = 0
    public init() {}

    /// What each counter gained since `before`; a counter that went down (a read that came back
    /// short, programs loaded again) gained nothing rather than wrapping around.
    public func increase(since before: EBPFTelemetry) -> EBPFTelemetry {
        func gain(_ now: UInt64, _ then: UInt64) -> UInt64 { now > then ? now - then : 0 }
        var d = EBPFTelemetry()
        d.tableFull = gain(tableFull, before.tableFull)
        d.ringBufferDeferred = gain(ringBufferDeferred, before.ringBufferDeferred)
        d.closedLost = gain(closedLost, before.closedLost)
        d.udpPeerUnknown = gain(udpPeerUnknown, before.udpPeerUnknown)
        d.syscallTableFull = gain(syscallTableFull, before.syscallTableFull)
        return d
    }
}
