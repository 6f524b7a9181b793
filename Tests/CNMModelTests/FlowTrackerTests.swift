import CNMModel
import Testing

/// Builds flow records the way the eBPF reader does.
private enum Flow {
    static let netns: UInt64 = 4_026_531_840
    static let host = IPAddress.v4(0x0A00_0005)  // 10.0.0.5
    static let server = IPAddress.v4(0x0A00_0009)  // 10.0.0.9
    static let lo = IPAddress.v4(0x7F00_0001)
    static let watched: FlowRecord.Flags = [.established, .bornWatched, .tracked]

    static func counters(
        _ sent: UInt64,
        _ received: UInt64,
        packets: (sent: UInt64, received: UInt64) = (0, 0),
        retransmits: UInt64 = 0
    ) -> SocketCounters {
        SocketCounters(
            bytesSent: sent,
            bytesReceived: received,
            packetsSent: packets.sent,
            packetsReceived: packets.received,
            retransmits: retransmits
        )
    }

    static func tcp(
        socket: UInt64,
        birth: UInt64 = 1,
        local: UInt16 = 45000,
        remote: UInt16 = 443,
        netns: UInt64 = netns,
        address: IPAddress = host,
        remoteAddress: IPAddress = server,
        direction: ConnectionDirection = .outgoing,
        state: TCPState = .established,
        pid: Int32? = 200,
        processName: ProcessName? = "client",
        containerID: String? = nil,
        kernel: SocketCounters = .zero,
        hooks: SocketCounters = .zero,
        error: Int32 = 0,
        flags: FlowRecord.Flags = watched
    ) -> FlowRecord {
        FlowRecord(
            id: FlowRecord.ID(socket: socket, birth: birth),
            netns: netns,
            transport: .tcp,
            local: Endpoint(address, local),
            remote: Endpoint(remoteAddress, remote),
            direction: direction,
            state: state,
            pid: pid,
            processName: processName,
            containerID: containerID,
            hookCounters: hooks,
            kernelCounters: kernel,
            error: error,
            flags: flags
        )
    }

    /// The flow's final record: closed, with the given counters.
    static func final(_ r: FlowRecord, kernel: SocketCounters, error: Int32 = 0, flags: FlowRecord.Flags = [])
        -> FlowRecord
    {
        var f = r
        f.state = .close
        f.kernelCounters = kernel
        f.error = error
        f.flags.formUnion(flags.union(.closed))
        return f
    }
}

extension FlowTracker {
    /// One pass over `netns` (read whole), then the interval's report.
    fileprivate mutating func pass(
        open: [FlowRecord] = [],
        closed: [FlowRecord] = [],
        complete: Set<UInt64> = [Flow.netns],
        baseline: Bool = false
    ) -> [Connection] {
        apply(open: open, closed: closed, complete: complete, baseline: baseline)
        return flush()
    }
}

@Suite struct FlowTrackerTests {
    @Test func eachFlushReportsTheDeltaSinceThePreviousOne() throws {
        var t = FlowTracker(hooksCountTCPBytes: false)
        #expect(t.pass(baseline: true).isEmpty)

        // Seen first while connecting (after the baseline): not established yet.
        let syn = Flow.tcp(
            socket: 0xA1, state: .synSent, kernel: Flow.counters(0, 0, packets: (1, 0)),
            flags: [.bornWatched, .tracked])
        var c = t.pass(open: [syn])
        #expect(c.count == 1)
        #expect(c[0].stats.packetsSent == 1 && c[0].stats.bytesSent == 0)
        #expect(c[0].stats.tcpEstablished == 0 && c[0].stats.tcpClosed == 0)

        // First seen established: counted in this flush.
        let r = Flow.tcp(socket: 0xA1, kernel: Flow.counters(100, 40, packets: (3, 2)))
        c = t.pass(open: [r])
        #expect(c.count == 1)
        #expect(c[0].stats.bytesSent == 100 && c[0].stats.bytesReceived == 40)
        #expect(c[0].stats.packetsSent == 2 && c[0].stats.packetsReceived == 2)
        #expect(c[0].stats.tcpEstablished == 1 && c[0].stats.tcpClosed == 0)

        // Read again with grown counters: only the growth, not established again.
        c = t.pass(open: [Flow.tcp(socket: 0xA1, kernel: Flow.counters(250, 90, packets: (7, 5), retransmits: 1))])
        #expect(c.count == 1)
        #expect(c[0].stats.bytesSent == 150 && c[0].stats.bytesReceived == 50)
        #expect(c[0].stats.packetsSent == 4 && c[0].stats.packetsReceived == 3 && c[0].stats.retransmits == 1)
        #expect(c[0].stats.tcpEstablished == 0 && c[0].stats.tcpClosed == 0)

        // Closed: the last growth (less the FIN's byte) and the close.
        let end = Flow.final(
            r, kernel: Flow.counters(300, 101, packets: (9, 6), retransmits: 1), flags: .finReceived)
        c = t.pass(closed: [end])
        #expect(c.count == 1)
        #expect(c[0].stats.bytesSent == 50 && c[0].stats.bytesReceived == 10)
        #expect(c[0].stats.packetsSent == 2 && c[0].stats.packetsReceived == 1 && c[0].stats.retransmits == 0)
        #expect(c[0].stats.tcpEstablished == 0 && c[0].stats.tcpClosed == 1)

        #expect(t.pass().isEmpty, "a closed flow is forgotten after its last report")
        #expect(t.health.tracked == 0)
        #expect(t.health.closedWithoutFinalRecord == 0 && t.health.counterRegressions == 0)
    }

