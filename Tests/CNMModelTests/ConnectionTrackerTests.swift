import CNMModel
import Testing

/// Builds observations the way the netlink adapter does: raw kernel counters.
private struct Kernel {
    static let netns: UInt64 = 4_026_531_840
    static let lo = IPAddress.v4(0x7F00_0001)

    static func tcp(
        cookie: UInt64,
        local: UInt16,
        remote: UInt16,
        state: TCPState = .established,
        inode: UInt64 = 0,
        sent: UInt64 = 0,
        received: UInt64 = 0,
        netns: UInt64 = netns,
        address: IPAddress = lo,
        remoteAddress: IPAddress = lo
    ) -> SocketObservation {
        SocketObservation(
            id: SocketID(netns: netns, cookie: cookie),
            transport: .tcp,
            local: Endpoint(address, local),
            remote: Endpoint(remoteAddress, remote),
            state: state,
            inode: inode,
            counters: SocketCounters(bytesSent: sent, bytesReceived: received, packetsSent: 1, packetsReceived: 1),
            rttMicros: 50,
            rttVarMicros: 10
        )
    }

    static func listener(port: UInt16, netns: UInt64 = netns) -> SocketObservation {
        SocketObservation(
            id: SocketID(netns: netns, cookie: 1_000_000 + UInt64(port)),
            transport: .tcp,
            local: Endpoint(.v4(0), port),
            remote: Endpoint(.v4(0), 0),
            state: .listen,
            inode: 1,
            counters: .zero
        )
    }
}

@Suite struct ConnectionTrackerTests {
    let server = SocketOwner(pid: 100, processName: "server", containerID: nil)
    let client = SocketOwner(pid: 200, processName: "client", containerID: "c1")

