import CNMCapture
import CNMModel
import CNMPacket
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
        let (listener, port) = try Loopback.listen()
        defer { close(listener) }
        let client = try Loopback.connect(port)
        let server = accept(listener, nil, nil)
        let clientPort = try Loopback.localPort(client)
        try Loopback.send(client, 123_457)
        try Loopback.receive(server, 123_457)
        try Loopback.send(server, 7_919)
        try Loopback.receive(client, 7_919)
        shutdown(client, Int32(SHUT_WR))
        try Loopback.receive(server, 0)
        close(server)
        try Loopback.receive(client, 0)
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
        let (listener, port) = try Loopback.listen()
        defer { close(listener) }
        for readWhileOpen in [false, true] {
            let before = wallClockNanos()
            usleep(50_000)
            let client = try Loopback.connect(port)
            let server = accept(listener, nil, nil)
            let clientPort = try Loopback.localPort(client)
            try Loopback.send(client, 10)
            try Loopback.receive(server, 10)
            let during = wallClockNanos()
            #expect(capture.drain(through: during))
            let socket = SocketObservation(
                id: SocketID(netns: 1, cookie: 1), transport: .tcp, local: Endpoint(.v4(0x7F00_0001), clientPort),
                remote: Endpoint(.v4(0x7F00_0001), port), state: .established, inode: 1, counters: .zero)
            let window = readWhileOpen ? during...(during + 1_000) : (before - 1_000_000)...before
            capture.withTable { $0.markSeen([socket], during: window) }
            shutdown(client, Int32(SHUT_WR))
            shutdown(server, Int32(SHUT_WR))
            try Loopback.receive(server, 0)
            try Loopback.receive(client, 0)
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

struct SocketFailure: Error, CustomStringConvertible {
    var description: String
}

/// Blocking IPv4 TCP sockets on 127.0.0.1.
enum Loopback {
    static func address(_ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return a
    }

    static func listen() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = address(0)
        let ok = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard ok, Glibc.listen(fd, 16) == 0 else { throw SocketFailure(description: "listen: errno \(errno)") }
        return (fd, try localPort(fd))
    }

    static func connect(_ port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = address(port)
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw SocketFailure(description: "connect: errno \(errno)") }
        return fd
    }

    static func localPort(_ fd: Int32) throws -> UInt16 {
        var a = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { throw SocketFailure(description: "getsockname: errno \(errno)") }
        return UInt16(bigEndian: a.sin_port)
    }

    static func send(_ fd: Int32, _ count: Int) throws {
        let chunk = [UInt8](repeating: 0x33, count: 16_384)
        var left = count
        while left > 0 {
            let n = chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, min(left, $0.count), Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SocketFailure(description: "send: errno \(errno)") }
            left -= n
        }
    }

    /// Reads exactly `count` bytes; with 0, reads until the peer's FIN and expects nothing before it.
    static func receive(_ fd: Int32, _ count: Int) throws {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        var left = count
        while true {
            let n = buffer.withUnsafeMutableBytes {
                recv(fd, $0.baseAddress, count == 0 ? $0.count : min(left, $0.count), 0)
            }
            if count == 0 {
                guard n == 0 else { throw SocketFailure(description: "expected the end, got \(n) bytes") }
                return
            }
            guard n > 0 else { throw SocketFailure(description: "recv: \(n == 0 ? "end" : "errno \(errno)")") }
            left -= n
            if left == 0 { return }
        }
    }
}