    @Test func baselineFlowsStartFromTheirCurrentCountersUnlessBornWatched() throws {
        var t = FlowTracker(hooksCountTCPBytes: false)
        let old = Flow.tcp(
            socket: 1, birth: 0, local: 45001, kernel: Flow.counters(1_000_000, 5000, packets: (900, 800)),
            flags: [.established, .tracked])
        let young = Flow.tcp(socket: 2, local: 45002, kernel: Flow.counters(700, 300, packets: (6, 5)))
        var c = t.pass(open: [old, young], baseline: true)
        let old1 = try #require(c.first { $0.key.local.port == 45001 })
        let young1 = try #require(c.first { $0.key.local.port == 45002 })
        #expect(old1.stats.bytesSent == 0 && old1.stats.bytesReceived == 0 && old1.stats.packetsSent == 0)
        #expect(old1.stats.tcpEstablished == 0, "it was established before the agent started")
        #expect(young1.stats.bytesSent == 700 && young1.stats.bytesReceived == 300 && young1.stats.packetsSent == 6)
        #expect(young1.stats.tcpEstablished == 1)

        var older = old
        older.kernelCounters = Flow.counters(1_000_010, 5000, packets: (901, 800))
        var younger = young
        younger.kernelCounters = Flow.counters(750, 300, packets: (7, 5))
        c = t.pass(open: [older, younger])
        #expect(c.first { $0.key.local.port == 45001 }?.stats.bytesSent == 10)
        #expect(c.first { $0.key.local.port == 45001 }?.stats.packetsSent == 1)
        #expect(c.first { $0.key.local.port == 45002 }?.stats.bytesSent == 50)
        #expect(c.allSatisfy { $0.stats.tcpEstablished == 0 })
    }

    @Test(arguments: [true, false])
    func tcpBytesComeFromTheChosenCounters(hooksCountTCPBytes: Bool) throws {
        let hooks = Flow.counters(10, 20, packets: (99, 99), retransmits: 99)
        let kernel = Flow.counters(30, 41, packets: (3, 4), retransmits: 2)
        let watched = Flow.tcp(
            socket: 1, local: 45001, kernel: kernel, hooks: hooks, flags: [.established, .bornWatched, .finReceived])
        let unwatched = Flow.tcp(
            socket: 2, local: 45002, kernel: kernel, hooks: hooks, flags: [.established, .finReceived])
        let noFinByte = Flow.tcp(
            socket: 3, local: 45003, kernel: Flow.counters(5, 0), flags: [.established, .finReceived])
        var udp = Flow.tcp(socket: 4, local: 45004, remote: 53, kernel: kernel, hooks: hooks, flags: [.bornWatched])
        udp.transport = .udp
        udp.id.peer = udp.remote

        var t = FlowTracker(hooksCountTCPBytes: hooksCountTCPBytes)
        _ = t.pass(baseline: true)
        let c = t.pass(open: [watched, unwatched, noFinByte, udp])
        #expect(c.count == 4)

        let w = try #require(c.first { $0.key.local.port == 45001 }?.stats)
        if hooksCountTCPBytes {
            #expect(w.bytesSent == 10 && w.bytesReceived == 20, "bytes from the hooks")
        } else {
            #expect(w.bytesSent == 30 && w.bytesReceived == 40, "bytes from the kernel, less the FIN's byte")
        }
        #expect(w.packetsSent == 3 && w.packetsReceived == 4 && w.retransmits == 2, "always from the kernel")

        let u = try #require(c.first { $0.key.local.port == 45002 }?.stats)
        #expect(u.bytesSent == 30 && u.bytesReceived == 40, "not watched from birth: the kernel's bytes")
        #expect(u.packetsSent == 3 && u.packetsReceived == 4 && u.retransmits == 2)

        let n = try #require(c.first { $0.key.local.port == 45003 }?.stats)
        #expect(n.bytesSent == 5 && n.bytesReceived == 0, "no byte to take off")

        let d = try #require(c.first { $0.key.transport == .udp }?.stats)
        #expect(d.bytesSent == 10 && d.bytesReceived == 20, "UDP has only the hooks' counts")
        #expect(d.packetsSent == 99 && d.packetsReceived == 99 && d.retransmits == 99)
        #expect(d.tcpEstablished == 0)

        #expect(udp.counters(hooksCountTCPBytes: hooksCountTCPBytes) == hooks)
        #expect(noFinByte.counters(hooksCountTCPBytes: hooksCountTCPBytes).bytesReceived == 0)
    }

