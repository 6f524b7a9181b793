import CNMModel
import CNMNetlink
import Glibc
import Testing

@Suite struct SockDiagReplyTests {
    static let netns: UInt64 = 4_026_531_840
    static let seq: UInt32 = 7
    static let pid: UInt32 = 4242

    /// A tcp_info of 232 bytes with bytes_sent, bytes_received and rtt set.
    static func tcpInfo(sent: UInt64, received: UInt64, rtt: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 232)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value) {
                bytes.replaceSubrange(offset..<(offset + MemoryLayout<T>.size), with: $0)
            }
        }
        put(rtt, at: 68)
        put(received, at: 128)
        put(UInt32(3), at: 136)  // segs_out
        put(UInt32(4), at: 140)  // segs_in
        put(sent, at: 200)
        return bytes
    }

    static func socketMessage(cookie: UInt64, port: UInt16, attributes: [UInt8]? = nil, seq: UInt32 = seq) -> [UInt8] {
        let info = Wire.attribute(2, tcpInfo(sent: 100, received: 200, rtt: 321))
        return Wire.message(
            type: Wire.sockDiagByFamily, seq: seq, pid: pid,
            Wire.inetDiag(
                local: (0x7F00_0001, port), remote: (0x7F00_0001, 80), cookie: cookie, inode: 99,
                attributes: attributes ?? info))
    }

    func parse(_ datagrams: [UInt8]...) throws(NetlinkError) -> SockDiagReply {
        var reply = SockDiagReply(netns: Self.netns, transport: .tcp, sequence: Self.seq, portID: Self.pid)
        for datagram in datagrams { try reply.consume(datagram) }
        return reply
    }

    func error(_ body: () throws(NetlinkError) -> Void) -> NetlinkError? {
        do {
            try body()
            return nil
        } catch {
            return error
        }
    }

    /// A status of Int32.min has no errno counterpart: negating it would trap, so it is a protocol error.
    @Test func aStatusWithNoErrnoIsAProtocolError() {
        var status: [UInt8] = []
        status.append(native: Int32.min)
        let done = Wire.message(type: Wire.done, seq: Self.seq, pid: Self.pid, status)
        let refused = Wire.message(
            type: Wire.error, flags: 0, seq: Self.seq, pid: Self.pid, status + [UInt8](repeating: 0, count: 16))
        for message in [done, refused] {
            let thrown = error { () throws(NetlinkError) in _ = try parse(message) }
            #expect(thrown?.code == .kernel(errno: EPROTO), "\(String(describing: thrown))")
        }
    }

    /// The state is the one tcp_info was read with, next to the counters: a peer's FIN that arrived
    /// after `idiag_state` was read is in `bytes_received` and must be in the state too.
    @Test func theStateIsTheOneReadWithTheCounters() throws {
        var info = Self.tcpInfo(sent: 100, received: 201, rtt: 321)
        info[0] = 11  // TCP_CLOSING: the peer's FIN came while our own was in flight
        let message = Wire.message(
            type: Wire.sockDiagByFamily, seq: Self.seq, pid: Self.pid,
            Wire.inetDiag(
                state: 4, local: (0x7F00_0001, 5555), remote: (0x7F00_0001, 80), cookie: 1, inode: 99,
                attributes: Wire.attribute(2, info)))
        let o = try #require(try parse(message + Wire.doneMessage(seq: Self.seq, pid: Self.pid)).observations.first)
        #expect(o.state == .closing)
        #expect(o.state.peerFinReceived)
        // Without a state in tcp_info (0 is none), the listed one stays.
        let listed = try #require(try parse(Self.socketMessage(cookie: 2, port: 5556)).observations.first)
        #expect(listed.state == .established)
    }

    @Test func decodesOneSocket() throws {
        let reply = try parse(
            Self.socketMessage(cookie: 0x1_0000_0002, port: 5555) + Wire.doneMessage(seq: Self.seq, pid: Self.pid))
        #expect(reply.isComplete)
        let o = try #require(reply.observations.first)
        #expect(reply.observations.count == 1)
        #expect(o.id == SocketID(netns: Self.netns, cookie: 0x1_0000_0002))
        #expect(o.transport == .tcp)
        #expect(o.local == Endpoint(.v4(0x7F00_0001), 5555))
        #expect(o.remote == Endpoint(.v4(0x7F00_0001), 80))
        #expect(o.state == .established)
        #expect(o.inode == 99)
        #expect(o.counters == SocketCounters(bytesSent: 100, bytesReceived: 200, packetsSent: 3, packetsReceived: 4))
        #expect(o.rttMicros == 321)
    }

    @Test func aTruncatedMessageThrows() {
        let message = Self.socketMessage(cookie: 1, port: 1)
        for cut in [3, 16, 40, 87, message.count - 1] {
            #expect(
                error { () throws(NetlinkError) in _ = try parse(Array(message[..<cut])) }?.code == .truncated,
                "cut at \(cut)")
        }
    }

    @Test func aTruncatedInetDiagMessageThrows() {
        // A consistent nlmsg_len around a payload too short for inet_diag_msg.
        let message = Wire.message(
            type: Wire.sockDiagByFamily, seq: Self.seq, pid: Self.pid, [UInt8](repeating: 0, count: 40))
        #expect(error { () throws(NetlinkError) in _ = try parse(message) }?.code == .truncated)
    }

    @Test func aBadNlmsgLenThrows() {
        var shorterThanHeader = Self.socketMessage(cookie: 1, port: 1)
        shorterThanHeader.replaceSubrange(0..<4, with: [8, 0, 0, 0])
        #expect(error { () throws(NetlinkError) in _ = try parse(shorterThanHeader) }?.code == .malformed)

        var longerThanDatagram = Self.socketMessage(cookie: 1, port: 1)
        longerThanDatagram.replaceSubrange(0..<4, with: [0, 0x10, 0, 0])
        #expect(error { () throws(NetlinkError) in _ = try parse(longerThanDatagram) }?.code == .truncated)
    }

    @Test func aBadAttributeLengthThrows() {
        var zeroLength = Wire.attribute(2, [1, 2, 3, 4])
        zeroLength.replaceSubrange(0..<2, with: [0, 0])
        let message = Self.socketMessage(cookie: 1, port: 1, attributes: zeroLength)
        #expect(error { () throws(NetlinkError) in _ = try parse(message) }?.code == .malformed)

        var overlong = Wire.attribute(2, [1, 2, 3, 4])
        overlong.replaceSubrange(0..<2, with: [200, 0])
        let cut = Self.socketMessage(cookie: 1, port: 1, attributes: overlong)
        #expect(error { () throws(NetlinkError) in _ = try parse(cut) }?.code == .truncated)
    }

    @Test func nlmsgErrorThrowsItsErrno() {
        let reply = Wire.errorMessage(EPERM, seq: Self.seq, pid: Self.pid)
        #expect(error { () throws(NetlinkError) in _ = try parse(reply) }?.code == .kernel(errno: EPERM))
        let shortError = Wire.message(type: Wire.error, seq: Self.seq, pid: Self.pid, [1, 2])
        #expect(error { () throws(NetlinkError) in _ = try parse(shortError) }?.code == .truncated)
    }

    @Test func aFailedDoneThrowsItsErrno() {
        var payload: [UInt8] = []
        payload.append(native: -ENOMEM)
        let done = Wire.message(type: Wire.done, seq: Self.seq, pid: Self.pid, payload)
        #expect(error { () throws(NetlinkError) in _ = try parse(done) }?.code == .kernel(errno: ENOMEM))
    }

    @Test func unknownAttributesAreSkipped() throws {
        let attributes =
            Wire.attribute(4, Array("cubic\0".utf8))  // INET_DIAG_CONG
            + Wire.attribute(0x7ABC, [1, 2, 3])  // newer than this code, odd length padded
            + Wire.attribute(2, Self.tcpInfo(sent: 10, received: 20, rtt: 30))
            + Wire.attribute(0x8000 | 0x1234, [])  // nested flag set
        let reply = try parse(Self.socketMessage(cookie: 1, port: 1, attributes: attributes))
        #expect(reply.observations.first?.counters?.bytesSent == 10)
        #expect(reply.observations.first?.rttMicros == 30)
    }

    @Test func aSocketWithoutTCPInfoHasNoCounters() throws {
        let reply = try parse(Self.socketMessage(cookie: 1, port: 1, attributes: []))
        #expect(reply.observations.count == 1)
        #expect(reply.observations.first?.counters == nil)
    }

    @Test func unknownStatesAndProtocolsAreSkipped() throws {
        let boundInactive = Wire.message(
            type: Wire.sockDiagByFamily, seq: Self.seq, pid: Self.pid,
            Wire.inetDiag(state: 13, local: (0, 1), remote: (0, 0), cookie: 1, inode: 1))
        let udpLite = Self.socketMessage(cookie: 2, port: 2, attributes: Wire.attribute(10, [136]))
        let reply = try parse(boundInactive + udpLite)
        #expect(reply.observations.isEmpty)
    }

    @Test func messagesOfOtherRequestsAreIgnored() throws {
        let reply = try parse(
            Self.socketMessage(cookie: 1, port: 1, seq: Self.seq - 1) + Self.socketMessage(cookie: 2, port: 2)
                + Wire.doneMessage(seq: Self.seq - 1, pid: Self.pid))
        #expect(reply.observations.map(\.id.cookie) == [2])
        #expect(!reply.isComplete)
    }

    @Test func aReplySplitAcrossDatagramsIsCompleteAtDone() throws {
        var reply = SockDiagReply(netns: Self.netns, transport: .tcp, sequence: Self.seq, portID: Self.pid)
        try reply.consume(Self.socketMessage(cookie: 1, port: 1) + Self.socketMessage(cookie: 2, port: 2))
        #expect(!reply.isComplete)
        try reply.consume(Self.socketMessage(cookie: 3, port: 3) + Wire.doneMessage(seq: Self.seq, pid: Self.pid))
        #expect(reply.isComplete)
        #expect(reply.observations.map(\.id.cookie) == [1, 2, 3])
    }

    @Test func aDumpReadsEveryPartThroughTheTransport() throws {
        let mock = MockTransport(
            portID: Self.pid,
            // Left over from an earlier dump that failed halfway: read and dropped before the request.
            pending: [.success(Self.socketMessage(cookie: 9, port: 9, seq: 0))],
            onRequest: [
                .success(Self.socketMessage(cookie: 1, port: 1, seq: 1)),
                .success(
                    Self.socketMessage(cookie: 2, port: 2, seq: 1) + Self.socketMessage(cookie: 3, port: 3, seq: 1)),
                .success(Wire.doneMessage(seq: 1, pid: Self.pid)),
            ])
        let socket = SockDiagSocket(mock)
        let observations = try socket.dump(.tcp, .v4, netns: Self.netns)
        #expect(observations.map(\.id.cookie) == [1, 2, 3])
        #expect(mock.pending.isEmpty)

        // The request: nlmsghdr (72 bytes long, SOCK_DIAG_BY_FAMILY, REQUEST|DUMP, seq 1) + inet_diag_req_v2 for
        // AF_INET / IPPROTO_TCP asking for INET_DIAG_INFO in every state.
        let request = try #require(mock.requests.first)
        #expect(request.count == 72)
        #expect(request[0..<4] == [72, 0, 0, 0])
        #expect(request[4..<6] == [20, 0])
        #expect(request[6..<8] == [0x01, 0x03])
        #expect(request[8..<12] == [1, 0, 0, 0])
        #expect(request[16..<20] == [UInt8(AF_INET), UInt8(IPPROTO_TCP), 1 << 1, 0])
        #expect(request[20..<24] == [0xFE, 0x1F, 0, 0])
    }

    @Test func aDumpCutShortThrowsAndTheNextDumpStartsClean() throws {
        let mock = MockTransport(
            portID: Self.pid,
            onRequest: [
                .success(Self.socketMessage(cookie: 1, port: 1, seq: 1)),
                .success(Array(Self.socketMessage(cookie: 2, port: 2, seq: 1).dropLast(10))),
                .success(Wire.doneMessage(seq: 1, pid: Self.pid)),
            ])
        let socket = SockDiagSocket(mock)
        #expect(
            error { () throws(NetlinkError) in _ = try socket.dump(.tcp, .v4, netns: Self.netns) }?.code == .truncated)
        mock.onRequest = [
            .success(Self.socketMessage(cookie: 5, port: 5, seq: 2) + Wire.doneMessage(seq: 2, pid: Self.pid))
        ]
        #expect(try socket.dump(.tcp, .v4, netns: Self.netns).map(\.id.cookie) == [5])
    }

    @Test func aDumpWithoutAnswerFailsInsteadOfHanging() {
        let socket = SockDiagSocket(MockTransport(portID: Self.pid))
        #expect(
            error { () throws(NetlinkError) in _ = try socket.dump(.udp, .v6, netns: Self.netns) }?.code
                == .system(errno: ETIMEDOUT))
    }

    @Test func destroyNotificationsTakeTheirProtocolFromTheMessage() throws {
        let tcp = Wire.message(
            type: Wire.sockDiagByFamily, seq: 0, pid: 0,
            Wire.inetDiag(
                state: 7, local: (0x7F00_0001, 1), remote: (0x7F00_0001, 2), cookie: 11, inode: 0,
                attributes: Wire.attribute(10, [UInt8(IPPROTO_TCP)])
                    + Wire.attribute(2, Self.tcpInfo(sent: 1, received: 2, rtt: 3))))
        let udp = Wire.message(
            type: Wire.sockDiagByFamily, seq: 0, pid: 0,
            Wire.inetDiag(
                state: 7, local: (0x7F00_0001, 3), remote: (0x7F00_0001, 53), cookie: 12, inode: 0,
                attributes: Wire.attribute(10, [UInt8(IPPROTO_UDP)])))
        // A closed listener: no peer, no flow.
        let peerless = Wire.message(
            type: Wire.sockDiagByFamily, seq: 0, pid: 0,
            Wire.inetDiag(
                state: 7, local: (0, 80), remote: (0, 0), cookie: 14, inode: 0,
                attributes: Wire.attribute(10, [UInt8(IPPROTO_TCP)])))
        let withoutProtocol = Self.socketMessage(cookie: 13, port: 4, attributes: [], seq: 0)
        let mock = MockTransport(pending: [
            .success(tcp), .failure(NetlinkError(.system(errno: ENOBUFS), "overrun")), .success(peerless + udp),
        ])
        let listener = DestroyListener(mock)
        let drained = listener.drain(netns: Self.netns)
        #expect(drained.lost == 1 && drained.failure == nil)
        #expect(drained.observations.map(\.id.cookie) == [11, 12])
        #expect(drained.observations.map(\.transport) == [.tcp, .udp])
        #expect(drained.observations.first?.counters?.bytesReceived == 2)
        #expect(drained.observations.last?.counters == nil)
        #expect(listener.drain(netns: Self.netns).observations.isEmpty)

        // A datagram that does not parse is reported and skipped; what came after it is kept.
        mock.pending = [.success(withoutProtocol), .success(tcp)]
        let afterBad = listener.drain(netns: Self.netns)
        #expect(afterBad.failure?.code == .malformed)
        #expect(afterBad.observations.map(\.id.cookie) == [11])
        #expect(listener.drain(netns: Self.netns).failure == nil)
    }

    /// Past `maxPending`, notifications are dropped and counted, not kept without bound.
    @Test func pendingNotificationsAreBoundedAndTheDropsCounted() throws {
        let tcp = Wire.message(
            type: Wire.sockDiagByFamily, seq: 0, pid: 0,
            Wire.inetDiag(
                state: 7, local: (0x7F00_0001, 1), remote: (0x7F00_0001, 2), cookie: 11, inode: 0,
                attributes: Wire.attribute(10, [UInt8(IPPROTO_TCP)])))
        let mock = MockTransport(pending: Array(repeating: .success(tcp), count: 5))
        let listener = DestroyListener(mock, maxPending: 3)
        let drained = listener.drain(netns: Self.netns)
        #expect(drained.observations.count == 3 && drained.dropped == 2)
        mock.pending = [.success(tcp)]
        let next = listener.drain(netns: Self.netns)
        #expect(next.observations.count == 1 && next.dropped == 0)
    }

    /// A real `NETLINK_SOCK_DIAG` reply stream recorded by m-lab/tcp-info on a 4.x kernel: 420 messages of six
    /// dumps, with a 168-byte tcp_info (no tcpi_bytes_sent, so the bytes_acked fallback applies).
    @Test(
        .enabled(
            if: runShell("command -v zstd >/dev/null") != nil,
            "needs the zstd command to unpack the fixture"))
    func parsesTheRecordedMLabStream() throws {
        let path = fixturePath("netlink/m-lab-tcp-info/netlink-testdata.zst")
        let bytes = try #require(runShell("zstd -dc '\(path)'"), "fixture missing or unreadable: \(path)")
        #expect(bytes.count == 149_160)
        var reply = SockDiagReply(netns: Self.netns, transport: .tcp)
        try reply.consume(bytes)
        let observations = reply.observations
        #expect(observations.count == 420)
        #expect(observations.filter { $0.family == .v6 }.count == 375)
        #expect(observations.allSatisfy { $0.state == .established && $0.counters != nil })

        // Values read independently (Python struct.unpack) from the first message.
        let first = try #require(observations.first)
        #expect(first.local == Endpoint(try #require(IPAddress(parsing: "2620:0:1003:415:b33e:9d6a:81bf:87a1")), 37636))
        #expect(first.remote == Endpoint(try #require(IPAddress(parsing: "2607:f8b0:400d:c0a::81")), 5034))
        #expect(first.id.cookie == 0x5A38)
        #expect(first.inode == 20_113_628)
        #expect(
            first.counters
                == SocketCounters(
                    bytesSent: 149_580 - 1, bytesReceived: 110_590, packetsSent: 3985, packetsReceived: 3984,
                    retransmits: 0))
        #expect(first.rttMicros == 13917 && first.rttVarMicros == 13)

        let v4 = try #require(observations.first { $0.family == .v4 })
        #expect(v4.local == Endpoint(.v4(0x6465_E683), 59244))  // 100.101.230.131
        #expect(v4.remote == Endpoint(.v4(0xC01E_FD7C), 443))  // 192.30.253.124
        #expect(v4.counters?.bytesSent == 14717 - 1)
    }
}
