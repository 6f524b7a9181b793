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
public enum ConnectionsPayload {
    public static func messages(
        for report: IntervalReport, host: HostDescription, groupID: Int32, maxPerMessage: Int
    ) -> [Datadog_ProcessAgent_CollectorConnections] {
        let batches = batches(of: report.connections, maxPerMessage: maxPerMessage)
        return batches.map { batch in
            var message = Datadog_ProcessAgent_CollectorConnections()
            message.hostName = host.hostname
            message.groupID = groupID
            message.groupSize = Int32(batches.count)
            message.containerHostType = host.containerHostType
            message.architecture = host.architecture
            message.kernelVersion = host.kernelVersion
            message.platform = host.platform
            message.platformVersion = host.platformVersion
            message.ecsTask = report.ecsTaskARN ?? ""

            // Each message stands alone: its tag buffers hold only its own connections' sets.
            var connectionTags = TagEncoder()
            var hostTags = TagEncoder()
            // Datadog's agent stores a placeholder set first, so that no real index is 0 in this buffer.
            _ = hostTags.encode(["-"])
            message.hostTagsIndex = hostTags.encode(host.hostTags)
            message.connections = batch.map { connection($0, tags: &connectionTags) }
            for c in batch {
                if let pid = c.key.pid, let container = c.localContainerID { message.containerForPid[pid] = container }
            }
            message.encodedTags = Data(hostTags.buffer)
            message.encodedConnectionsTags = Data(connectionTags.buffer)
            return message
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

    static func connection(_ c: Connection, tags: inout TagEncoder) -> Datadog_ProcessAgent_Connection {
        var out = Datadog_ProcessAgent_Connection()
        out.pid = c.key.pid ?? 0
        out.laddr = address(c.key.local, container: c.localContainerID)
        out.raddr = address(c.key.remote, container: c.remoteContainerID)
        out.family = c.key.family == .v4 ? .v4 : .v6
        out.type = c.key.transport == .tcp ? .tcp : .udp
        out.direction =
            switch c.key.direction {
            case .incoming: .incoming
            case .outgoing: .outgoing
            case .none: .none
            }
        // The intake's field is 32 bits; network namespace inode numbers fit.
        out.netNs = UInt32(truncatingIfNeeded: c.key.netns)
        let s = c.stats
        out.lastBytesSent = s.bytesSent
        out.lastBytesReceived = s.bytesReceived
        out.lastPacketsSent = s.packetsSent
        out.lastPacketsReceived = s.packetsReceived
        out.lastRetransmits = UInt32(clamping: s.retransmits)
        out.lastTcpEstablished = UInt32(clamping: s.tcpEstablished)
        out.lastTcpClosed = UInt32(clamping: s.tcpClosed)
        out.rtt = s.rttMicros
        out.rttVar = s.rttVarMicros
        out.intraHost = c.intraHost
        for (errno, count) in s.tcpFailures { out.tcpFailuresByErrCode[errno] = UInt32(clamping: count) }
        out.lastTcpRtoCount = UInt32(clamping: s.rtoCount)
        out.lastTcpReordSeen = UInt32(clamping: s.reorderingSeen)
        out.lastTcpRcvOooPack = UInt32(clamping: s.outOfOrderReceived)
        out.lastTcpDeliveredCe = UInt32(clamping: s.deliveredCE)
        out.tcpEcnNegotiated = s.ecnNegotiated
        out.tagsIdx = tags.encode(c.tags)
        return out
    }

    static func address(_ endpoint: Endpoint, container: String?) -> Datadog_ProcessAgent_Addr {
        var addr = Datadog_ProcessAgent_Addr()
        addr.ip = endpoint.address.description
        addr.port = Int32(endpoint.port)
        addr.containerID = container ?? ""
        return addr
    }
}