    @Test func failuresCountedByErrno() throws {
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        let refusedOpen = Flow.tcp(
            socket: 1, local: 45001, state: .synSent, kernel: Flow.counters(0, 0, packets: (1, 0)),
            flags: [.bornWatched, .tracked])
        let reset = Flow.tcp(socket: 2, local: 45002)
        var c = t.pass(open: [refusedOpen])
        #expect(c.first?.stats.tcpFailures == [:])

        let refused = Flow.final(refusedOpen, kernel: Flow.counters(0, 0, packets: (2, 1)), error: 111)
        c = t.pass(closed: [refused, Flow.final(reset, kernel: Flow.counters(12, 34), error: 104)])
        #expect(c.count == 2)
        let r = try #require(c.first { $0.key.local.port == 45001 }?.stats)
        #expect(r.tcpFailures == [111: 1])
        #expect(r.tcpEstablished == 0 && r.tcpClosed == 0, "never established: a failure, not a close")
        #expect(r.packetsSent == 1 && r.packetsReceived == 1)
        let x = try #require(c.first { $0.key.local.port == 45002 }?.stats)
        #expect(x.tcpFailures == [104: 1])
        #expect(x.tcpEstablished == 1 && x.tcpClosed == 1, "seen only closed: established and closed in this interval")
        #expect(x.bytesSent == 12 && x.bytesReceived == 34)
    }

    @Test func reusedSocketAddressReportsEveryLife() throws {
        // Same ports: one ConnectionKey, summed.
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        let first = Flow.tcp(socket: 0xB0, birth: 100, local: 45001, kernel: Flow.counters(100, 10))
        #expect(t.pass(open: [first]).first?.stats.bytesSent == 100)
        let second = Flow.tcp(socket: 0xB0, birth: 200, local: 45001)
        var c = t.pass(closed: [
            Flow.final(first, kernel: Flow.counters(150, 15)), Flow.final(second, kernel: Flow.counters(30, 3)),
        ])
        #expect(c.count == 1)
        #expect(c[0].stats.bytesSent == 80 && c[0].stats.bytesReceived == 8)
        #expect(c[0].stats.tcpEstablished == 1 && c[0].stats.tcpClosed == 2)
        #expect(t.health.counterRegressions == 0)

        // Different ports: two connections, each with its own life.
        t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        _ = t.pass(open: [first])
        let other = Flow.tcp(socket: 0xB0, birth: 200, local: 45002)
        c = t.pass(closed: [
            Flow.final(first, kernel: Flow.counters(150, 15)), Flow.final(other, kernel: Flow.counters(30, 3)),
        ])
        #expect(c.count == 2)
        let a = try #require(c.first { $0.key.local.port == 45001 }?.stats)
        let b = try #require(c.first { $0.key.local.port == 45002 }?.stats)
        #expect(a.bytesSent == 50 && a.bytesReceived == 5 && a.tcpEstablished == 0 && a.tcpClosed == 1)
        #expect(b.bytesSent == 30 && b.bytesReceived == 3 && b.tcpEstablished == 1 && b.tcpClosed == 1)
        #expect(t.health.counterRegressions == 0)
    }

    @Test func lateOpenRecordOfAFlushedFlowIsIgnored() {
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        let r = Flow.tcp(socket: 0xC0, kernel: Flow.counters(100, 10))
        #expect(t.pass(open: [r]).first?.stats.bytesSent == 100)
        let c = t.pass(closed: [Flow.final(r, kernel: Flow.counters(150, 15))])
        #expect(c.first?.stats.bytesSent == 50 && c.first?.stats.tcpClosed == 1)

        // The next interval's iterator still lists the socket, with its final counters.
        var late = r
        late.state = .finWait1
        late.kernelCounters = Flow.counters(150, 15)
        #expect(t.pass(open: [late]).isEmpty)
        #expect(t.health.tracked == 0)
        #expect(t.health.closedWithoutFinalRecord == 0)
    }

    @Test func lateOpenRecordReadAfterTheTableEntryWentIsIgnored() {
        var t = FlowTracker(hooksCountTCPBytes: true)
        _ = t.pass(baseline: true)
        let r = Flow.tcp(socket: 0xC2, birth: 77, hooks: Flow.counters(300, 30), flags: Flow.watched)
        // Opened and closed between two full passes: only its final record is ever read.
        t.apply(closed: [Flow.final(r, kernel: Flow.counters(300, 31), flags: .finReceived)])
        // The iterator read the socket after its entry was deleted: no birth, no hook counters.
        var late = Flow.tcp(socket: 0xC2, birth: 0, kernel: Flow.counters(300, 31), flags: [.established])
        late.state = .established
        let report = t.pass(open: [late])
        #expect(report.count == 1, "only the real flow: \(report)")
        #expect(report.first?.stats.bytesSent == 300 && report.first?.stats.bytesReceived == 30)
        #expect(t.health.lateRecordsIgnored == 1)

        // Another socket at that address, born watched, is a new flow.
        let next = Flow.tcp(socket: 0xC2, birth: 99, hooks: Flow.counters(5, 6), flags: Flow.watched)
        #expect(t.pass(open: [next]).first?.stats.bytesSent == 5)
    }