    @Test func deltasAcrossIntervalsAndTheFinByte() throws {
        var t = ConnectionTracker(maxTracked: 100)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.listener(port: 80)]], isBaseline: true))
        #expect(t.flush().isEmpty)

        // Interval 1: connection opens, 100 bytes out, 40 in.
        let owners: [UInt64: SocketOwner] = [11: client, 12: server]
        t.apply(
            Poll(
                dumps: [
                    Kernel.netns: [
                        Kernel.listener(port: 80),
                        Kernel.tcp(cookie: 1, local: 5000, remote: 80, inode: 11, sent: 100, received: 40),
                        Kernel.tcp(cookie: 2, local: 80, remote: 5000, inode: 12, sent: 40, received: 100),
                    ]
                ]
            )
        )
        t.assignOwners(owners)
        var report = t.flush()
        let out1 = try #require(report.first { $0.key.local.port == 5000 })
        let in1 = try #require(report.first { $0.key.local.port == 80 })
        #expect(out1.stats.bytesSent == 100 && out1.stats.bytesReceived == 40)
        #expect(out1.key.direction == .outgoing && in1.key.direction == .incoming)
        #expect(out1.key.pid == 200 && in1.key.pid == 100)
        #expect(out1.stats.tcpEstablished == 1 && out1.stats.tcpClosed == 0)
        #expect(out1.intraHost && out1.remotePid == 100 && in1.remoteContainerID == "c1")

        // Interval 2: 50 more out; then the server side sees the FIN (CLOSE_WAIT): bytes_received +1.
        t.apply(
            Poll(
                dumps: [
                    Kernel.netns: [
                        Kernel.listener(port: 80),
                        Kernel.tcp(
                            cookie: 1, local: 5000, remote: 80, state: .finWait2, inode: 11, sent: 150, received: 40),
                        Kernel.tcp(
                            cookie: 2, local: 80, remote: 5000, state: .closeWait, inode: 12, sent: 40, received: 151),
                    ]
                ],
                destroyNotified: [Kernel.netns]
            )
        )
        report = t.flush()
        #expect(report.first { $0.key.local.port == 5000 }?.stats.bytesSent == 50)
        #expect(report.first { $0.key.local.port == 80 }?.stats.bytesReceived == 50)
        #expect(report.allSatisfy { $0.stats.tcpEstablished == 0 })

        // Interval 3: both destroyed; the client got the server's FIN (+1), the server's was already taken off.
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.listener(port: 80)]],
                destroyed: [
                    Kernel.tcp(cookie: 1, local: 5000, remote: 80, state: .close, sent: 150, received: 41),
                    Kernel.tcp(cookie: 2, local: 80, remote: 5000, state: .close, sent: 40, received: 151),
                ],
                destroyNotified: [Kernel.netns]
            )
        )
        report = t.flush()
        let out3 = try #require(report.first { $0.key.local.port == 5000 })
        #expect(out3.stats.bytesReceived == 0 && out3.stats.bytesSent == 0 && out3.stats.tcpClosed == 1)
        #expect(out3.key.pid == 200, "the owner found while the socket lived stays with it")
        #expect(report.first { $0.key.local.port == 80 }?.stats.tcpClosed == 1)
        #expect(t.flush().isEmpty, "closed sockets are forgotten after their last report")
        #expect(t.health.closedWithoutFinalCounters == 0)
    }

    @Test func baselineSocketsStartFromTheirCurrentCounters() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(
            Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 7, local: 1, remote: 2, sent: 1_000_000)]], isBaseline: true)
        )
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 7, local: 1, remote: 2, sent: 1_000_010)]]))
        let c = t.flush()
        #expect(c.count == 1)
        #expect(c[0].stats.bytesSent == 10)
        #expect(c[0].stats.tcpEstablished == 0, "it was established before the agent started")
    }

    @Test func reusedPortIsANewSocketNotANegativeDelta() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 4000, remote: 80, inode: 5, sent: 500)]]))
        // Same tuple and inode number, new cookie: a different socket, counting from zero.
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 2, local: 4000, remote: 80, inode: 5, sent: 30)]]))
        let c = t.flush()
        #expect(c.count == 1, "one key in one interval: summed")
        #expect(c[0].stats.bytesSent == 530)
        #expect(c[0].stats.tcpEstablished == 2 && c[0].stats.tcpClosed == 1)
        #expect(t.health.counterRegressions == 0)
        #expect(t.health.closedWithoutFinalCounters == 1, "no destroy notifications here: counted as a loss")
    }

    @Test func reusedPidGetsTheOwnerOfItsOwnSocket() {
        var t = ConnectionTracker(maxTracked: 10)
        let first = SocketOwner(pid: 42, processName: "old", containerID: "aaa")
        let second = SocketOwner(pid: 42, processName: "new", containerID: "bbb")
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 4000, remote: 80, inode: 5)]]))
        t.assignOwners([5: first])
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 2, local: 4001, remote: 80, inode: 6)]]))
        t.assignOwners([6: second])
        let c = t.flush()
        #expect(c.first { $0.key.local.port == 4000 }?.localContainerID == "aaa")
        #expect(c.first { $0.key.local.port == 4001 }?.localContainerID == "bbb")
        #expect(c.first { $0.key.local.port == 4001 }?.processName == "new")
    }

    @Test func vanishedSocketWaitsForItsDestroyNotification() {
        var t = ConnectionTracker(maxTracked: 10)
        let notified: Set<UInt64> = [Kernel.netns]
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 1, remote: 2, sent: 10)]], destroyNotified: notified
            ))
        // Gone from the dump, the notification not read yet: not closed, nothing lost.
        t.apply(Poll(dumps: [Kernel.netns: []], destroyNotified: notified))
        #expect(t.flush().first?.stats.tcpClosed == 0)
        t.apply(
            Poll(
                dumps: [Kernel.netns: []],
                destroyed: [Kernel.tcp(cookie: 1, local: 1, remote: 2, state: .close, sent: 25, received: 0)],
                destroyNotified: notified
            )
        )
        let c = t.flush()
        #expect(c.first?.stats.bytesSent == 15)
        #expect(c.first?.stats.tcpClosed == 1)
        #expect(t.health.closedWithoutFinalCounters == 0)
    }

    /// What sock_diag lists for a TCP socket after the kernel destroyed it: a time-wait socket in
    /// FIN_WAIT2 or TIME_WAIT, with the destroyed socket's cookie but no inode and no `tcp_info`.
    static func timeWaitRemains(cookie: UInt64, local: UInt16, remote: UInt16, state: TCPState) -> SocketObservation {
        SocketObservation(
            id: SocketID(netns: Kernel.netns, cookie: cookie), transport: .tcp, local: Endpoint(Kernel.lo, local),
            remote: Endpoint(Kernel.lo, remote), state: state, inode: 0, counters: nil)
    }

    @Test func aClosedSocketsTimeWaitRemainsAreNoSecondConnection() throws {
        var t = ConnectionTracker(maxTracked: 10)
        let notified: Set<UInt64> = [Kernel.netns]
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 40000, remote: 80, inode: 11, sent: 10)]],
                destroyNotified: notified))
        t.assignOwners([11: client])
        // The client closed first: its socket is destroyed once its FIN is acknowledged, and the
        // same pass's dump already lists what the kernel keeps in its place.
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Self.timeWaitRemains(cookie: 1, local: 40000, remote: 80, state: .finWait2)]],
                destroyed: [Kernel.tcp(cookie: 1, local: 40000, remote: 80, state: .close, sent: 30)],
                destroyNotified: notified))
        let first = t.flush()
        #expect(first.count == 1)
        let c = try #require(first.first)
        #expect(c.stats.bytesSent == 30 && c.stats.tcpEstablished == 1 && c.stats.tcpClosed == 1 && c.key.pid == 200)
        // Later reads list the remains until the server closes and TIME_WAIT ends: nothing to report.
        for state in [TCPState.finWait2, .finWait2, .timeWait] {
            t.apply(
                Poll(
                    dumps: [Kernel.netns: [Self.timeWaitRemains(cookie: 1, local: 40000, remote: 80, state: state)]],
                    destroyNotified: notified))
            #expect(t.flush().isEmpty, "a record after the close, in \(state)")
        }
        t.apply(Poll(dumps: [Kernel.netns: []], destroyNotified: notified))
        #expect(t.flush().isEmpty)
        #expect(t.health.tracked == 0 && t.health.closedWithoutFinalCounters == 0)
    }

    @Test func timeWaitRemainsAtStartUpAreNoConnection() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Self.timeWaitRemains(cookie: 5, local: 40001, remote: 80, state: .finWait2)]],
                isBaseline: true))
        #expect(t.flush().isEmpty)
        t.apply(Poll(dumps: [Kernel.netns: []]))
        #expect(t.flush().isEmpty, "a connection that closed before the agent started is not closed in its report")
    }

    @Test func resetWithoutNewDataKeepsEveryByte() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 1, remote: 2, received: 70)]]))
        // The peer reset it: no FIN, bytes_received unchanged. Nothing may be taken off.
        t.apply(
            Poll(
                dumps: [Kernel.netns: []],
                destroyed: [Kernel.tcp(cookie: 1, local: 1, remote: 2, state: .close, received: 70)]))
        #expect(t.flush().first?.stats.bytesReceived == 70)
        #expect(t.health.counterRegressions == 0)
    }

    @Test func socketSeenOnlyInItsDestroyNotification() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(
            Poll(
                dumps: [Kernel.netns: []],
                destroyed: [Kernel.tcp(cookie: 9, local: 1, remote: 2, state: .close, sent: 300, received: 201)]))
        let c = t.flush()
        #expect(c.first?.stats.bytesSent == 300)
        #expect(c.first?.stats.bytesReceived == 200)
        #expect(c.first?.stats.tcpEstablished == 1 && c.first?.stats.tcpClosed == 1)
        #expect(t.health.peerFinAssumed == 1, "no peer on this host to say whether the FIN came")
    }

    /// A server that closes first is destroyed as soon as its FIN is acknowledged, which may be
    /// before the client's FIN comes; its peer on this host tells whether `bytes_received` counted
    /// the FIN: exactly what the client sent, or one more.
    @Test(arguments: [
        (finCame: false, peerState: TCPState.closeWait, peerNetns: Kernel.netns, expected: 100, assumed: 0),
        (finCame: true, peerState: TCPState.close, peerNetns: Kernel.netns, expected: 100, assumed: 0),
        // A loopback peer in another namespace is another connection: the guess stands, counted.
        (finCame: false, peerState: TCPState.closeWait, peerNetns: Kernel.netns + 1, expected: 99, assumed: 1),
    ])
    func aServerDestroyedBeforeItsPeersFinIsSettledByThePeer(
        finCame: Bool, peerState: TCPState, peerNetns: UInt64, expected: UInt64, assumed: UInt64
    ) throws {
        var t = ConnectionTracker(maxTracked: 10)
        let clientEnd = Kernel.tcp(
            cookie: 1, local: 40000, remote: 80, state: peerState, sent: 100, received: 201, netns: peerNetns)
        var dumps: [UInt64: [SocketObservation]] = [Kernel.netns: [Kernel.listener(port: 80)]]
        dumps[peerNetns, default: []] += peerState == .close ? [] : [clientEnd]
        t.apply(
            Poll(
                dumps: dumps,
                destroyed: [
                    Kernel.tcp(
                        cookie: 2, local: 80, remote: 40000, state: .close, sent: 200, received: finCame ? 101 : 100)
                ] + (peerState == .close ? [clientEnd] : []),
                destroyNotified: [Kernel.netns, peerNetns]))
        let report = t.flush()
        let serverEnd = try #require(report.first { $0.key.local.port == 80 })
        #expect(serverEnd.stats.bytesReceived == expected)
        #expect(serverEnd.stats.bytesSent == 200)
        #expect(t.health.peerFinAssumed == assumed)
    }

    @Test func failedDumpKeepsTheNamespacesSockets() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 1, remote: 2, sent: 10)]]))
        t.apply(Poll(dumps: [:]))  // that namespace's dump failed this time
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 1, remote: 2, sent: 15)]]))
        let c = t.flush()
        #expect(c.first?.stats.bytesSent == 15)
        #expect(c.first?.stats.tcpClosed == 0)
    }

    @Test func fullTableDropsAndCounts() {
        var t = ConnectionTracker(maxTracked: 2)
        t.apply(
            Poll(dumps: [Kernel.netns: (1...5).map { Kernel.tcp(cookie: UInt64($0), local: UInt16($0), remote: 80) }]))
        #expect(t.health.tracked == 2)
        #expect(t.health.droppedTableFull == 3)
        #expect(t.flush().count == 2)
    }

    @Test func loopbackPeersOnlyMatchInTheirOwnNamespace() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(
            Poll(
                dumps: [
                    1: [Kernel.tcp(cookie: 1, local: 5000, remote: 80, inode: 1, netns: 1)],
                    2: [Kernel.tcp(cookie: 2, local: 80, remote: 5000, inode: 2, netns: 2)],
                ])
        )
        t.assignOwners([1: client, 2: server])
        let c = t.flush()
        #expect(c.count == 2)
        #expect(c.allSatisfy { $0.remotePid == nil }, "127.0.0.1 in two namespaces is two different hosts")
    }

    @Test func bridgePeersMatchAcrossNamespaces() {
        var t = ConnectionTracker(maxTracked: 10)
        let a = IPAddress.v4(0xAC11_0002)
        let b = IPAddress.v4(0xAC11_0003)
        t.apply(
            Poll(
                dumps: [
                    1: [
                        Kernel.tcp(cookie: 1, local: 5000, remote: 80, inode: 1, netns: 1, address: a, remoteAddress: b)
                    ],
                    2: [
                        Kernel.tcp(cookie: 2, local: 80, remote: 5000, inode: 2, netns: 2, address: b, remoteAddress: a)
                    ],
                ])
        )
        t.assignOwners([1: client, 2: server])
        let c = t.flush()
        #expect(c.first { $0.key.netns == 1 }?.remotePid == 100)
        #expect(c.first { $0.key.netns == 2 }?.remoteContainerID == "c1")
        #expect(c.allSatisfy { $0.intraHost })
    }

    /// Ends that match by address but not as connections (another namespace, another process) stay
    /// apart; ends of one connection are summed; each takes its peer from the matching end seen last.
    @Test func endsOfOneAddressPairAreGroupedByConnectionAndShareTheirPeer() {
        var t = ConnectionTracker(maxTracked: 10)
        let a = IPAddress.v4(0xAC11_0002)
        let b = IPAddress.v4(0xAC11_0003)
        func client(_ cookie: UInt64, inode: UInt64, netns: UInt64, sent: UInt64) -> SocketObservation {
            Kernel.tcp(
                cookie: cookie, local: 5000, remote: 80, inode: inode, sent: sent, netns: netns, address: a,
                remoteAddress: b)
        }
        t.apply(
            Poll(
                dumps: [
                    1: [client(1, inode: 1, netns: 1, sent: 10), client(4, inode: 4, netns: 1, sent: 5)],
                    2: [client(2, inode: 2, netns: 2, sent: 20)],
                    3: [
                        Kernel.tcp(
                            cookie: 3, local: 80, remote: 5000, inode: 3, netns: 3, address: b, remoteAddress: a)
                    ],
                ])
        )
        let first = SocketOwner(pid: 10, processName: "first", containerID: "c10")
        let second = SocketOwner(pid: 20, processName: "second", containerID: "c20")
        t.assignOwners([1: first, 4: first, 2: second, 3: server])
        let c = t.flush()
        #expect(c.count == 3)
        let inOne = c.first { $0.key.netns == 1 }
        let inTwo = c.first { $0.key.netns == 2 }
        #expect(inOne?.stats.bytesSent == 15 && inOne?.rolledUp == 2, "two sockets of one connection, summed")
        #expect(inOne?.key.pid == 10 && inTwo?.key.pid == 20 && inTwo?.stats.bytesSent == 20)
        #expect(inOne?.remotePid == 100 && inTwo?.remotePid == 100 && inTwo?.remoteProcessName == "server")
        // The server's end matches both clients' ends: it is described by the one seen last.
        let atServer = c.first { $0.key.netns == 3 }
        #expect([10, 20].contains(atServer?.remotePid ?? 0))
        #expect(atServer?.remoteContainerID == (atServer?.remotePid == 10 ? "c10" : "c20"))
    }
}

