/// Identity of one kernel socket for its whole life: its network namespace and the kernel's socket
/// cookie (unique per boot), so a reused port or inode never merges two sockets.
public struct SocketID: Hashable, Sendable {
    public var netns: UInt64
    public var cookie: UInt64

    public init(netns: UInt64, cookie: UInt64) {
        self.netns = netns
        self.cookie = cookie
    }
}

/// The kernel's monotonic per-socket counters, as `tcp_info` gives them.
public struct SocketCounters: Sendable, Equatable, Hashable {
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    public var packetsSent: UInt64
    public var packetsReceived: UInt64
    public var retransmits: UInt64
    /// TCP quality, as the kernel counts it per socket (`tcp_info`): retransmission timeouts
    /// (`total_rto`, Linux 6.7+), reordering events seen (`reord_seen`), segments received out of
    /// order (`rcv_ooopack`) and segments delivered with a congestion mark (`delivered_ce`).
    public var rtoCount: UInt64
    public var reorderingSeen: UInt64
    public var outOfOrderReceived: UInt64
    public var deliveredCE: UInt64

    public init(
        bytesSent: UInt64 = 0,
        bytesReceived: UInt64 = 0,
        packetsSent: UInt64 = 0,
        packetsReceived: UInt64 = 0,
        retransmits: UInt64 = 0,
        rtoCount: UInt64 = 0,
        reorderingSeen: UInt64 = 0,
        outOfOrderReceived: UInt64 = 0,
        deliveredCE: UInt64 = 0
    ) {
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
        self.packetsSent = packetsSent
        self.packetsReceived = packetsReceived
        self.retransmits = retransmits
        self.rtoCount = rtoCount
        self.reorderingSeen = reorderingSeen
        self.outOfOrderReceived = outOfOrderReceived
        self.deliveredCE = deliveredCE
    }

    public static let zero = SocketCounters()

    /// `self - earlier` field by field, or nil when any counter went backwards (not the same socket life).
    public func since(_ earlier: SocketCounters) -> SocketCounters? {
        guard bytesSent >= earlier.bytesSent, bytesReceived >= earlier.bytesReceived,
            packetsSent >= earlier.packetsSent, packetsReceived >= earlier.packetsReceived,
            retransmits >= earlier.retransmits, rtoCount >= earlier.rtoCount,
            reorderingSeen >= earlier.reorderingSeen, outOfOrderReceived >= earlier.outOfOrderReceived,
            deliveredCE >= earlier.deliveredCE
        else { return nil }
        return SocketCounters(
            bytesSent: bytesSent - earlier.bytesSent,
            bytesReceived: bytesReceived - earlier.bytesReceived,
            packetsSent: packetsSent - earlier.packetsSent,
            packetsReceived: packetsReceived - earlier.packetsReceived,
            retransmits: retransmits - earlier.retransmits,
            rtoCount: rtoCount - earlier.rtoCount,
            reorderingSeen: reorderingSeen - earlier.reorderingSeen,
            outOfOrderReceived: outOfOrderReceived - earlier.outOfOrderReceived,
            deliveredCE: deliveredCE - earlier.deliveredCE
        )
    }
}

/// Linux TCP states (`include/net/tcp_states.h`). UDP sockets reuse ESTABLISHED (connected) and CLOSE.
public enum TCPState: UInt8, Sendable {
    case established = 1
    case synSent = 2
    case synRecv = 3
    case finWait1 = 4
    case finWait2 = 5
    case timeWait = 6
    case close = 7
    case closeWait = 8
    case lastAck = 9
    case listen = 10
    case closing = 11
    case newSynRecv = 12

    /// True once the handshake completed: the connection counts as established.
    public var isSynchronized: Bool {
        switch self {
        case .synSent, .synRecv, .newSynRecv, .listen, .close: false
        default: true
        }
    }

    /// States a socket reaches only after the peer's FIN arrived (which `bytes_received` counts as a byte).
    public var peerFinReceived: Bool { self == .closeWait || self == .lastAck || self == .closing }
}

/// One socket as the kernel described it at one read (a dump or a destroy notification).
public struct SocketObservation: Sendable, Equatable {
    public var id: SocketID
    public var transport: TransportProtocol
    public var local: Endpoint
    public var remote: Endpoint
    public var state: TCPState
    /// Socket inode, the link from a socket to the processes holding it; 0 once the socket is orphaned.
    public var inode: UInt64
    /// nil where the kernel keeps no per-socket counters (UDP under sock_diag).
    public var counters: SocketCounters?
    /// Smoothed RTT and its mean deviation in microseconds (`tcpi_rtt`, `tcpi_rttvar`).
    public var rttMicros: UInt32
    public var rttVarMicros: UInt32
    /// ECN was negotiated in the handshake (`TCPI_OPT_ECN`).
    public var ecnNegotiated: Bool

    public init(
        id: SocketID,
        transport: TransportProtocol,
        local: Endpoint,
        remote: Endpoint,
        state: TCPState,
        inode: UInt64,
        counters: SocketCounters?,
        rttMicros: UInt32 = 0,
        rttVarMicros: UInt32 = 0,
        ecnNegotiated: Bool = false
    ) {
        self.id = id
        self.transport = transport
        self.local = local
        self.remote = remote
        self.state = state
        self.inode = inode
        self.counters = counters
        self.rttMicros = rttMicros
        self.rttVarMicros = rttVarMicros
        self.ecnNegotiated = ecnNegotiated
    }

    public var family: AddressFamily { local.address.family }

    /// A socket that listens, or has no peer (unconnected UDP, a TCP socket closed before it
    /// connected): it tells direction, it is no flow.
    public var isListener: Bool {
        state == .listen || (remote.port == 0 && remote.address.isUnspecified)
    }
}

/// The process that holds a socket open, and the container it runs in.
public struct SocketOwner: Sendable, Hashable {
    public var pid: Int32
    public var processName: ProcessName
    public var containerID: String?

    public init(pid: Int32, processName: ProcessName, containerID: String?) {
        self.pid = pid
        self.processName = processName
        self.containerID = containerID
    }
}