    @Test func finalRecordOfAFlowAlreadyReportedClosedIsNotCountedAgain() {
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        let r = Flow.tcp(socket: 0xC1, kernel: Flow.counters(100, 10))
        #expect(t.pass(open: [r]).first?.stats.bytesSent == 100)
        let final = Flow.final(r, kernel: Flow.counters(120, 10))
        let first = t.pass(closed: [final])
        #expect(first.first?.stats.bytesSent == 20 && first.first?.stats.tcpClosed == 1)
        // The same final record again (a deferred copy, say) adds nothing.
        #expect(t.pass(closed: [final]).isEmpty)
        #expect(t.health.tracked == 0)
    }

    @Test func finalRecordOfAFlowOlderThanTheAgentCountsOnlyItsClose() {
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        var old = Flow.tcp(socket: 0xC2, kernel: Flow.counters(1_000_000, 10))
        old.flags = [.established]
        let c = t.pass(closed: [Flow.final(old, kernel: Flow.counters(1_000_000, 10), flags: [.established])])
        #expect(c.first?.stats.bytesSent == 0)
        #expect(c.first?.stats.tcpClosed == 1)
    }

    @Test func finalRecordWithoutItsPortKeepsTheOpenRecordsPort() throws {
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        let r = Flow.tcp(socket: 0xD0, local: 45003, kernel: Flow.counters(100, 10))
        _ = t.pass(open: [r])
        var end = Flow.final(r, kernel: Flow.counters(120, 11))
        end.local.port = 0
        let c = t.pass(closed: [end])
        #expect(c.count == 1)
        let only = try #require(c.first)
        #expect(only.key.local == Endpoint(Flow.host, 45003))
        #expect(only.stats.bytesSent == 20 && only.stats.bytesReceived == 1 && only.stats.tcpClosed == 1)
    }

    @Test func flowMissingFromACompleteNamespaceIsClosedAfterTheGracePasses() throws {
        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(complete: [1, 2], baseline: true)
        let gone = Flow.tcp(socket: 1, local: 45001, netns: 1, kernel: Flow.counters(10, 1))
        let unread = Flow.tcp(socket: 2, local: 45002, netns: 2, kernel: Flow.counters(20, 2))
        #expect(t.pass(open: [gone, unread], complete: [1, 2]).count == 2)

        // Namespace 2's read failed from now on; namespace 1 was read whole without `gone`.
        for _ in 1...2 {
            let c = t.pass(complete: [1])
            #expect(c.count == 2)
            #expect(c.allSatisfy { $0.stats.tcpClosed == 0 }, "its final record may still be on its way")
            #expect(t.health.closedWithoutFinalRecord == 0)
        }
        var c = t.pass(complete: [1])
        #expect(c.first { $0.key.netns == 1 }?.stats.tcpClosed == 1)
        #expect(c.first { $0.key.netns == 2 }?.stats.tcpClosed == 0)
        #expect(t.health.closedWithoutFinalRecord == 1)
        #expect(t.health.tracked == 1)

        for _ in 1...3 {
            c = t.pass(complete: [1])
            #expect(c.count == 1)
            #expect(c.first?.key.netns == 2 && c.first?.stats.tcpClosed == 0)
        }
        #expect(t.health.closedWithoutFinalRecord == 1)
    }

    @Test func loopbackEndsInOneNamespaceKnowEachOther() throws {
        let client = Flow.tcp(
            socket: 1, local: 45000, remote: 8080, address: Flow.lo, remoteAddress: Flow.lo, pid: 200,
            processName: "client", containerID: "c1")
        let server = Flow.tcp(
            socket: 2, local: 8080, remote: 45000, address: Flow.lo, remoteAddress: Flow.lo, direction: .incoming,
            pid: 100, processName: "server")

        var t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(baseline: true)
        var c = t.pass(open: [client, server])
        #expect(c.count == 2)
        let out = try #require(c.first { $0.key.local.port == 45000 })
        let into = try #require(c.first { $0.key.local.port == 8080 })
        #expect(out.key.pid == 200 && out.remotePid == 100 && out.remoteProcessName == "server")
        #expect(into.key.pid == 100 && into.remotePid == 200 && into.remoteContainerID == "c1")
        #expect(out.intraHost && into.intraHost)

        // 127.0.0.1 in two namespaces is two hosts.
        var elsewhere = server
        elsewhere.netns = 7
        t = FlowTracker(hooksCountTCPBytes: false)
        _ = t.pass(complete: [Flow.netns, 7], baseline: true)
        c = t.pass(open: [client, elsewhere], complete: [Flow.netns, 7])
        #expect(c.count == 2)
        #expect(c.allSatisfy { $0.remotePid == nil })
    }
}

