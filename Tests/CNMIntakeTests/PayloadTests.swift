import CNMIntakeProto
import CNMModel
import SwiftProtobuf
import Testing

@testable import CNMIntake

@Suite struct PayloadTests {
    static func connection(_ n: Int, container: String? = nil, tags: [String] = []) -> Connection {
        var stats = ConnectionStats()
        stats.bytesSent = UInt64(1000 + n)
        stats.bytesReceived = UInt64(2000 + n)
        stats.packetsSent = 3
        stats.packetsReceived = 4
        stats.retransmits = 5
        stats.tcpEstablished = 1
        stats.tcpClosed = 1
        stats.tcpFailures = [104: 2]
        stats.rttMicros = 250
        stats.rttVarMicros = 40
        let key = ConnectionKey(
            transport: .tcp,
            local: Endpoint(.v4(0x7F00_0001), UInt16(10_000 + n % 50_000)),
            remote: Endpoint(.v4(0x0A00_0002), 443),
            netns: 4_026_531_840,
            pid: Int32(100 + n),
            direction: .outgoing
        )
        var c = Connection(key: key, stats: stats, localContainerID: container, intraHost: n % 2 == 0)
        c.tags = tags
        return c
    }

    static let host = HostDescription(
        hostname: "h1", hostTags: ["env:prod", "team:net"], containerHostType: .fargateEcs, architecture: "x86_64",
        kernelVersion: "6.1.0", platform: "debian", platformVersion: "12")

    /// The messages as the intake reads them: the written bytes decoded with the real schema.
    static func messages(
        for report: IntervalReport, host: HostDescription = Self.host, groupID: Int32, maxPerMessage: Int
    ) throws -> [Datadog_ProcessAgent_CollectorConnections] {
        try ConnectionsPayload.serializedMessages(
            for: report, host: host, groupID: groupID, maxPerMessage: maxPerMessage
        ).map { try Datadog_ProcessAgent_CollectorConnections(serializedBytes: $0) }
    }

    @Test(arguments: [(0, 600, 0), (1, 600, 1), (600, 600, 1), (601, 600, 2), (1250, 600, 3), (7, 1, 7)])
    func batchesHoldAtMostTheLimit(total: Int, limit: Int, expected: Int) throws {
        let report = IntervalReport(
            sequence: 9, start: .init(nanoseconds: 0), end: .init(nanoseconds: 5_000_000_000),
            connections: (0..<total).map { Self.connection($0) })
        let messages = try Self.messages(for: report, groupID: 9, maxPerMessage: limit)
        #expect(messages.count == expected)
        #expect(messages.allSatisfy { $0.groupSize == Int32(expected) && $0.groupID == 9 })
        #expect(messages.allSatisfy { $0.connections.count <= limit && !$0.connections.isEmpty })
        // Every connection once, in order.
        #expect(messages.flatMap(\.connections).map(\.pid) == (0..<total).map { Int32(100 + $0) })
    }

