import CNMModel
import CNMNetlink
import CNMSystem
import CNMTestSupport
import Glibc
import Testing

/// Against the running kernel, on loopback and in network namespaces the tests create themselves.
@Suite(.serialized) struct KernelTests {
    static let clientBytes = 70_001
    static let serverBytes = 12_345

    @Test(arguments: [AddressFamily.v4, .v6])
    func dumpsExactCountersAndTheListener(_ family: AddressFamily) throws {
        let connection = try TestConnection(family)
        defer { connection.closeAll() }
        try connection.exchange(clientBytes: Self.clientBytes, serverBytes: Self.serverBytes)

        let netns = try NetworkNamespace.currentInode()
        let observations = try SockDiagSocket().dump(.tcp, family, netns: netns)
        let client = try #require(observations.first(where: connection.isClient), "client socket not in the dump")
        let server = try #require(observations.first(where: connection.isServer), "server socket not in the dump")
        let listener = try #require(observations.first(where: connection.isListener), "listener not in the dump")

        #expect(
            observations.allSatisfy {
                $0.family == family && $0.transport == .tcp && $0.id.netns == netns
            })
        #expect(client.state == .established && server.state == .established)
        #expect(client.local.address.isLoopback && client.remote.address.isLoopback)
        #expect(client.counters?.bytesSent == UInt64(Self.clientBytes))
        #expect(client.counters?.bytesReceived == UInt64(Self.serverBytes))
        #expect(server.counters?.bytesSent == UInt64(Self.serverBytes))
        #expect(server.counters?.bytesReceived == UInt64(Self.clientBytes))
        #expect((client.counters?.packetsSent ?? 0) > 0 && (server.counters?.packetsReceived ?? 0) > 0)
        #expect(client.rttMicros > 0)
        #expect(listener.counters == .zero)

