import CNMIntakeProto
import CNMModel
import FoundationEssentials

/// What the payload says of the host the connections were seen on.
public struct HostDescription: Sendable, Equatable {
    public var hostname: String
    /// `DD_TAGS`, `DD_EXTRA_TAGS`, `env:`.
    public var hostTags: [String]
    public var containerHostType: Datadog_ProcessAgent_ContainerHostType
    /// `uname -m`, `uname -r`, and the distribution's `ID` and `VERSION_ID` from os-release.
    public var architecture: String
    public var kernelVersion: String
    public var platform: String
    public var platformVersion: String

    public init(
        hostname: String,
        hostTags: [String] = [],
        containerHostType: Datadog_ProcessAgent_ContainerHostType = .notSpecified,
        architecture: String = "",
        kernelVersion: String = "",
        platform: String = "",
        platformVersion: String = ""
    ) {
        self.hostname = hostname
        self.hostTags = hostTags
        self.containerHostType = containerHostType
        self.architecture = architecture
        self.kernelVersion = kernelVersion
        self.platform = platform
        self.platformVersion = platformVersion
    }
}

/// Turns an interval's report into the intake's messages, as Datadog's agent cuts them: at most
/// `maxPerMessage` connections each, all with the interval's `groupId` and the number of messages
/// as `groupSize`. An interval without connections makes no message.
///
/// Each message is written straight into its protobuf bytes (`CollectorConnections` in
/// proto/cnm_connections.proto): no message values are built, so an interval costs one pass over its
/// connections. Maps are written in key order, so the bytes are those of protobuf's deterministic
/// serialisation of the same message.
public enum ConnectionsPayload {
    public static func serializedMessages(
        for report: IntervalReport, host: HostDescription, groupID: Int32, maxPerMessage: Int
    ) -> [[UInt8]] {
        let batches = batches(of: report.connections, maxPerMessage: maxPerMessage)
        var scratch = Scratch()
        return batches.map { batch in
            // Each message stands alone: its tag buffers hold only its own connections' sets.
            var connectionTags = TagEncoder()
            var hostTags = TagEncoder()
            // Datadog's agent stores a placeholder set first, so that no real index is 0 in this buffer.
            _ = hostTags.encode(["-"])
            let hostTagsIndex = hostTags.encode(host.hostTags)

            var out = ProtobufWriter(capacity: 64 + batch.count * 160)
            out.string(2, host.hostname)
            var containerForPid: [Int32: String] = [:]
            for c in batch {
                out.connection(3, c, tags: &connectionTags, scratch: &scratch)
                if let pid = c.key.pid, let container = c.localContainerID { containerForPid[pid] = container }
            }
            out.signed(5, groupID)
            out.signed(6, Int32(batches.count))
            for (pid, container) in containerForPid.sorted(by: { $0.key < $1.key }) {
                out.mapEntry(10, key: UInt64(bitPattern: Int64(pid)), value: container)
            }
            out.bytes(11, hostTags.buffer)
            out.signed(15, Int32(truncatingIfNeeded: host.containerHostType.rawValue))
            out.string(17, host.architecture)
            out.string(18, host.kernelVersion)
            out.string(19, host.platform)
            out.string(20, host.platformVersion)
            out.bytes(38, connectionTags.buffer)
            out.string(45, report.ecsTaskARN ?? "")
            out.signed(47, hostTagsIndex)
            return out.bytes
        }
    }

    /// `connections` cut into runs of at most `maxPerMessage`, in order.
    public static func batches<C: RandomAccessCollection>(of connections: C, maxPerMessage: Int) -> [C.SubSequence] {
        precondition(maxPerMessage > 0, "at least one connection per message")
        var result: [C.SubSequence] = []
        var start = connections.startIndex
        while start != connections.endIndex {
            let end =
                connections.index(start, offsetBy: maxPerMessage, limitedBy: connections.endIndex)
                ?? connections.endIndex
            result.append(connections[start..<end])
            start = end
        }
        return result
    }

    /// Buffers a message's connections are written through, kept from one to the next.
    struct Scratch {
        var connection = ProtobufWriter(capacity: 256)
        var address = ProtobufWriter(capacity: 128)
    }
}

extension ProtobufWriter {
    /// A `Connection` message as field `field`.
    mutating func connection(
        _ field: UInt64, _ c: Connection, tags: inout TagEncoder, scratch: inout ConnectionsPayload.Scratch
    ) {
        var w = scratch.connection
        scratch.connection = ProtobufWriter()  // w holds the only reference: no copy on write
        w.bytes.removeAll(keepingCapacity: true)
        w.signed(1, c.key.pid ?? 0)
        w.address(5, c.key.local, container: c.localContainerID, scratch: &scratch.address)
        w.address(6, c.key.remote, container: c.remoteContainerID, scratch: &scratch.address)
        w.unsigned(10, UInt64(c.key.family == .v4 ? 0 : 1))
        w.unsigned(11, UInt64(c.key.transport == .tcp ? 0 : 1))
        let s = c.stats
        w.unsigned(16, s.bytesSent)
        w.unsigned(17, s.bytesReceived)
        w.unsigned(18, UInt32(clamping: s.retransmits))
        let direction: UInt64 =
            switch c.key.direction {
            case .incoming: 1
            case .outgoing: 2
            case .none: 4
            }
        w.unsigned(19, direction)
        // The intake's field is 32 bits; network namespace inode numbers fit.
        w.unsigned(20, UInt32(truncatingIfNeeded: c.key.netns))
        w.unsigned(22, s.rttMicros)
        w.unsigned(23, s.rttVarMicros)
        w.bool(24, c.intraHost)
        w.unsigned(30, UInt32(clamping: s.tcpEstablished))
        w.unsigned(31, UInt32(clamping: s.tcpClosed))
        w.unsigned(38, s.packetsSent)
        w.unsigned(39, s.packetsReceived)
        w.signed(45, tags.encode(c.tags))
        if !s.tcpFailures.isEmpty {
            for (errno, count) in s.tcpFailures.sorted(by: { $0.key < $1.key }) {
                w.mapEntry(52, key: UInt64(errno), value: UInt64(UInt32(clamping: count)))
            }
        }
        w.unsigned(57, UInt32(clamping: s.rtoCount))
        w.unsigned(59, UInt32(clamping: s.reorderingSeen))
        w.unsigned(60, UInt32(clamping: s.outOfOrderReceived))
        w.unsigned(61, UInt32(clamping: s.deliveredCE))
        w.bool(63, s.ecnNegotiated)
        appendMessage(field, w)
        scratch.connection = w
    }

    /// An `Addr` message: ip, port, container id.
    mutating func address(_ field: UInt64, _ endpoint: Endpoint, container: String?, scratch: inout ProtobufWriter) {
        scratch.bytes.removeAll(keepingCapacity: true)
        endpoint.address.withText { scratch.bytes(2, $0) }
        scratch.signed(3, Int32(endpoint.port))
        if let container { scratch.string(5, container) }
        appendMessage(field, scratch)
    }
}
