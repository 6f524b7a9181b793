import CNMModel
import Testing

/// How connections packet capture saw join the sockets sock_diag listed: each side reported once,
/// from the kernel's counters when sock_diag listed it, from the wire's otherwise.
@Suite struct CaptureJoinTests {
    static let netns: UInt64 = 4_026_531_993
    static let lo = IPAddress.v4(0x7F00_0001)
    let server = Endpoint(lo, 8080)
    let client = Endpoint(lo, 45_000)
    let serverOwner = SocketOwner(pid: 300, processName: "server", containerID: "c-server")

    func listener(_ port: UInt16, transport: TransportProtocol = .tcp, inode: UInt64 = 77) -> SocketObservation {
        SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 900 + UInt64(port)), transport: transport,
            local: Endpoint(.v4(0), port), remote: Endpoint(.v4(0), 0),
            state: transport == .tcp ? .listen : .close, inode: inode, counters: transport == .tcp ? .zero : nil)
    }

    func tracker() -> ConnectionTracker {
        var t = ConnectionTracker(maxTracked: 100)
        t.capturedNamespace = Self.netns
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]], isBaseline: true))
        _ = t.flush()
        return t
    }

    /// A loopback connection: client initiated, both sides local.
    func flow(
        clientSent: WireCounts, serverSent: WireCounts, clientSeen: Bool = false, serverSeen: Bool = false,
        clientFailure: UInt32? = nil, established: Bool = true
    ) -> CapturedFlow {
        CapturedFlow(
            transport: .tcp,
            a: .init(
                endpoint: client, isLocal: true, seenBySockDiag: clientSeen, sent: clientSent, initiated: true,
                failure: clientFailure),
            b: .init(endpoint: server, isLocal: true, seenBySockDiag: serverSeen, sent: serverSent),
            fromStart: true, established: established)
    }

    @Test func sidesNoReadListedAreReportedFromTheWire() throws {
        var t = tracker()
        let f = flow(clientSent: WireCounts(bytes: 100, packets: 6), serverSent: WireCounts(bytes: 2_000, packets: 5))
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]]), captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        #expect(t.inodesWithoutOwner == [77], "the listener's process is asked for")
        t.assignOwners([77: serverOwner])
        let report = t.flush()
        try #require(report.count == 2)
        let out = try #require(report.first { $0.key.local == client })
        let inc = try #require(report.first { $0.key.local == server })
        #expect(out.key.direction == .outgoing && inc.key.direction == .incoming)
        #expect(out.stats.bytesSent == 100 && out.stats.bytesReceived == 2_000)
        #expect(out.stats.packetsSent == 6 && out.stats.packetsReceived == 5)
        #expect(inc.stats.bytesSent == 2_000 && inc.stats.bytesReceived == 100)
        #expect(out.stats.tcpEstablished == 1 && out.stats.tcpClosed == 1 && inc.stats.tcpClosed == 1)
        #expect(out.key.pid == nil, "a client socket never listed keeps no process")
        #expect(inc.key.pid == 300 && inc.localContainerID == "c-server")
        #expect(out.remotePid == 300 && out.intraHost && out.countersKnown)
        // The listener's owner is remembered: the next connection needs no process scan.
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]]), captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        #expect(t.inodesWithoutOwner.isEmpty)
        #expect(t.flush().first { $0.key.local == server }?.key.pid == 300)
    }

    /// A server that listened on an ephemeral port between two reads: no read listed its listener and
    /// the ports do not say which end is the server, but capture saw the SYN. Its accepted socket is
    /// incoming whether its destroy notification comes in the pass the flow ended or in the next.
    @Test(arguments: [false, true])
    func theSYNGivesTheDirectionWhenNoListenerWasListed(notifiedAPassLate: Bool) throws {
        var t = ConnectionTracker(maxTracked: 100)
        t.capturedNamespace = Self.netns
        t.apply(Poll(dumps: [Self.netns: []], isBaseline: true))
        _ = t.flush()
        let server = Endpoint(Self.lo, 40_001)
        let client = Endpoint(Self.lo, 50_002)
        func destroyed(_ cookie: UInt64, _ local: Endpoint, _ remote: Endpoint, sent: UInt64, received: UInt64)
            -> SocketObservation
        {
            SocketObservation(
                id: SocketID(netns: Self.netns, cookie: cookie), transport: .tcp, local: local, remote: remote,
                state: .close, inode: 0, counters: SocketCounters(bytesSent: sent, bytesReceived: received))
        }
        let ends = [
            destroyed(1, client, server, sent: 137, received: 1_010),
            destroyed(2, server, client, sent: 1_009, received: 138),
        ]
        let f = CapturedFlow(
            transport: .tcp,
            a: .init(
                endpoint: client, isLocal: true, seenBySockDiag: true, sent: WireCounts(bytes: 137, packets: 4),
                initiated: true),
            b: .init(endpoint: server, isLocal: true, seenBySockDiag: true, sent: WireCounts(bytes: 1_009, packets: 4)),
            fromStart: true, established: true)
        let captured = CapturedTraffic(netns: Self.netns, ended: [f])
        if notifiedAPassLate {
            t.apply(Poll(dumps: [Self.netns: []], destroyNotified: [Self.netns]), captured: captured)
            t.apply(Poll(dumps: [Self.netns: []], destroyed: ends, destroyNotified: [Self.netns]))
        } else {
            t.apply(Poll(dumps: [Self.netns: []], destroyed: ends, destroyNotified: [Self.netns]), captured: captured)
        }
        let report = t.flush()
        try #require(report.count == 2)
        let out = try #require(report.first { $0.key.local == client })
        let inc = try #require(report.first { $0.key.local == server })
        #expect(out.key.direction == .outgoing)
        #expect(inc.key.direction == .incoming)
        #expect(inc.stats.bytesSent == 1_009 && inc.stats.bytesReceived == 137)
    }

    @Test func aRefusedConnectHasOnlyItsClientSideWithTheFailure() throws {
        var t = tracker()
        let f = flow(
            clientSent: WireCounts(bytes: 0, packets: 1), serverSent: WireCounts(bytes: 0, packets: 1),
            clientFailure: 111, established: false)
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]]), captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        let report = t.flush()
        try #require(report.count == 1)
        #expect(report[0].key.local == client && report[0].stats.tcpFailures == [111: 1])
        #expect(report[0].stats.tcpEstablished == 0 && report[0].stats.tcpClosed == 0)
    }

    /// A side a read listed is the tracker's: capture adds nothing while its socket gave final
    /// counters.
    @Test func aListedSideIsReportedOnceFromTheKernel() throws {
        var t = tracker()
        let socket = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 1), transport: .tcp, local: client, remote: server,
            state: .established, inode: 5, counters: SocketCounters(bytesSent: 40, bytesReceived: 900))
        t.apply(Poll(dumps: [Self.netns: [listener(8080), socket]]))
        _ = t.flush()
        // It closes; its destroy notification carries its final counters; capture saw it listed.
        var final = socket
        final.state = .close
        final.inode = 0
        final.counters = SocketCounters(bytesSent: 100, bytesReceived: 2_001)  // the peer's FIN counts one
        let f = flow(
            clientSent: WireCounts(bytes: 100, packets: 6), serverSent: WireCounts(bytes: 2_000, packets: 5),
            clientSeen: true, serverSeen: true)
        t.apply(
            Poll(dumps: [Self.netns: [listener(8080)]], destroyed: [final], destroyNotified: [Self.netns]),
            captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        let report = t.flush()
        try #require(report.count == 1)
        #expect(report[0].stats.bytesSent == 60 && report[0].stats.bytesReceived == 1_100)
        #expect(t.health.completedFromCapture == 0)
    }

    /// Sampled only: a listed socket vanished with bytes unread; capture followed its connection
    /// from the SYN, so the rest is known.
    @Test func aSocketThatVanishedBetweenReadsIsCompletedFromTheWire() throws {
        var t = tracker()
        let socket = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 1), transport: .tcp, local: client, remote: server,
            state: .established, inode: 5,
            counters: SocketCounters(bytesSent: 40, bytesReceived: 900, packetsSent: 3, packetsReceived: 2))
        t.apply(Poll(dumps: [Self.netns: [listener(8080), socket]]))
        let first = t.flush()
        #expect(first.first?.stats.bytesSent == 40)
        let f = flow(
            clientSent: WireCounts(bytes: 100, packets: 6, retransmits: 1),
            serverSent: WireCounts(bytes: 2_000, packets: 5), clientSeen: true, clientFailure: 104)
        // The connection ended and its socket is gone from the next read; the server side, never
        // listed, is capture's.
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]]), captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        let report = t.flush()
        let out = try #require(report.first { $0.key.local == client })
        #expect(out.stats.bytesSent == 60 && out.stats.bytesReceived == 1_100)
        #expect(out.stats.packetsSent == 3 && out.stats.packetsReceived == 3 && out.stats.retransmits == 1)
        #expect(out.stats.tcpClosed == 1 && out.stats.tcpFailures == [104: 1])
        #expect(report.filter { $0.key.local == client }.count == 1)
        #expect(report.contains { $0.key.local == server && $0.stats.bytesSent == 2_000 })
        #expect(t.health.completedFromCapture == 1 && t.health.closedWithoutFinalCounters == 0)
    }

    /// The connection's end can be handed over a pass before its socket is found gone (a read that
    /// listed it ran while it closed).
    @Test func completionWaitsAPassForTheSocketToGo() throws {
        var t = tracker()
        let socket = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 1), transport: .tcp, local: client, remote: server,
            state: .established, inode: 5, counters: SocketCounters(bytesSent: 10, bytesReceived: 0))
        let f = flow(
            clientSent: WireCounts(bytes: 30, packets: 4), serverSent: WireCounts(bytes: 0, packets: 3),
            clientSeen: true, serverSeen: true)
        t.apply(
            Poll(dumps: [Self.netns: [listener(8080), socket]]),
            captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        #expect(t.flush().first?.stats.bytesSent == 10)
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]]))
        #expect(t.flush().first?.stats.bytesSent == 20)
    }

    /// UDP in the captured namespace: a connected socket gets the wire's counts; a peer of an
    /// unconnected server socket is an end of its own, owned by that socket's process.
    @Test func datagramsJoinTheirSockets() throws {
        var t = ConnectionTracker(maxTracked: 100)
        t.capturedNamespace = Self.netns
        let dns = Endpoint(Self.lo, 53)
        let resolver = Endpoint(Self.lo, 50_000)
        let other = Endpoint(Self.lo, 50_001)
        let connected = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 2), transport: .udp, local: resolver, remote: dns,
            state: .established, inode: 8, counters: nil)
        let dumps = [Self.netns: [listener(53, transport: .udp, inode: 9), connected]]
        t.apply(Poll(dumps: dumps, isBaseline: true))
        func flow(_ client: Endpoint) -> CapturedFlow {
            CapturedFlow(
                transport: .udp,
                a: .init(endpoint: client, isLocal: true, sent: WireCounts(bytes: 30, packets: 1), initiated: true),
                b: .init(endpoint: dns, isLocal: true, sent: WireCounts(bytes: 90, packets: 1)),
                fromStart: false, established: false)
        }
        t.apply(
            Poll(dumps: dumps),
            captured: CapturedTraffic(netns: Self.netns, datagrams: [flow(resolver), flow(other)]))
        t.assignOwners([8: SocketOwner(pid: 10, processName: "resolver", containerID: nil), 9: serverOwner])
        let report = t.flush()
        let fromResolver = report.filter { $0.key.local == resolver }
        #expect(fromResolver.count == 1 && fromResolver[0].stats.bytesSent == 30 && fromResolver[0].countersKnown)
        #expect(fromResolver[0].key.pid == 10)
        let fromOther = try #require(report.first { $0.key.local == other })
        #expect(fromOther.key.pid == nil && fromOther.key.direction == .outgoing)
        let atServer = report.filter { $0.key.local == dns }
        #expect(atServer.count == 2 && atServer.allSatisfy { $0.key.pid == 300 && $0.key.direction == .incoming })
        #expect(atServer.map(\.stats.bytesReceived).reduce(0, +) == 60)
    }

    /// A SYN answered in this namespace by no listener was translated for another namespace, which
    /// reports its own socket.
    @Test func anIncomingConnectionWithoutAListenerIsLeftOut() {
        var t = tracker()
        var f = flow(clientSent: WireCounts(bytes: 1, packets: 3), serverSent: WireCounts(bytes: 1, packets: 3))
        f.a.isLocal = false
        f.b.endpoint.port = 9090
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]]), captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        #expect(t.flush().isEmpty)
        #expect(t.health.capturedWithoutSocket == 1)
    }
}