        let cookies = Set([client.id.cookie, server.id.cookie, listener.id.cookie])
        #expect(cookies.count == 3 && !cookies.contains(0))
        #expect(client.inode == (try TestSocket.inode(connection.client)))
        #expect(server.inode == (try TestSocket.inode(connection.server)))
        #expect(listener.inode == (try TestSocket.inode(connection.listener)))
    }

    /// Graceful close: the client shuts down first, the server reads to EOF and closes, the client reads to EOF and
    /// closes. Measured on 6.18: both notifications come in state CLOSE with inode 0, and `bytes_received` counts
    /// the peer's FIN (one more than the bytes read). Needs no capability (passes under
    /// `setpriv --inh-caps=-net_admin --bounding-set=-net_admin`).
    @Test(arguments: [AddressFamily.v4, .v6])
    func gracefulCloseNotifiesFinalCounters(_ family: AddressFamily) throws {
        let netns = try NetworkNamespace.currentInode()
        let listener = try DestroyListener()
        let connection = try TestConnection(family)
        try connection.exchange(clientBytes: Self.clientBytes, serverBytes: Self.serverBytes)
        let dumped = try SockDiagSocket().dump(.tcp, family, netns: netns)
        let clientCookie = try #require(dumped.first(where: connection.isClient)).id.cookie
        let serverCookie = try #require(dumped.first(where: connection.isServer)).id.cookie
        close(connection.listener)

        try check("shutdown", shutdown(connection.client, Int32(SHUT_WR)))
        #expect(try TestSocket.receiveToEOF(connection.server) == 0)
        close(connection.server)
        #expect(try TestSocket.receiveToEOF(connection.client) == 0)
        close(connection.client)

        let (destroyed, lost) = try drainUntil(listener, netns: netns) { all in
            all.contains { $0.id.cookie == clientCookie } && all.contains { $0.id.cookie == serverCookie }
        }
        #expect(lost == 0)
        let client = try #require(destroyed.first { $0.id.cookie == clientCookie })
        let server = try #require(destroyed.first { $0.id.cookie == serverCookie })
        #expect(client.transport == .tcp && client.id.netns == netns)
        #expect(client.local.port == connection.clientPort && client.remote.port == connection.listenPort)
        #expect(client.state == .close && server.state == .close)
        #expect(client.inode == 0 && server.inode == 0)
        #expect(client.counters?.bytesSent == UInt64(Self.clientBytes))
        #expect(client.counters?.bytesReceived == UInt64(Self.serverBytes) + 1)
        #expect(server.counters?.bytesSent == UInt64(Self.serverBytes))
        #expect(server.counters?.bytesReceived == UInt64(Self.clientBytes) + 1)
    }

    /// A burst of closes overflows a small receive queue: the kernel drops notifications and says so
    /// with ENOBUFS, which the listener counts as lost and reads past; the next close is notified
    /// as usual.
    ///
    /// In a namespace of its own: the tests running beside it close sockets too, and in a 4 KiB queue their
    /// notifications could crowd out the one this test waits for. The kernel sends notifications from a work
    /// queue, after `close` returns, so a second listener with a queue big enough for the whole burst says
    /// when the last of it has been sent (to both listeners at once).
    @Test(.enabled(if: canAddNetworkNamespaces, "needs CAP_SYS_ADMIN and the ip command"))
    func anOverflowingQueueIsCountedAndTheListenerGoesOn() throws {
        let namespace = try TestNamespace(loopbackUp: true)
        defer { namespace.remove() }
        let path = namespace.path
        let netns = try namespace.netns
        let listener = try DestroyListener(namespacePath: path, receiveBufferBytes: 4096)
        let witness = try DestroyListener(namespacePath: path)

        // Sockets stay in the namespace they were made in, whichever thread uses them after.
        let (server, port, last) = try namespace.inside { () throws -> (Int32, UInt16, TestConnection) in
            let (server, port) = try TestSocket.listener()
            return (server, port, try TestConnection(.v4))
        }
        defer { close(server) }
        for _ in 0..<300 { try namespace.connectAndClose(server: server, port: port) }
        let (seen, lostByWitness) = try drainUntil(witness, netns: netns) { all in
            all.count { $0.local.port == port || $0.remote.port == port } == 600
        }
        #expect(lostByWitness == 0 && seen.count == 600)
        let (_, lost) = try drainUntil(listener, netns: netns) { _ in true }
        #expect(lost >= 1, "600 notifications cannot fit in a 4 KiB queue")

        try last.exchange(clientBytes: 100, serverBytes: 200)
        let clientPort = last.clientPort
        last.closeAll()
        let (after, _) = try drainUntil(listener, netns: netns) { all in
            all.contains { $0.local.port == clientPort && $0.transport == .tcp }
        }
        let client = try #require(after.first { $0.local.port == clientPort })
        #expect(client.counters?.bytesSent == 100)
    }

    /// The pump reads a listener as its notifications come: 100 sockets closed one after another, each
    /// waited for in the listener's pending list, all arrive although the kernel's queue (4 KiB asked) holds
    /// only a few, the queue the test above overflows with 600.
    @Test(.enabled(if: canAddNetworkNamespaces, "needs CAP_SYS_ADMIN and the ip command"))
    func thePumpKeepsASmallQueueFromOverflowing() throws {
        let namespace = try TestNamespace(loopbackUp: true)
        defer { namespace.remove() }
        let path = namespace.path
        let netns = try namespace.netns
        let listener = try DestroyListener(namespacePath: path, receiveBufferBytes: 4096)
        let pump = try DestroyNotificationPump()
        try #require(pump.start())
        defer { pump.stop() }
        pump.watch(listener, netns: netns)

        let (server, port) = try namespace.inside { try TestSocket.listener() }
        defer { close(server) }
        for index in 0..<50 {
            try namespace.connectAndClose(server: server, port: port)
            _ = try waitForSync(
                "the pump to read connection \(index)'s two sockets", timeout: .seconds(5), every: .milliseconds(1)
            ) {
                listener.pendingCount >= 2 * (index + 1) ? () : nil
            }
        }
        let drained = listener.drain(netns: netns)
        #expect(drained.lost == 0 && drained.dropped == 0 && drained.failure == nil)
        #expect(drained.observations.count { $0.local.port == port || $0.remote.port == port } == 100)

        // Unwatched, the listener is read only when drained.
        pump.unwatch(listener)
        try namespace.connectAndClose(server: server, port: port)
        let (after, _) = try drainUntil(listener, netns: netns) { $0.count == 2 }
        #expect(after.count == 2)
    }

    /// Abortive close (SO_LINGER 0 sends RST). Measured on 6.18: the aborting side goes through `tcp_disconnect`,
    /// which zeroes its counters, local address and peer port before the notification, so `DestroyListener` leaves
    /// it out. The side that received the RST is notified in state CLOSE with its counters, and its
    /// `bytes_received` is exactly the bytes read: no FIN came.
    @Test func resetNotifiesTheReceiversFinalCountersWithoutFIN() throws {
        let netns = try NetworkNamespace.currentInode()
        let listener = try DestroyListener()
        let connection = try TestConnection(.v4)
        close(connection.listener)
        try connection.exchange(clientBytes: Self.clientBytes, serverBytes: Self.serverBytes)
        let dumped = try SockDiagSocket().dump(.tcp, .v4, netns: netns)
        let clientCookie = try #require(dumped.first(where: connection.isClient)).id.cookie
        let serverCookie = try #require(dumped.first(where: connection.isServer)).id.cookie

        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        try check(
            "setsockopt(SO_LINGER)",
            setsockopt(connection.client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size)))
        close(connection.client)
        var byte: UInt8 = 0
        let received = recv(connection.server, &byte, 1, 0)
        let receiveError = errno
        #expect(received == -1 && receiveError == ECONNRESET)
        close(connection.server)

        // The client was destroyed first, so its notification, had it been kept, came before the server's.
        let (destroyed, _) = try drainUntil(listener, netns: netns) { all in
            all.contains { $0.id.cookie == serverCookie }
        }
        let server = try #require(destroyed.first { $0.id.cookie == serverCookie })
        #expect(!destroyed.contains { $0.id.cookie == clientCookie })
        #expect(server.state == .close)
        #expect(server.counters?.bytesSent == UInt64(Self.serverBytes))
        #expect(server.counters?.bytesReceived == UInt64(Self.clientBytes))
    }

    @Test func udpSocketsHaveNoCounters() throws {
        let a = try TestSocket.make(for: "127.0.0.1", SOCK_DGRAM)
        let b = try TestSocket.make(for: "127.0.0.1", SOCK_DGRAM)
        let unconnected = try TestSocket.make(for: "127.0.0.1", SOCK_DGRAM)
        defer { closeAll([a, b, unconnected]) }
        try TestSocket.bind(a, to: "127.0.0.1")
        try TestSocket.bind(b, to: "127.0.0.1")
        try TestSocket.bind(unconnected, to: "127.0.0.1")
        let (portA, portB) = (try TestSocket.localPort(a), try TestSocket.localPort(b))
        try TestSocket.connect(a, to: "127.0.0.1", port: portB)
        try TestSocket.connect(b, to: "127.0.0.1", port: portA)
        try TestSocket.send(a, count: 100)
        try TestSocket.receive(b, count: 100)

        let observations = try SockDiagSocket().dump(.udp, .v4, netns: try NetworkNamespace.currentInode())
        let first = try #require(observations.first { $0.local.port == portA })
        let second = try #require(observations.first { $0.local.port == portB })
        let bound = try #require(observations.first { $0.local.port == (try? TestSocket.localPort(unconnected)) })
        #expect(first.transport == .udp && first.state == .established && first.remote.port == portB)
        #expect(second.remote.port == portA)
        #expect(first.counters == nil && second.counters == nil)
        #expect(bound.state == .close && bound.isListener)
        #expect(first.inode == (try TestSocket.inode(a)))
    }

    /// The order of the two window scales in byte 6, against a socket whose scales are known: a client with a
    /// small receive buffer announces scale 0, while the server announces a larger one.
    @Test func windowScaleNibbles() throws {
        let connection = try TestConnection(.v4, clientReceiveBuffer: 4096)
        defer { connection.closeAll() }
        let client = TCPInfo(try TestSocket.tcpInfoBytes(connection.client))
        let server = TCPInfo(try TestSocket.tcpInfoBytes(connection.server))
        #expect(client.rcvWscale == 0)
        #expect((client.sndWscale ?? 0) > 0)
        #expect(server.sndWscale == 0 && server.rcvWscale == client.sndWscale)
    }

    /// The pre-4.19 fallback against this kernel's own struct cut to 200 bytes: exact for the connecting side.
    @Test func bytesAckedFallbackOnARealSocket() throws {
        let connection = try TestConnection(.v4)
        defer { connection.closeAll() }
        try connection.exchange(clientBytes: Self.clientBytes, serverBytes: Self.serverBytes)
        let full = try TestSocket.tcpInfoBytes(connection.client)
        #expect(full.count >= 232)
        let cut = TCPInfo(Array(full[..<200]))
        #expect(cut.bytesSent == nil)
        #expect(cut.counters?.bytesSent == UInt64(Self.clientBytes))
        #expect(cut.counters == TCPInfo(full).counters)
    }

    @Test(.enabled(if: canAddNetworkNamespaces, "needs CAP_SYS_ADMIN and the ip command"))
    func aSocketInAnotherNamespaceIsListedOnlyThere() throws {
        let name = "cnmtest-\(UInt32.random(in: 0...UInt32.max))"
        try #require(runShell("ip netns add \(name)") != nil, "ip netns add \(name) failed")
        defer { _ = runShell("ip netns del \(name)") }
        let path = "/run/netns/\(name)"
        let ownNamespace = try NetworkNamespace.inode(atPath: "/proc/thread-self/ns/net")

        // A listener opened inside the namespace (its loopback is down, so on the wildcard address).
        let created = try NetworkNamespace.run(in: path, entering: NetlinkError.init) { () throws(NetlinkError) in
            Result { () throws -> Int32 in
                let fd = try TestSocket.make(for: "127.0.0.1", SOCK_STREAM)
                try TestSocket.bind(fd, to: "0.0.0.0")
                try check("listen", listen(fd, 1))
                return fd
            }
        }
        let fd = try created.get()
        defer { close(fd) }
        #expect(try NetworkNamespace.inode(atPath: "/proc/thread-self/ns/net") == ownNamespace)

        let inode = try TestSocket.inode(fd)
        let otherNetns = try NetworkNamespace.inode(atPath: path)
        #expect(otherNetns != ownNamespace)
        let inside = try SockDiagSocket(namespacePath: path)
        #expect(try NetworkNamespace.inode(atPath: "/proc/thread-self/ns/net") == ownNamespace)

        let there = try inside.dump(.tcp, .v4, netns: otherNetns)
        #expect(there.count == 1)
        #expect(there.first?.inode == inode && there.first?.state == .listen && there.first?.id.netns == otherNetns)
        let here = try SockDiagSocket().dump(.tcp, .v4, netns: ownNamespace)
        #expect(!here.contains { $0.inode == inode })
        // The socket stays in its namespace: a second dump through it still sees only that namespace.
        #expect(try inside.dump(.tcp, .v4, netns: otherNetns).map(\.inode) == [inode])
    }

    @Test(.enabled(if: Capability.sysAdmin.isHeld, "entering a namespace needs CAP_SYS_ADMIN"))
    func theThreadReturnsToItsNamespaceOnError() throws {
        let ownNamespace = try NetworkNamespace.inode(atPath: "/proc/thread-self/ns/net")
        #expect(throws: NetlinkError.self) { try SockDiagSocket(namespacePath: "/nonexistent/ns/net") }
        #expect(throws: NetlinkError.self) {
            try NetworkNamespace.run(in: "/proc/1/ns/net", entering: NetlinkError.init) { () throws(NetlinkError) in
                throw NetlinkError(.malformed, "thrown inside")
            }
        }
        #expect(try NetworkNamespace.inode(atPath: "/proc/thread-self/ns/net") == ownNamespace)
    }
}