/// The programs' counters only grow; a read that comes back short must not wrap a difference around.
@Suite struct EBPFTelemetryTests {
    @Test func aCounterThatWentDownGainedNothing() {
        var before = EBPFTelemetry()
        before.tableFull = 10
        before.closedLost = 3
        var now = EBPFTelemetry()
        now.tableFull = 12
        // closedLost reads 0: a failed or short read.
        let gained = now.increase(since: before)
        #expect(gained.tableFull == 2)
        #expect(gained.closedLost == 0)
        #expect(EBPFTelemetry().increase(since: before) == EBPFTelemetry())
    }

    /// Rollups need each closed connection's lifetime: from the socket's birth (the programs'
    /// clock) to when its final record was taken, known only for sockets the programs saw made.
    @Test func aClosedFlowCarriesHowLongItLivedWhenItsBirthIsKnown() throws {
        let second: UInt64 = 1_000_000_000
        var t = FlowTracker(hooksCountTCPBytes: false)
        t.apply(open: [], closed: [], complete: [Flow.netns], baseline: true, now: 10 * second)
        #expect(t.flush().isEmpty)

        let born = Flow.tcp(socket: 0xB1, birth: 11 * second, local: 45010, kernel: Flow.counters(10, 20))
        let older = Flow.tcp(
            socket: 0xB2, birth: 0, local: 45011, kernel: Flow.counters(5, 5), flags: [.established, .tracked])
        t.apply(open: [born, older], closed: [], complete: [Flow.netns], baseline: false, now: 12 * second)
        var c = t.flush()
        #expect(c.count == 2 && c.allSatisfy { $0.closedLifetimeNanos == nil }, "open flows have no lifetime yet")

        // Closed in the next interval, 3.5 s after it was made; the older one's start is unknown.
        t.apply(
            closed: [
                Flow.final(born, kernel: Flow.counters(30, 40)), Flow.final(older, kernel: Flow.counters(6, 6)),
            ], now: 14 * second + second / 2)
        // One made and closed between two reads: its first record is its final one.
        let brief = Flow.tcp(socket: 0xB3, birth: 14 * second, local: 45012, kernel: .zero)
        t.apply(closed: [Flow.final(brief, kernel: Flow.counters(1, 1))], now: 14 * second + 200_000_000)
        c = t.flush()
        let lived = Dictionary(uniqueKeysWithValues: c.map { ($0.key.local.port, $0.closedLifetimeNanos) })
        #expect(lived[45010] == 3 * second + second / 2)
        #expect(lived[45011] == .some(nil), "a flow older than its birth record has no known lifetime")
        #expect(lived[45012] == 200_000_000)
        #expect(c.first { $0.key.local.port == 45010 }?.stats.bytesSent == 20, "the lifetime changes no count")

        // Given up for lost (no final record): closed when found missing, at most that long.
        let lost = Flow.tcp(socket: 0xB4, birth: 15 * second, local: 45013, kernel: Flow.counters(1, 0))
        t.apply(open: [lost], closed: [], complete: [Flow.netns], baseline: false, now: 15 * second)
        _ = t.flush()
        for n in 1...3 {
            t.apply(open: [], closed: [], complete: [Flow.netns], baseline: false, now: (15 + UInt64(n)) * second)
        }
        c = t.flush()
        #expect(c.first { $0.key.local.port == 45013 }?.closedLifetimeNanos == 3 * second)
    }
}

/// Under a memory budget every table has a bound; past it the tracker rolls up rather than grows,
/// and never loses a byte it could keep.
@Suite struct FlowTrackerBoundsTests {
    /// `count` short connections of one client to one server port, both ends on loopback, each
    /// carrying `i` bytes out and `2i` back.
    private static func churn(_ count: Int, firstSocket: UInt64 = 0x1000) -> [FlowRecord] {
        (0..<count).flatMap { i -> [FlowRecord] in
            let port = UInt16(40_000 + i)
            let sent = UInt64(i + 1)
            let client = Flow.tcp(
                socket: firstSocket + UInt64(2 * i), local: port, remote: 8080, address: Flow.lo,
                remoteAddress: Flow.lo, pid: 200, processName: "client")
            let server = Flow.tcp(
                socket: firstSocket + UInt64(2 * i + 1), local: 8080, remote: port, address: Flow.lo,
                remoteAddress: Flow.lo, direction: .incoming, pid: 100, processName: "server")
            return [
                Flow.final(client, kernel: Flow.counters(sent, 2 * sent, packets: (2, 2))),
                Flow.final(server, kernel: Flow.counters(2 * sent, sent, packets: (2, 2))),
            ]
        }
    }