extension CaptureJoinTests {
    /// A refused connect's socket, seen by sock_diag only in its destroy notification: the wire says
    /// why it closed, and that it never opened.
    @Test func aListedSocketGetsTheFailureOnlyTheWireKnows() throws {
        var t = tracker()
        let refused = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 4), transport: .tcp, local: client, remote: Endpoint(Self.lo, 9),
            state: .close, inode: 0, counters: .zero)
        let f = CapturedFlow(
            transport: .tcp,
            a: .init(
                endpoint: client, isLocal: true, seenBySockDiag: true, sent: WireCounts(packets: 1), initiated: true,
                failure: 111),
            b: .init(endpoint: Endpoint(Self.lo, 9), isLocal: true, sent: WireCounts(packets: 1)),
            fromStart: true, established: false)
        t.apply(
            Poll(dumps: [Self.netns: [listener(8080)]], destroyed: [refused], destroyNotified: [Self.netns]),
            captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        let report = t.flush()
        try #require(report.count == 1)
        #expect(report[0].stats.tcpFailures == [111: 1])
        #expect(report[0].stats.tcpEstablished == 0 && report[0].stats.tcpClosed == 0)
    }
}

extension CaptureJoinTests {
    /// An accepted socket whose process closed it before `/proc` was read is the listener's process's.
    @Test func anAcceptedSocketGoneFromProcHasItsListenersProcess() throws {
        var t = ConnectionTracker(maxTracked: 100)
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]], isBaseline: true))
        let accepted = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 5), transport: .tcp, local: server, remote: client,
            state: .established, inode: 55, counters: SocketCounters(bytesSent: 1))
        t.apply(Poll(dumps: [Self.netns: [listener(8080), accepted]]))
        #expect(t.inodesWithoutOwner == [55, 77])
        // The walk finds the listener, not the accepted socket (its fd is closed already).
        t.assignOwners([77: serverOwner])
        let report = t.flush()
        #expect(report.first?.key.pid == 300 && report.first?.key.direction == .incoming)
        #expect(t.inodesWithoutOwner == [55], "the listener's process is remembered")
    }
}