    @Test func everyFieldIsMapped() throws {
        var c = Self.connection(2, container: "abc123", tags: ["container_name:web", "env:prod"])
        c.stats.rtoCount = 6
        c.stats.reorderingSeen = 7
        c.stats.outOfOrderReceived = 8
        c.stats.deliveredCE = 9
        c.stats.ecnNegotiated = true
        var remote = Self.connection(3)
        remote.key.transport = .udp
        remote.key.local = Endpoint(IPAddress(parsing: "::1")!, 53)
        remote.key.remote = Endpoint(IPAddress(parsing: "fe80::1")!, 5353)
        remote.key.direction = .incoming
        remote.key.pid = nil
        remote.remoteContainerID = "peer"
        let task = "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c"
        let report = IntervalReport(
            sequence: 1, start: .init(nanoseconds: 0), end: .init(nanoseconds: 1), connections: [c, remote],
            ecsTaskARN: task)
        let message = try #require(
            try Self.messages(for: report, groupID: 1, maxPerMessage: 600).first)
        #expect(message.hostName == "h1")
        #expect(message.containerHostType == .fargateEcs)
        #expect(message.architecture == "x86_64")
        #expect(message.kernelVersion == "6.1.0")
        #expect(message.platform == "debian")
        #expect(message.platformVersion == "12")
        #expect(message.ecsTask == task)
        #expect(message.containerForPid == [102: "abc123"])
        #expect(
            TagEncoder.decode(Array(message.encodedTags), index: message.hostTagsIndex) == ["env:prod", "team:net"])

        let first = message.connections[0]
        #expect(first.pid == 102)
        #expect(first.laddr.ip == "127.0.0.1" && first.laddr.port == 10_002 && first.laddr.containerID == "abc123")
        #expect(first.raddr.ip == "10.0.0.2" && first.raddr.port == 443 && first.raddr.containerID == "")
        #expect(first.family == .v4 && first.type == .tcp && first.direction == .outgoing)
        #expect(first.netNs == 4_026_531_840)
        #expect(first.lastBytesSent == 1002 && first.lastBytesReceived == 2002)
        #expect(first.lastPacketsSent == 3 && first.lastPacketsReceived == 4 && first.lastRetransmits == 5)
        #expect(first.lastTcpEstablished == 1 && first.lastTcpClosed == 1)
        #expect(first.rtt == 250 && first.rttVar == 40 && first.intraHost)
        #expect(first.tcpFailuresByErrCode == [104: 2])
        #expect(first.lastTcpRtoCount == 6 && first.lastTcpReordSeen == 7)
        #expect(first.lastTcpRcvOooPack == 8 && first.lastTcpDeliveredCe == 9 && first.tcpEcnNegotiated)
        let tags = TagEncoder.decode(Array(message.encodedConnectionsTags), index: first.tagsIdx)
        #expect(tags == ["container_name:web", "env:prod"])

        let second = message.connections[1]
        #expect(second.pid == 0 && second.type == .udp && second.family == .v6 && second.direction == .incoming)
        #expect(second.laddr.ip == "::1" && second.raddr.ip == "fe80::1" && second.raddr.containerID == "peer")
        #expect(second.tagsIdx == -1)
        #expect(second.lastTcpRtoCount == 0 && !second.tcpEcnNegotiated)
    }

    @Test func eachMessageCarriesItsOwnTagBuffer() throws {
        let report = IntervalReport(
            sequence: 3, start: .init(nanoseconds: 0), end: .init(nanoseconds: 1),
            connections: (0..<5).map { Self.connection($0, tags: ["n:\($0 % 3)", "host:h1"]) })
        let messages = try Self.messages(for: report, groupID: 3, maxPerMessage: 2)
        var seen = 0
        for message in messages {
            for c in message.connections {
                let n = Int(c.pid) - 100
                let tags = TagEncoder.decode(Array(message.encodedConnectionsTags), index: c.tagsIdx)
                #expect(tags == ["host:h1", "n:\(n % 3)"])
                seen += 1
            }
        }
        #expect(seen == 5)
    }

    /// The bytes written are those protobuf's own serialiser writes for the message they decode to:
    /// fields in number order, defaults left out, negative int32s sign-extended, maps in key order.
    @Test func bytesAreProtobufsOwn() throws {
        var connections: [Connection] = []
        for n in 0..<40 {
            var c = Self.connection(
                n, container: n % 3 == 0 ? "c\(n % 5)" : nil, tags: n % 4 == 0 ? [] : ["n:\(n % 6)"])
            if n % 2 == 1 {
                c.key.transport = .udp
                c.key.local = Endpoint(IPAddress(parsing: "2001:db8::\(n)")!, UInt16(n))
                c.key.remote = Endpoint(IPAddress(parsing: "::ffff:10.0.0.\(n)")!, 0)
            }
            if n % 5 == 0 { c.key.direction = .none }
            if n % 7 == 0 { c.key.pid = nil }
            c.stats.tcpFailures = n % 3 == 0 ? [:] : [110: 1, 104: UInt64(n), 111: UInt64(UInt32.max) + 9]
            c.stats.bytesSent = n == 9 ? UInt64.max : c.stats.bytesSent
            c.stats.retransmits = n == 11 ? UInt64(UInt32.max) + 1 : c.stats.retransmits
            c.stats.packetsSent = UInt64(n % 2)
            c.stats.rttMicros = UInt32(n % 3)
            c.stats.ecnNegotiated = n % 6 == 0
            c.remoteContainerID = n % 8 == 0 ? "" : "peer\(n)"
            connections.append(c)
        }
        let report = IntervalReport(
            sequence: 4, start: .init(nanoseconds: 0), end: .init(nanoseconds: 1), connections: connections)
        let hosts = [Self.host, HostDescription(hostname: "")]
        for host in hosts {
            let bodies = ConnectionsPayload.serializedMessages(for: report, host: host, groupID: -3, maxPerMessage: 16)
            #expect(bodies.count == 3)
            var options = BinaryEncodingOptions()
            options.useDeterministicOrdering = true
            for body in bodies {
                let message = try Datadog_ProcessAgent_CollectorConnections(serializedBytes: body)
                let reference: [UInt8] = try message.serializedBytes(options: options)
                #expect(reference == body)
            }
        }
        let decoded = try Self.messages(for: report, groupID: -3, maxPerMessage: 16).flatMap(\.connections)
        #expect(decoded.count == 40)
        #expect(decoded[9].lastBytesSent == UInt64.max)
        #expect(decoded[11].lastRetransmits == UInt32.max)
        #expect(decoded[1].tcpFailuresByErrCode == [110: 1, 104: 1, 111: UInt32.max])
        #expect(decoded[7].pid == 0 && decoded[5].direction == .none)
        #expect(decoded[1].raddr.ip == "::ffff:10.0.0.1" && decoded[1].raddr.port == 0)
    }

    @Test func osReleaseIsParsed() {
        let values = HostDescription.parseOSRelease(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n# comment=x\n")
        #expect(values["ID"] == "debian")
        #expect(values["VERSION_ID"] == "12")
        #expect(values["# comment"] == nil)
    }
}
