import CNMCapture
import CNMModel
import CNMPacket
import CNMTestSupport
import Glibc
import Testing

/// The capture on the real kernel: the ring, the filter, the reading thread and the clock its
/// timestamps use, on connections over `lo` whose bytes the test decides.
@Suite(.serialized, .enabled(if: geteuid() == 0, "needs root (CAP_NET_RAW) to open an AF_PACKET socket"))
struct PacketCaptureTests {
    @Test func aLoopbackConnectionIsCountedOnceWithItsExactBytes() throws {
        let capture = try PacketCapture(maxFlows: 1_024)
        capture.start()
        defer { capture.stop() }
        let before = wallClockNanos()
        let (listener, port) = try TestSocket.listener()
        defer { close(listener) }
        let client = try TestSocket.connect(port: port)
        let server = accept(listener, nil, nil)
        let clientPort = try TestSocket.localPort(client)
        try TestSocket.send(client, count: 123_457)
        try TestSocket.receive(server, count: 123_457)
        try TestSocket.send(server, count: 7_919)
        try TestSocket.receive(client, count: 7_919)
        shutdown(client, Int32(SHUT_WR))
        #expect(try TestSocket.receiveToEOF(server) == 0)
        close(server)
        #expect(try TestSocket.receiveToEOF(client) == 0)
        close(client)
        let after = wallClockNanos()
        #expect(capture.drain(through: after))

        let flows = capture.withTable { $0.takeEnded(completeReadStart: nil, now: wallClockNanos()) }
        let mine = flows.filter { $0.a.endpoint.port == clientPort || $0.b.endpoint.port == clientPort }
        try #require(mine.count == 1, "one connection, each loopback packet taken once: \(flows)")
        let flow = mine[0]
        let clientSide = side(flow, Endpoint(.v4(0x7F00_0001), clientPort))
        let serverSide = side(flow, Endpoint(.v4(0x7F00_0001), port))
        #expect(clientSide.sent.bytes == 123_457 && serverSide.sent.bytes == 7_919)
        #expect(clientSide.initiated && flow.fromStart && flow.established)
        #expect(clientSide.isLocal && serverSide.isLocal)
        #expect(clientSide.failure == nil && serverSide.failure == nil)
        #expect(clientSide.sent.retransmits == 0 && serverSide.sent.retransmits == 0)
        #expect(capture.statistics().ringDropped == 0)
        _ = before
    }

    /// Packets carry wall-clock time: a read window before a connection does not overlap it, one
    /// while it is open does.
    @Test func packetTimesAreOnTheWallClock() throws {
        let capture = try PacketCapture(maxFlows: 1_024)
        capture.start()
        defer { capture.stop() }
        let (listener, port) = try TestSocket.listener()
        defer { close(listener) }
        for readWhileOpen in [false, true] {
            let before = wallClockNanos()
            usleep(50_000)
            let client = try TestSocket.connect(port: port)
            let server = accept(listener, nil, nil)
            let clientPort = try TestSocket.localPort(client)
            try TestSocket.send(client, count: 10)
            try TestSocket.receive(server, count: 10)
            let during = wallClockNanos()
            #expect(capture.drain(through: during))
            let socket = SocketObservation(
                id: SocketID(netns: 1, cookie: 1), transport: .tcp, local: Endpoint(.v4(0x7F00_0001), clientPort),
                remote: Endpoint(.v4(0x7F00_0001), port), state: .established, inode: 1, counters: .zero)
            let window = readWhileOpen ? during...(during + 1_000) : (before - 1_000_000)...before
            capture.withTable { $0.markSeen([socket], during: window) }
            shutdown(client, Int32(SHUT_WR))
            shutdown(server, Int32(SHUT_WR))
            #expect(try TestSocket.receiveToEOF(server) == 0)
            #expect(try TestSocket.receiveToEOF(client) == 0)
            close(client)
            close(server)
            #expect(capture.drain(through: wallClockNanos()))
            let flows = capture.withTable { $0.takeEnded(completeReadStart: nil, now: wallClockNanos()) }
            let flow = try #require(
                flows.first { $0.a.endpoint.port == clientPort || $0.b.endpoint.port == clientPort })
            let clientSide = side(flow, Endpoint(.v4(0x7F00_0001), clientPort))
            #expect(clientSide.seenBySockDiag == readWhileOpen, "read 50 ms before the SYN, or while open")
            #expect(!side(flow, Endpoint(.v4(0x7F00_0001), port)).seenBySockDiag)
        }
    }

    /// How long `drain` waits at least, and that it returns once the thread took the ring.
    @Test func drainReturnsAfterTheHandOverBound() throws {
        let capture = try PacketCapture(maxFlows: 16)
        capture.start()
        defer { capture.stop() }
        for _ in 0..<5 {
            let start = wallClockNanos()
            #expect(capture.drain(through: start))
            let waited = wallClockNanos() - start
            #expect(waited >= PacketCapture.handOverBoundNanos)
            #expect(waited < PacketCapture.handOverBoundNanos + 20_000_000, "waited \(waited / 1_000) µs")
        }
    }

    @Test func interfacesAndAddressesOfTheNamespace() {
        #expect(PacketCapture.interfaceNames().contains("lo"))
        #expect(PacketCapture.namespaceAddresses().contains(.v4(0x7F00_0001)))
    }
}

func side(_ flow: CapturedFlow, _ endpoint: Endpoint) -> CapturedFlow.Side {
    flow.a.endpoint == endpoint ? flow.a : flow.b
}