extension CaptureJoinTests {
    /// With destroy notifications every socket comes to sock_diag, maybe after its connection ended
    /// on the wire (when its process closes it): capture reports no side of its own, and what it
    /// knows of the end waits for the socket.
    @Test func withDestroyNotificationsTheWireOnlyAddsWhatTheyLack() throws {
        var t = tracker()
        let notified: Set<UInt64> = [Self.netns]
        let f = flow(
            clientSent: WireCounts(bytes: 10, packets: 4), serverSent: WireCounts(bytes: 0, packets: 3),
            clientFailure: 104)
        t.apply(
            Poll(dumps: [Self.netns: [listener(8080)]], destroyNotified: notified),
            captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        #expect(t.flush().isEmpty, "neither side is reported from the wire")
        let final = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 6), transport: .tcp, local: client, remote: server, state: .close,
            inode: 0, counters: SocketCounters(bytesSent: 10))
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]], destroyed: [final], destroyNotified: notified))
        let report = t.flush()
        try #require(report.count == 1)
        #expect(report[0].stats.bytesSent == 10 && report[0].stats.tcpFailures == [104: 1])
        #expect(report[0].stats.tcpEstablished == 1 && report[0].stats.tcpClosed == 1)
    }
}

extension CaptureJoinTests {
    /// One pair of ends carries two connections between reads: each socket that vanished is completed
    /// from its own connection, told apart by the read that last listed it.
    @Test func reusedEndsCompleteEachSocketFromItsOwnConnection() throws {
        var t = tracker()
        func socket(_ cookie: UInt64, sent: UInt64) -> SocketObservation {
            SocketObservation(
                id: SocketID(netns: Self.netns, cookie: cookie), transport: .tcp, local: client, remote: server,
                state: .established, inode: 10 + cookie, counters: SocketCounters(bytesSent: sent))
        }
        func ended(sent: UInt64, listedAt: Int64) -> CapturedFlow {
            var f = flow(
                clientSent: WireCounts(bytes: sent, packets: 4), serverSent: WireCounts(bytes: 0, packets: 3),
                clientSeen: true, serverSeen: true)
            f.a.lastListedAt = listedAt
            f.b.lastListedAt = listedAt
            return f
        }
        t.apply(Poll(dumps: [Self.netns: [listener(8080), socket(1, sent: 10)]], readWindows: [Self.netns: 100...101]))
        // The first connection ended and a second on the same ends was listed, and ended too.
        t.apply(
            Poll(dumps: [Self.netns: [listener(8080), socket(2, sent: 5)]], readWindows: [Self.netns: 200...201]),
            captured: CapturedTraffic(
                netns: Self.netns, ended: [ended(sent: 70, listedAt: 200), ended(sent: 50, listedAt: 100)]))
        t.apply(Poll(dumps: [Self.netns: [listener(8080)]], readWindows: [Self.netns: 300...301]))
        let sent = t.flush().filter { $0.key.local == client }.map(\.stats.bytesSent).reduce(0, +)
        #expect(sent == 120, "50 and 70, each from its own connection")
        #expect(t.health.completedFromCapture == 2 && t.health.closedWithoutFinalCounters == 0)
    }
}