    @Test func closedFlowsPastTheirBoundAreRolledUpWithEveryByte() throws {
        var t = FlowTracker(hooksCountTCPBytes: false, maxClosedEnds: 64)
        _ = t.pass(baseline: true)
        let n = 1_000
        t.apply(closed: Self.churn(n))
        let c = t.flush()
        let total = UInt64(n * (n + 1) / 2)
        let out = c.filter { $0.key.direction == .outgoing }
        let into = c.filter { $0.key.direction == .incoming }
        #expect(out.reduce(0) { $0 + $1.stats.bytesSent } == total)
        #expect(out.reduce(0) { $0 + $1.stats.bytesReceived } == 2 * total)
        #expect(into.reduce(0) { $0 + $1.stats.bytesSent } == 2 * total)
        #expect(out.reduce(0) { $0 + $1.rolledUp } == n && into.reduce(0) { $0 + $1.rolledUp } == n)
        #expect(out.reduce(0) { $0 + $1.stats.tcpClosed } == UInt64(n))
        #expect(c.count < 70, "\(c.count) rows for a bound of 64 closed ends")
        let rolled = try #require(out.first { $0.rolledUp > 1 })
        #expect(rolled.key.local.port == 0 && rolled.key.remote.port == 8080, "the client's ephemeral port goes")
        #expect(rolled.remoteProcessName == "server", "the rolled-up ends of one connection still know each other")
        let served = try #require(into.first { $0.rolledUp > 1 })
        #expect(served.key.local.port == 8080 && served.key.remote.port == 0)
        #expect(t.health.rolledUpForMemory == UInt64(2 * n - c.count))
    }

    @Test func aReportPastItsBoundRollsUpOpenConnectionsToo() {
        var t = FlowTracker(hooksCountTCPBytes: false, maxReportConnections: 10)
        _ = t.pass(baseline: true)
        let open = (0..<100).map { i in
            Flow.tcp(socket: 0x100 + UInt64(i), local: UInt16(45_000 + i), kernel: Flow.counters(10, UInt64(i)))
        }
        let c = t.pass(open: open)
        #expect(c.count == 1)
        #expect(c[0].rolledUp == 100 && c[0].stats.bytesSent == 1_000 && c[0].stats.bytesReceived == 4_950)
        #expect(c[0].key.local.port == 0 && c[0].key.remote.port == 443)
        // Next interval: each flow is still followed on its own, and only its growth is counted.
        let grown = open.map { r -> FlowRecord in
            var g = r
            g.kernelCounters.bytesSent += 1
            return g
        }
        let next = t.pass(open: grown)
        #expect(next.count == 1 && next[0].stats.bytesSent == 100 && next[0].stats.bytesReceived == 0)
    }

    @Test func theRemoteEndGoesWhenPortsAloneDoNotShrinkTheReport() throws {
        var t = FlowTracker(hooksCountTCPBytes: false, maxReportConnections: 5)
        _ = t.pass(baseline: true)
        // One client to 50 servers: zeroing its own port leaves 50 rows.
        let open = (0..<50).map { i in
            Flow.tcp(
                socket: 0x200 + UInt64(i), local: UInt16(45_000 + i),
                remoteAddress: .v4(0x0A00_0100 + UInt32(i)), kernel: Flow.counters(7, 3))
        }
        // And 30 connections of another client to one service, which the ephemeral port merges.
        let service = (0..<30).map { i in
            Flow.tcp(
                socket: 0x280 + UInt64(i), local: UInt16(46_000 + i), remote: 5432, pid: 300,
                kernel: Flow.counters(1, 2))
        }
        let c = t.pass(open: open + service)
        #expect(c.count == 2)
        let scattered = try #require(c.first { $0.key.pid == 200 })
        #expect(scattered.rolledUp == 50 && scattered.stats.bytesSent == 350 && scattered.stats.bytesReceived == 150)
        #expect(scattered.key.remote == Endpoint(.v4(0), 0))
        let merged = try #require(c.first { $0.key.pid == 300 })
        #expect(merged.rolledUp == 30 && merged.key.remote == Endpoint(Flow.server, 5432), "keeps the service's end")
    }