@Suite struct DirectionTests {
    @Test func listenerRememberedAfterItCloses() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.listener(port: 8080)]]))
        // The server stopped listening once it accepted; its accepted socket is still incoming.
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.tcp(cookie: 1, local: 8080, remote: 8081)]]))
        #expect(t.flush().first?.key.direction == .incoming)
    }

    @Test func withoutAnyListenerTheEphemeralPortDecides() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(
            Poll(dumps: [
                Kernel.netns: [
                    Kernel.tcp(cookie: 1, local: 8080, remote: 45000),
                    Kernel.tcp(cookie: 2, local: 45000, remote: 8080),
                    Kernel.tcp(cookie: 3, local: 40000, remote: 50000),
                ]
            ])
        )
        let c = t.flush()
        #expect(c.first { $0.key.local.port == 8080 }?.key.direction == .incoming)
        #expect(c.first { $0.key.local.port == 45000 }?.key.direction == .outgoing)
        #expect(c.first { $0.key.local.port == 40000 }?.key.direction == .outgoing)
    }

    /// A server that began listening while the dump ran: its listener is missing from the dump
    /// (listeners come first), its first connections are in it, and its port is in the ephemeral
    /// range like its clients'. Its local end, shared by all of them, says it is the server; a
    /// client's port the kernel reused for another server is shared by fewer.
    @Test func aServerEndSharedByItsConnectionsIsIncomingWithoutItsListener() {
        var t = ConnectionTracker(maxTracked: 10, maxCounted: 10)
        var dump: [SocketObservation] = []
        for i in 0..<6 {
            let client = UInt16(50_000 + i)
            dump.append(Kernel.tcp(cookie: UInt64(10 + i), local: 41_000, remote: client, sent: 1, received: 2))
            dump.append(Kernel.tcp(cookie: UInt64(20 + i), local: client, remote: 41_000, sent: 2, received: 1))
        }
        // The clients' ports, reused for a connection to another server each.
        for i in 0..<3 {
            let client = UInt16(50_000 + i)
            dump.append(
                Kernel.tcp(cookie: UInt64(30 + i), local: 42_000 + UInt16(i), remote: client, sent: 1, received: 2))
            dump.append(
                Kernel.tcp(cookie: UInt64(40 + i), local: client, remote: 42_000 + UInt16(i), sent: 2, received: 1))
        }
        t.apply(Poll(dumps: [Kernel.netns: dump]))
        let c = t.flush()
        // Followed one by one or by their counts only (rolled up by their ephemeral port).
        let servers = c.filter { $0.key.local.port == 41_000 }
        let clients = c.filter { $0.key.remote.port == 41_000 }
        #expect(servers.allSatisfy { $0.key.direction == .incoming })
        #expect(clients.allSatisfy { $0.key.direction == .outgoing })
        #expect(servers.map(\.rolledUp).reduce(0, +) == 6 && clients.map(\.rolledUp).reduce(0, +) == 6)
        #expect(servers.map(\.stats.bytesSent).reduce(0, +) == 6 && clients.map(\.stats.bytesSent).reduce(0, +) == 12)
    }

    @Test func endedNamespaceClosesItsSockets() {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(Poll(dumps: [7: [Kernel.tcp(cookie: 1, local: 1, remote: 2, netns: 7)]], destroyNotified: [7]))
        t.apply(Poll(endedNamespaces: [7]))
        #expect(t.flush().first?.stats.tcpClosed == 1)
        #expect(t.flush().isEmpty)
    }
}