extension CaptureJoinTests {
    /// A refused connect's socket is disconnected before it is destroyed: its notification names no
    /// peer and never comes here. Capture reports it once it waited for it.
    @Test func withDestroyNotificationsARefusedConnectIsReportedFromTheWire() throws {
        var t = tracker()
        let notified: Set<UInt64> = [Self.netns]
        let f = flow(
            clientSent: WireCounts(packets: 1), serverSent: WireCounts(packets: 1), clientFailure: 111,
            established: false)
        let poll = Poll(dumps: [Self.netns: [listener(8080)]], destroyNotified: notified)
        t.apply(poll, captured: CapturedTraffic(netns: Self.netns, ended: [f]))
        #expect(t.flush().isEmpty, "its notification may still come")
        t.apply(poll)
        t.apply(poll)
        let report = t.flush()
        try #require(report.count == 1)
        #expect(report[0].key.local == client && report[0].stats.tcpFailures == [111: 1])
        #expect(report[0].stats.tcpEstablished == 0 && report[0].stats.tcpClosed == 0)
    }
}

extension CaptureJoinTests {
    /// A read counted the server's FIN in the client's `bytes_received` while its state did not show
    /// it yet (sock_diag reads the state first), so the destroy notification moves nothing: the wire,
    /// which saw 100 bytes and then a FIN, says the 101st is the FIN. Either order of the
    /// notification and capture's end of the connection takes it off; a reset (no FIN) keeps it.
    @Test(arguments: [(notificationFirst: true, fin: true), (false, true), (true, false), (false, false)])
    func aFinCountedBeforeItsStateShowedIsTakenOff(notificationFirst: Bool, fin: Bool) throws {
        var t = tracker()
        let notified: Set<UInt64> = [Self.netns]
        let id = SocketID(netns: Self.netns, cookie: 11)
        func observation(_ state: TCPState) -> SocketObservation {
            SocketObservation(
                id: id, transport: .tcp, local: client, remote: server, state: state, inode: state == .close ? 0 : 5,
                counters: SocketCounters(bytesSent: 100, bytesReceived: 101, packetsSent: 4, packetsReceived: 4))
        }
        t.apply(
            Poll(dumps: [Self.netns: [listener(8080), observation(.finWait2)]], destroyNotified: notified))
        var f = flow(
            clientSent: WireCounts(bytes: 100, packets: 4), serverSent: WireCounts(bytes: fin ? 100 : 101, packets: 4),
            clientSeen: true)
        f.a.sentFin = true
        f.b.sentFin = fin
        if !fin { f.b.failure = nil; f.a.failure = 104 }
        let destroyed = Poll(
            dumps: [Self.netns: [listener(8080)]], destroyed: [observation(.close)], destroyNotified: notified)
        let ended = CapturedTraffic(netns: Self.netns, ended: [f])
        if notificationFirst {
            t.apply(destroyed)
            t.apply(Poll(dumps: [Self.netns: [listener(8080)]], destroyNotified: notified), captured: ended)
        } else {
            t.apply(
                Poll(dumps: [Self.netns: [listener(8080), observation(.finWait2)]], destroyNotified: notified),
                captured: ended)
            t.apply(destroyed)
        }
        let report = t.flush()
        let out = try #require(report.first { $0.key.local == client })
        #expect(out.stats.bytesReceived == (fin ? 100 : 101))
        #expect(out.stats.bytesSent == 100)
    }