    @Test func openFlowsPastTheTableBoundAreCountedWhenTheyClose() {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: 2)
        _ = t.pass(baseline: true)
        let open = (0..<5).map { i in
            Flow.tcp(socket: 0x300 + UInt64(i), local: UInt16(45_000 + i), kernel: Flow.counters(100, 10))
        }
        var c = t.pass(open: open)
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 200, "two followed")
        #expect(t.health.openNotFollowed == 3)
        // All five close with 300 bytes sent each: the followed ones add their growth, the others all of it.
        let closed = open.map { Flow.final($0, kernel: Flow.counters(300, 30)) }
        c = t.pass(closed: closed)
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 2 * 200 + 3 * 300)
        #expect(c.reduce(0) { $0 + $1.stats.bytesReceived } == 2 * 20 + 3 * 30)
    }

    @Test func anOlderFlowNotFollowedAtTheBaselineStartsFromItsCountersWhenFollowedLater() {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: 1)
        let older: FlowRecord.Flags = [.established, .tracked]
        let a = Flow.tcp(socket: 0x400, birth: 0, local: 45_000, kernel: Flow.counters(1_000, 0), flags: older)
        let b = Flow.tcp(socket: 0x401, birth: 0, local: 45_001, kernel: Flow.counters(5_000, 0), flags: older)
        _ = t.pass(open: [a, b], baseline: true)
        #expect(t.health.openNotFollowed == 1)
        // `a` closes (its entry goes at the report); then `b` is followed, from its counters when
        // first followed: what it carried before is as unknown as its history before the agent.
        var grownB = b
        grownB.kernelCounters.bytesSent = 5_100
        var c = t.pass(open: [grownB], closed: [Flow.final(a, kernel: Flow.counters(1_050, 0))])
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 50, "a's growth only")
        grownB.kernelCounters.bytesSent = 5_130
        c = t.pass(open: [grownB])
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 0 && t.health.openNotFollowed == 0)
        grownB.kernelCounters.bytesSent = 5_160
        c = t.pass(open: [grownB])
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 30)
    }

    @Test func flowsPastTheFullTableAreFollowedByTheirCountsIntoRolledUpRows() throws {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: 2, maxCountedFlows: 10)
        _ = t.pass(baseline: true)
        var open = (0..<6).map { i in
            Flow.tcp(socket: 0x500 + UInt64(i), local: UInt16(45_000 + i), kernel: Flow.counters(100, 10))
        }
        var c = t.pass(open: open)
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 600 && c.reduce(0) { $0 + $1.rolledUp } == 6)
        #expect(c.reduce(0) { $0 + $1.stats.tcpEstablished } == 6)
        #expect(t.health.countedOnly == 4 && t.health.openNotFollowed == 0)
        let rolled = try #require(c.first { $0.rolledUp > 1 })
        #expect(rolled.rolledUp == 4 && rolled.key.local.port == 0 && rolled.stats.bytesSent == 400)
        // Each pass adds only the growth, and the next interval counts the open ones once again.
        for i in open.indices { open[i].kernelCounters.bytesSent += UInt64(i) }
        c = t.pass(open: open)
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 15 && c.reduce(0) { $0 + $1.rolledUp } == 6)
        #expect(c.reduce(0) { $0 + $1.stats.tcpEstablished } == 0)
        // Closed: the growth since, and a close each.
        c = t.pass(closed: open.map { Flow.final($0, kernel: Flow.counters($0.kernelCounters.bytesSent + 1, 12)) })
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 6 && c.reduce(0) { $0 + $1.stats.bytesReceived } == 12)
        #expect(c.reduce(0) { $0 + $1.stats.tcpClosed } == 6)
        #expect(t.pass().isEmpty && t.health.tracked == 0)
    }

    @Test func withBothTablesFullAFlowIsNotFollowedAndSaysSo() {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: 1, maxCountedFlows: 1)
        _ = t.pass(baseline: true)
        let open = (0..<3).map { i in
            Flow.tcp(socket: 0x600 + UInt64(i), local: UInt16(45_000 + i), kernel: Flow.counters(100, 10))
        }
        let c = t.pass(open: open)
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 200)
        #expect(t.health.openNotFollowed == 1 && t.health.countedOnly == 1)
    }
}

extension FlowTrackerBoundsTests {
    /// A flow the programs did not see start has no direction; both its ports may be ephemeral (a
    /// server listening on a port the kernel picked). Where its local end is one the programs saw
    /// accept connections, it is incoming, and its client's port is the one rolled away.
    @Test func aFlowWithoutADirectionAtAKnownServersEndIsIncoming() throws {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: 1, maxCountedFlows: 10)
        _ = t.pass(baseline: true)
        let seen = Flow.tcp(
            socket: 0x700, local: 40_001, remote: 50_000, address: Flow.lo, remoteAddress: Flow.lo,
            direction: .incoming, kernel: Flow.counters(1, 1))
        let unseen = (0..<4).map { i in
            var r = Flow.tcp(
                socket: 0x710 + UInt64(i), local: 40_001, remote: UInt16(50_001 + i), address: Flow.lo,
                remoteAddress: Flow.lo, kernel: Flow.counters(3, 4), flags: [.established])
            r.direction = nil
            return r
        }
        let c = t.pass(open: [seen] + unseen)
        let served = try #require(c.first { $0.rolledUp == 4 })
        #expect(served.key.direction == .incoming && served.key.local.port == 40_001 && served.key.remote.port == 0)
        #expect(served.stats.bytesSent == 12 && served.stats.bytesReceived == 16)
    }
}