@Suite struct TCPQualityTests {
    static func socket(_ counters: SocketCounters, ecn: Bool) -> SocketObservation {
        SocketObservation(
            id: SocketID(netns: Kernel.netns, cookie: 7), transport: .tcp, local: Endpoint(Kernel.lo, 5000),
            remote: Endpoint(Kernel.lo, 80), state: .established, inode: 0, counters: counters, ecnNegotiated: ecn)
    }

    /// The kernel's cumulative counters become per-interval deltas, like bytes; ECN is said every interval.
    @Test func qualityCountersAreDeltasPerInterval() throws {
        var t = ConnectionTracker(maxTracked: 10)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.listener(port: 80)]], isBaseline: true))
        _ = t.flush()
        let first = SocketCounters(rtoCount: 2, reorderingSeen: 1, outOfOrderReceived: 4, deliveredCE: 3)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.listener(port: 80), Self.socket(first, ecn: true)]]))
        let one = try #require(t.flush().first)
        #expect(one.stats.rtoCount == 2 && one.stats.reorderingSeen == 1)
        #expect(one.stats.outOfOrderReceived == 4 && one.stats.deliveredCE == 3)
        #expect(one.stats.ecnNegotiated)

        let second = SocketCounters(rtoCount: 5, reorderingSeen: 1, outOfOrderReceived: 4, deliveredCE: 10)
        t.apply(Poll(dumps: [Kernel.netns: [Kernel.listener(port: 80), Self.socket(second, ecn: true)]]))
        let two = try #require(t.flush().first)
        #expect(two.stats.rtoCount == 3 && two.stats.reorderingSeen == 0)
        #expect(two.stats.outOfOrderReceived == 0 && two.stats.deliveredCE == 7)
        #expect(two.stats.ecnNegotiated)
    }

    /// A count that goes backwards is another socket life: it counts as a regression, not as a huge delta.
    @Test func aQualityCounterGoingBackIsARegression() {
        let later = SocketCounters(bytesSent: 10, rtoCount: 1)
        #expect(later.since(SocketCounters(bytesSent: 5, rtoCount: 2)) == nil)
        #expect(later.since(SocketCounters(bytesSent: 5, rtoCount: 1)) == SocketCounters(bytesSent: 5))
    }

    /// sock_diag tells no socket's birth: a socket not listed by one read of its namespace was made
    /// after that read started, so its lifetime is at most from there to the end of the read that
    /// saw it closed. Sockets older than the agent have none.
    @Test func aClosedSocketCarriesAtMostHowLongItLived() throws {
        let ms: Int64 = 1_000_000
        var t = ConnectionTracker(maxTracked: 100)
        let old = Kernel.tcp(cookie: 1, local: 45001, remote: 80, sent: 7)
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.listener(port: 80), old]], isBaseline: true,
                readWindows: [Kernel.netns: 1_000 * ms...1_010 * ms]))
        _ = t.flush()
        let new = Kernel.tcp(cookie: 2, local: 45002, remote: 80, sent: 10)
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.listener(port: 80), old, new]],
                readWindows: [Kernel.netns: 2_000 * ms...2_010 * ms]))
        var c = t.flush()
        #expect(c.count == 2 && c.allSatisfy { $0.closedLifetimeNanos == nil }, "open sockets have no lifetime yet")

        // Both destroyed; one more made and destroyed between two reads.
        var brief = Kernel.tcp(cookie: 3, local: 45003, remote: 80, state: .close, sent: 3, received: 4)
        brief.inode = 0
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.listener(port: 80)]],
                destroyed: [
                    Kernel.tcp(cookie: 1, local: 45001, remote: 80, state: .close, sent: 8),
                    Kernel.tcp(cookie: 2, local: 45002, remote: 80, state: .close, sent: 12), brief,
                ],
                destroyNotified: [Kernel.netns],
                readWindows: [Kernel.netns: 3_000 * ms...3_020 * ms]))
        c = t.flush()
        let lived = Dictionary(uniqueKeysWithValues: c.map { ($0.key.local.port, $0.closedLifetimeNanos) })
        #expect(lived[45001] == .some(nil), "a socket older than the agent has no known lifetime")
        #expect(lived[45002] == UInt64(3_020 * ms - 1_000 * ms))
        #expect(lived[45003] == UInt64(3_020 * ms - 2_000 * ms))
        #expect(c.first { $0.key.local.port == 45002 }?.stats.bytesSent == 2, "the lifetime changes no count")

        // Missing from a dump without destroy notifications: closed at the end of that read.
        let gone = Kernel.tcp(cookie: 4, local: 45004, remote: 80, sent: 1)
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.listener(port: 80), gone]],
                readWindows: [Kernel.netns: 4_000 * ms...4_010 * ms]))
        _ = t.flush()
        t.apply(
            Poll(
                dumps: [Kernel.netns: [Kernel.listener(port: 80)]], readWindows: [Kernel.netns: 5_000 * ms...5_010 * ms]
            ))
        c = t.flush()
        #expect(c.first { $0.key.local.port == 45004 }?.closedLifetimeNanos == UInt64(5_010 * ms - 3_000 * ms))
    }
}