    /// A server that closed first is destroyed once its FIN is acknowledged, perhaps before the
    /// client's FIN comes, and its destroy notification cannot say which: the wire, which saw the
    /// client send 100 bytes and then its FIN, tells whether `bytes_received` counted that FIN.
    @Test(arguments: [(notificationFirst: true, finCounted: false), (false, false), (true, true), (false, true)])
    func aFinAssumedAtTheDestroyNotificationIsSettledByTheWire(notificationFirst: Bool, finCounted: Bool) throws {
        var t = tracker()
        let notified: Set<UInt64> = [Self.netns]
        let destroyedServer = SocketObservation(
            id: SocketID(netns: Self.netns, cookie: 12), transport: .tcp, local: server, remote: client, state: .close,
            inode: 0,
            counters: SocketCounters(
                bytesSent: 300, bytesReceived: finCounted ? 101 : 100, packetsSent: 4, packetsReceived: 4))
        var f = flow(
            clientSent: WireCounts(bytes: 100, packets: 4), serverSent: WireCounts(bytes: 300, packets: 4),
            serverSeen: true)
        f.a.sentFin = true
        f.b.sentFin = true
        let destroyed = Poll(
            dumps: [Self.netns: [listener(8080)]], destroyed: [destroyedServer], destroyNotified: notified)
        let ended = CapturedTraffic(netns: Self.netns, ended: [f])
        if notificationFirst {
            t.apply(destroyed)
            t.apply(Poll(dumps: [Self.netns: [listener(8080)]], destroyNotified: notified), captured: ended)
        } else {
            t.apply(Poll(dumps: [Self.netns: [listener(8080)]], destroyNotified: notified), captured: ended)
            t.apply(destroyed)
        }
        let report = t.flush()
        let inc = try #require(report.first { $0.key.local == server })
        #expect(inc.stats.bytesReceived == 100)
        #expect(inc.stats.bytesSent == 300)
        #expect(t.health.peerFinAssumed == 0)
    }
}
