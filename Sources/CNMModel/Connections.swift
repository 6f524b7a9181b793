/// What one connection did during one reporting interval.
public struct ConnectionStats: Sendable, Equatable {
    public var bytesSent: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    public var packetsSent: UInt64 = 0
    public var packetsReceived: UInt64 = 0
    public var retransmits: UInt64 = 0
    public var tcpEstablished: UInt64 = 0
    public var tcpClosed: UInt64 = 0
    /// Failed or aborted connections by errno (111 refused, 104 reset, 110 timed out, ...).
    public var tcpFailures: [UInt32: UInt64] = [:]
    /// Latest smoothed RTT and deviation seen in the interval, in microseconds.
    public var rttMicros: UInt32 = 0
    public var rttVarMicros: UInt32 = 0
    /// TCP quality over the interval (see `SocketCounters`).
    public var rtoCount: UInt64 = 0
    public var reorderingSeen: UInt64 = 0
    public var outOfOrderReceived: UInt64 = 0
    public var deliveredCE: UInt64 = 0
    /// ECN was negotiated on the connection (or on one of the sockets summed into it).
    public var ecnNegotiated = false

    public init() {}

    /// Sums saturate: the counters are the kernel's, and a reply that put one near 2^64 must not trap.
    public mutating func add(_ delta: SocketCounters) {
        bytesSent.addSaturating(delta.bytesSent)
        bytesReceived.addSaturating(delta.bytesReceived)
        packetsSent.addSaturating(delta.packetsSent)
        packetsReceived.addSaturating(delta.packetsReceived)
        retransmits.addSaturating(delta.retransmits)
        rtoCount.addSaturating(delta.rtoCount)
        reorderingSeen.addSaturating(delta.reorderingSeen)
        outOfOrderReceived.addSaturating(delta.outOfOrderReceived)
        deliveredCE.addSaturating(delta.deliveredCE)
    }

    public mutating func merge(_ other: ConnectionStats) {
        bytesSent.addSaturating(other.bytesSent)
        bytesReceived.addSaturating(other.bytesReceived)
        packetsSent.addSaturating(other.packetsSent)
        packetsReceived.addSaturating(other.packetsReceived)
        retransmits.addSaturating(other.retransmits)
        tcpEstablished += other.tcpEstablished
        tcpClosed += other.tcpClosed
        tcpFailures.merge(other.tcpFailures, uniquingKeysWith: +)
        rtoCount.addSaturating(other.rtoCount)
        reorderingSeen.addSaturating(other.reorderingSeen)
        outOfOrderReceived.addSaturating(other.outOfOrderReceived)
        deliveredCE.addSaturating(other.deliveredCE)
        ecnNegotiated = ecnNegotiated || other.ecnNegotiated
        if other.rttMicros != 0 {
            rttMicros = other.rttMicros
            rttVarMicros = other.rttVarMicros
        }
    }
}

extension UInt64 {
    /// `self + other`, or `.max` where that would overflow.
    public mutating func addSaturating(_ other: UInt64) {
        let (sum, overflow) = addingReportingOverflow(other)
        self = overflow ? .max : sum
    }
}

/// What a report groups by: two sockets with the same key in one interval (a reused port) are summed.
public struct ConnectionKey: Hashable, Sendable {
    public var transport: TransportProtocol
    public var local: Endpoint
    public var remote: Endpoint
    public var netns: UInt64
    public var pid: Int32?
    public var direction: ConnectionDirection

    public init(
        transport: TransportProtocol,
        local: Endpoint,
        remote: Endpoint,
        netns: UInt64,
        pid: Int32?,
        direction: ConnectionDirection
    ) {
        self.transport = transport
        self.local = local
        self.remote = remote
        self.netns = netns
        self.pid = pid
        self.direction = direction
    }

    public var family: AddressFamily { local.address.family }

    /// The small fields packed into one word: each report groups every flow end by this key.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(local)
        hasher.combine(remote)
        hasher.combine(netns)
        let pidBits = pid.map { UInt64(UInt32(bitPattern: $0)) | 1 << 32 } ?? 0
        hasher.combine(pidBits << 8 | UInt64(direction.code) << 1 | (transport == .tcp ? 1 : 0))
    }
}

/// One connection in an interval's report, with what is known of the processes at both ends.
public struct Connection: Sendable, Equatable {
    public var key: ConnectionKey
    public var stats: ConnectionStats
    public var processName: ProcessName?
    public var localContainerID: String?
    /// The socket at the other end when it lives on this host and was seen.
    public var remotePid: Int32?
    public var remoteProcessName: ProcessName?
    public var remoteContainerID: String?
    public var intraHost: Bool
    /// False where the kernel gives no byte counters for this kind of socket (UDP without eBPF):
    /// the byte and packet fields are then 0 because they are unknown, not because nothing flowed.
    public var countersKnown: Bool
    /// How long the connection had lived when it closed in this interval; nil while it is open, or
    /// when the agent did not see it start (what rollups call short-lived).
    public var closedLifetimeNanos: UInt64?
    /// How many connections this one stands for: more than one once rolled up (Datadog's rollups
    /// for the intake, or the agent's own when an interval holds more than its memory budget).
    public var rolledUp: Int
    public var tags: [String] = []
    public var remoteTags: [String] = []

    public init(
        key: ConnectionKey,
        stats: ConnectionStats,
        processName: ProcessName? = nil,
        localContainerID: String? = nil,
        remotePid: Int32? = nil,
        remoteProcessName: ProcessName? = nil,
        remoteContainerID: String? = nil,
        intraHost: Bool = false,
        countersKnown: Bool = true,
        closedLifetimeNanos: UInt64? = nil,
        rolledUp: Int = 1
    ) {
        self.key = key
        self.stats = stats
        self.processName = processName
        self.localContainerID = localContainerID
        self.remotePid = remotePid
        self.remoteProcessName = remoteProcessName
        self.remoteContainerID = remoteContainerID
        self.intraHost = intraHost
        self.countersKnown = countersKnown
        self.closedLifetimeNanos = closedLifetimeNanos
        self.rolledUp = rolledUp
    }
}

/// Wall-clock time as nanoseconds since the Unix epoch.
public struct Timestamp: Sendable, Hashable {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
}

/// Everything measured between two reports.
public struct IntervalReport: Sendable {
    /// Increases by one per report, so readers can tell which intervals they have seen.
    public var sequence: UInt64
    public var start: Timestamp
    public var end: Timestamp
    public var connections: [Connection]
    /// On Fargate, the ARN of the task whose network these connections are (the agent runs in it).
    public var ecsTaskARN: String?

    public init(
        sequence: UInt64, start: Timestamp, end: Timestamp, connections: [Connection], ecsTaskARN: String? = nil
    ) {
        self.sequence = sequence
        self.start = start
        self.end = end
        self.connections = connections
        self.ecsTaskARN = ecsTaskARN
    }
}