/// Past its bound the socket table follows sockets by their counts only: every byte they carry is
/// in rows rolled up by their ephemeral port, and sockets older than the agent never count what
/// they carried before it.
@Suite struct ConnectionTrackerCountedTests {
    static func clients(_ range: Range<Int>, sent: UInt64, received: UInt64, state: TCPState = .established)
        -> [SocketObservation]
    {
        range.map { i in
            Kernel.tcp(
                cookie: UInt64(10 + i), local: UInt16(40_000 + i), remote: 5432, state: state, inode: UInt64(100 + i),
                sent: sent, received: received)
        }
    }

    @Test func socketsPastTheTableAreCountedIntoRolledUpRowsWithEveryByte() throws {
        var t = ConnectionTracker(maxTracked: 2, maxCounted: 10)
        let listener = Kernel.listener(port: 5432)
        // One socket older than the agent: what it carried before is not counted.
        let old = Kernel.tcp(cookie: 9, local: 39_999, remote: 5432, sent: 7_000, received: 7_000)
        t.apply(Poll(dumps: [Kernel.netns: [listener, old]], isBaseline: true))
        #expect(t.flush().map(\.stats.bytesSent) == [0])

        // Six new clients of one server: one fits the table, five are counted.
        t.apply(Poll(dumps: [Kernel.netns: [listener, old] + Self.clients(0..<6, sent: 100, received: 10)]))
        #expect(t.health.countedOnly == 5 && t.health.droppedTableFull == 0)
        var first = t.flush()
        #expect(first.map(\.stats.bytesSent).reduce(0, +) == 600)
        #expect(first.map(\.stats.bytesReceived).reduce(0, +) == 60)
        #expect(first.map(\.stats.tcpEstablished).reduce(0, +) == 6)
        let rolled = try #require(first.first { $0.rolledUp == 5 })
        #expect(rolled.key.local.port == 0 && rolled.key.remote.port == 5432 && rolled.key.direction == .outgoing)

        // Next interval: each sends 50 more and the old one 1; then three close with their final
        // counters (the peer's FIN is one byte of bytes_received) and two vanish from the dump.
        var more = Self.clients(0..<6, sent: 150, received: 10)
        more.append(Kernel.tcp(cookie: 9, local: 39_999, remote: 5432, sent: 7_001, received: 7_000))
        t.apply(Poll(dumps: [Kernel.netns: [listener] + more]))
        var finals = Self.clients(1..<4, sent: 160, received: 11, state: .close)
        finals = finals.map {
            var o = $0; o.inode = 0; return o
        }
        t.apply(
            Poll(
                dumps: [Kernel.netns: [listener] + Self.clients(0..<1, sent: 150, received: 10) + [more[6]]],
                destroyed: finals, destroyNotified: [Kernel.netns]))
        t.apply(
            Poll(
                dumps: [Kernel.netns: [listener] + Self.clients(0..<1, sent: 150, received: 10) + [more[6]]],
                destroyNotified: [Kernel.netns]))
        first = t.flush()
        // 50 each, 10 more for the three that closed, 1 from the old socket.
        let sent: UInt64 = 6 * 50 + 3 * 10 + 1
        #expect(first.map(\.stats.bytesSent).reduce(0, +) == sent)
        // The three closed got 1 byte of data; their FIN byte is not counted.
        #expect(first.map(\.stats.bytesReceived).reduce(0, +) == 0)
        #expect(first.map(\.stats.tcpClosed).reduce(0, +) == 5)
        #expect(first.map(\.stats.tcpEstablished).reduce(0, +) == 0)
        #expect(t.health.countedOnly == 0 && t.health.closedWithoutFinalCounters == 2)
    }