extension FlowTrackerBoundsTests {
    /// A socket the programs' full table did not take has no birth: one listed at an address that
    /// closed a second or more before is another socket's, and is counted.
    @Test func aNewSocketAtAnAddressClosedLongAgoIsNotTakenForALateRecord() {
        let second: UInt64 = 1_000_000_000
        var t = FlowTracker(hooksCountTCPBytes: false)
        t.apply(open: [], closed: [], complete: [Flow.netns], baseline: true, now: second)
        let old = Flow.tcp(socket: 0xD0, birth: 5, kernel: Flow.counters(1, 1))
        t.apply(closed: [Flow.final(old, kernel: Flow.counters(2, 2))], now: 2 * second)
        var reused = Flow.tcp(
            socket: 0xD0, birth: 0, local: 45_999, kernel: Flow.counters(700, 70), flags: [.established])
        reused.direction = nil
        t.apply(open: [reused], closed: [], complete: [Flow.netns], baseline: false, now: 4 * second)
        let c = t.flush()
        #expect(c.reduce(0) { $0 + $1.stats.bytesSent } == 2 + 700)
        #expect(t.health.lateRecordsIgnored == 0)
    }
}

extension FlowTrackerBoundsTests {
    /// The same when no connection to the server was seen accepted (the table was full before the
    /// server started): the iterator lists its listening socket, here on every address, so the
    /// flows at its port are incoming. A flow at another port stays outgoing.
    @Test func aFlowWithoutADirectionAtAListenersPortIsIncoming() throws {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: 1, maxCountedFlows: 10)
        _ = t.pass(baseline: true)
        var listener = Flow.tcp(
            socket: 0x800, local: 40_001, remote: 0, address: .v4(0), remoteAddress: .v4(0), state: .listen,
            flags: [.listening])
        listener.direction = nil
        func unseen(_ i: Int, local: UInt16) -> FlowRecord {
            var r = Flow.tcp(
                socket: 0x810 + UInt64(i), local: local, remote: UInt16(50_001 + i), address: Flow.lo,
                remoteAddress: Flow.lo, kernel: Flow.counters(3, 4), flags: [.established])
            r.direction = nil
            return r
        }
        let followed = Flow.tcp(socket: 0x7FF, kernel: Flow.counters(1, 1))
        let c = t.pass(
            open: [listener, followed] + (0..<4).map { unseen($0, local: 40_001) } + [unseen(9, local: 40_002)])
        let served = try #require(c.first { $0.rolledUp == 4 })
        #expect(served.key.direction == .incoming && served.key.local.port == 40_001 && served.key.remote.port == 0)
        #expect(served.stats.bytesSent == 12 && served.stats.bytesReceived == 16)
        // The listener itself is no connection.
        #expect(c.allSatisfy { $0.key.local.port != 40_001 || $0.key.remote.port == 0 })
        #expect(c.map(\.rolledUp).reduce(0, +) == 6)
        let other = try #require(c.first { $0.key.remote.port == 50_010 })
        #expect(other.key.direction == .outgoing && other.key.local.port == 0)
    }
}

extension FlowTrackerBoundsTests {
    /// An iterator may skip a socket while the kernel's table changes under it. A flow complete
    /// passes stopped listing is given up for lost; listed again (the same socket: its address,
    /// birth and inode), it goes on from its last counters rather than count its bytes twice.
    @Test(arguments: [false, true])
    func aFlowGivenUpForLostAndListedAgainIsNotCountedTwice(countsOnly: Bool) {
        var t = FlowTracker(hooksCountTCPBytes: false, maxOpenFlows: countsOnly ? 1 : 10, maxCountedFlows: 10)
        _ = t.pass(baseline: true)
        let filler = Flow.tcp(socket: 0x7FF, birth: 0, kernel: Flow.counters(0, 0), flags: [.established])
        func record(_ sent: UInt64, inode: UInt64 = 77) -> FlowRecord {
            var r = Flow.tcp(
                socket: 0x900, birth: 0, local: 40_100, remote: 5432, kernel: Flow.counters(sent, sent),
                flags: [.established])
            r.direction = nil
            r.inode = inode
            return r
        }
        var sent: UInt64 = 0
        func total(_ c: [Connection]) -> UInt64 {
            c.filter { $0.key.remote.port == 5432 }.map(\.stats.bytesSent).reduce(0, +)
        }
        sent += total(t.pass(open: [filler, record(100)]))
        for _ in 0..<3 { sent += total(t.pass(open: [filler])) }
        #expect(t.health.closedWithoutFinalRecord == 1)
        sent += total(t.pass(open: [filler, record(130)]))
        sent += total(t.pass(open: [filler, record(150)]))
        #expect(sent == 150)
        // Another socket at the address (another inode), listed seconds after the first was given
        // up, is new: it counts from zero.
        let second: UInt64 = 1_000_000_000
        for i in 0..<3 {
            t.apply(open: [filler], closed: [], complete: [Flow.netns], baseline: false, now: UInt64(10 + i) * second)
            _ = t.flush()
        }
        t.apply(
            open: [filler, record(40, inode: 78)], closed: [], complete: [Flow.netns], baseline: false,
            now: 20 * second)
        #expect(total(t.flush()) == 40)
    }
}