    /// A socket open at the baseline that neither table took starts, once followed, from its
    /// counters then: what it carried before the agent started is not this agent's to report.
    @Test func aSocketOlderThanTheAgentSkippedForLackOfRoomStartsFromItsCountersWhenFollowed() {
        var t = ConnectionTracker(maxTracked: 1, maxCounted: 1)
        let sockets = Self.clients(0..<3, sent: 5_000, received: 5_000)
        t.apply(Poll(dumps: [Kernel.netns: sockets], isBaseline: true))
        #expect(t.health.droppedTableFull == 1)
        _ = t.flush()
        // The first closes; once it is flushed, the third is followed, from its counters then.
        t.apply(Poll(dumps: [Kernel.netns: Array(sockets[1...])]))
        #expect(t.flush().map(\.stats.tcpClosed).reduce(0, +) == 1)
        t.apply(Poll(dumps: [Kernel.netns: Self.clients(1..<3, sent: 5_010, received: 5_000)]))
        t.apply(Poll(dumps: [Kernel.netns: Self.clients(1..<3, sent: 5_020, received: 5_000)]))
        let report = t.flush()
        #expect(report.map(\.stats.bytesSent).reduce(0, +) == 20 + 10)
        #expect(report.map(\.stats.bytesReceived).reduce(0, +) == 0)
        #expect(t.health.droppedTableFull == 2)
    }
}
