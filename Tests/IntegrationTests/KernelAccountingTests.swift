import CLinux
import CNMTestSupport
import Foundation
import Glibc
import Testing

/// Exact accounting on the real kernel under every collection mode: eBPF with each strategy, and
/// eBPF-less for the cases it can do.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: loads eBPF programs and reads every namespace's sockets"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (make build): .build/debug/cnm-agent")
)
struct KernelAccountingTests {
    /// Every one of 2,000 connections that open and close within an interval, with its own byte counts.
    /// eBPF-less mode gets their bytes from sock_diag destroy notifications but cannot name their
    /// process: they live and die between two reads of /proc, so pids are checked in eBPF modes only.
    @Test(arguments: CollectionMode.allCases)
    func shortLivedConnectionsAreEachExact(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let (listener, serverPort) = try TestSocket.listener()
        defer { close(listener) }
        let expected = try makeShortConnections(2000, to: listener, port: serverPort) { i in (1 + i, 3 * i + 7) }
        let (outgoing, incoming) = try await waitFor("all 4,000 ends reported closed", timeout: .seconds(60)) {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before)
            let out = all.filter { $0.port("raddr") == Int(serverPort) && $0["type"] as? String == "tcp" }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) && $0["type"] as? String == "tcp" }
            return out.sum("tcp_closed") >= 2000 && inc.sum("tcp_closed") >= 2000 ? (out, inc) : nil
        }
        let pid = Int(getpid())
        var wrong = mismatches(expected, outgoing: outgoing, incoming: incoming)
        if mode.isEBPF {
            for (side, flows) in [("out", outgoing), ("in", incoming)] where !flows.allSatisfy({ $0.int("pid") == pid })
            {
                wrong.append("\(side): pids \(Set(flows.map { $0.int("pid") }))")
            }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
        #expect(outgoing.allSatisfy { $0["direction"] as? String == "outgoing" })
        #expect(incoming.allSatisfy { $0["direction"] as? String == "incoming" })
    }

    /// A connection of a few seconds whose client closes first: after `close()` the client's socket
    /// outlives its process as the kernel's time-wait remains (FIN_WAIT2, then TIME_WAIT) until the
    /// server closes. It is still one connection: established once and closed once at each end, and
    /// nothing is reported on its 4-tuple after the interval that closed it.
    @Test(arguments: CollectionMode.allCases)
    func clientClosingFirstIsOneConnection(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let connection = try TestConnection()
        defer { close(connection.listener) }
        let (clientPort, serverPort) = (Int(connection.clientPort), Int(connection.listenPort))
        // Three rounds, an interval apart: 1,234,567 bytes up and 765,432 down in all.
        let rounds = [(411_522, 255_144), (411_522, 255_144), (411_523, 255_144)]
        var mark = before
        for (up, down) in rounds {
            try connection.exchange(clientBytes: up, serverBytes: down)
            mark = try await agent.waitForIntervals(after: mark)
        }
        close(connection.client)
        #expect(try TestSocket.receiveToEOF(connection.server) == 0)
        // The client's socket, orphaned in FIN_WAIT2, is listed by two reads before the server closes.
        mark = try await agent.waitForIntervals(after: mark, count: 2)
        close(connection.server)

        func ends(_ all: [(UInt64, [[String: Any]])]) -> (out: [(UInt64, [String: Any])], in: [(UInt64, [String: Any])])
        {
            let flows = all.flatMap { seq, conns in conns.map { (seq, $0) } }.filter {
                $0.1["type"] as? String == "tcp"
            }
            return (
                flows.filter { $0.1.port("laddr") == clientPort && $0.1.port("raddr") == serverPort },
                flows.filter { $0.1.port("laddr") == serverPort && $0.1.port("raddr") == clientPort }
            )
        }
        // Both ends closed, then two more intervals in which a second record would show up.
        let closedBy = try await waitFor("both ends reported closed") { () async throws -> UInt64? in
            let (out, inc) = ends(try await agent.intervals(after: before))
            guard out.map(\.1).sum("tcp_closed") >= 1, inc.map(\.1).sum("tcp_closed") >= 1 else { return nil }
            return try await agent.latestSequence()
        }
        _ = try await agent.waitForIntervals(after: closedBy, count: 2)
        let (out, inc) = ends(try await agent.intervals(after: before))
        let (up, down) = (rounds.map(\.0).reduce(0, +), rounds.map(\.1).reduce(0, +))
        for (side, flows, sent, received) in [("client", out, up, down), ("server", inc, down, up)] {
            let records = flows.map(\.1)
            #expect(records.sum("tcp_established") == 1, "\(side): established \(records.sum("tcp_established"))")
            #expect(records.sum("tcp_closed") == 1, "\(side): closed \(records.sum("tcp_closed"))")
            #expect(records.sum("bytes_sent") == sent && records.sum("bytes_received") == received, "\(side) bytes")
            #expect(
                records.allSatisfy { $0.int("pid") == Int(getpid()) },
                "\(side) pids \(records.map { $0["pid"] ?? "nil" })")
            let closedIn = flows.filter { $0.1.int("tcp_closed") > 0 }.map(\.0).min() ?? 0
            let after = flows.filter { $0.0 > closedIn }
            #expect(
                after.isEmpty, "\(side): \(after.count) record(s) after its close in #\(closedIn): \(after.map(\.1))")
        }
    }

    /// Servers that close first while their clients stay open: each server socket, closed by its
    /// process, is destroyed as soon as its client acknowledges its FIN, before the client's own
    /// FIN comes; its destroy notification cannot say whether `bytes_received` counts that FIN
    /// (eBPF-less mode settles it from the wire, or without packet capture from the client's
    /// socket). Every end is exact, and nothing is counted as assumed.
    @Test(arguments: CollectionMode.allCases.map { ($0, true) } + [(.ebpfless, false)])
    func serversClosingBeforeTheirClientsAreExact(mode: CollectionMode, capture: Bool) async throws {
        let agent = try await mode.startAgent(capture ? [:] : ["DD_CNM_PACKET_CAPTURE": "false"])
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let (listener, serverPort) = try TestSocket.listener()
        defer { close(listener) }
        var expected: ExpectedByClientPort = [:]
        var clients: [(fd: Int32, port: UInt16)] = []
        defer { for c in clients { close(c.fd) } }
        for i in 0..<20 {
            let (up, down) = (100 + i, 300 + 7 * i)
            let client = try TestSocket.connect(port: serverPort)
            let server = try TestSocket.accept(listener)
            try TestSocket.exchange(client, server, clientBytes: up, serverBytes: down)
            close(server)
            #expect(try TestSocket.receiveToEOF(client) == 0)
            let port = try TestSocket.localPort(client)
            clients.append((client, port))
            expected[Int(port)] = (up, down, 1)
        }
        // Every server socket has become its time-wait remains waiting for the client's FIN
        // (FIN_WAIT2 in /proc/net/tcp): the full socket is gone, its client has not closed yet.
        _ = try await waitFor("every server socket waiting for its client's FIN") { () -> Bool? in
            let waiting = Self.tcpEnds(in: "05", localPort: serverPort)
            return clients.allSatisfy { waiting.contains($0.port) } ? true : nil
        }
        for c in clients { close(c.fd) }
        clients = []
        let (outgoing, incoming) = try await waitFor("all 40 ends reported closed") {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before)
            let out = all.filter { $0.port("raddr") == Int(serverPort) && $0["type"] as? String == "tcp" }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) && $0["type"] as? String == "tcp" }
            return out.sum("tcp_closed") >= 20 && inc.sum("tcp_closed") >= 20 ? (out, inc) : nil
        }
        let wrong = mismatches(expected, outgoing: outgoing, incoming: incoming)
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
        if !mode.isEBPF {
            // A report's counts reach /status with the next pass: one more interval.
            _ = try await agent.waitForIntervals(after: try await agent.latestSequence())
            let tracker = try await agent.json("/status")["tracker"] as? [String: Any] ?? [:]
            #expect(tracker.int("peer_fin_assumed") == 0, "\(tracker)")
        }
    }

    /// The remote ports of IPv4 TCP sockets on `localPort` in `state` (hex, as /proc/net/tcp has it).
    static func tcpEnds(in state: String, localPort: UInt16) -> Set<UInt16> {
        // Read to its end: /proc/net/tcp hands out a page of sockets per read, which
        // String(contentsOfFile:) stops after.
        let data = FileHandle(forReadingAtPath: "/proc/net/tcp")?.readDataToEndOfFile() ?? Data()
        let table = String(decoding: data, as: UTF8.self)
        var ports = Set<UInt16>()
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, fields[3] == state,
                let local = fields[1].split(separator: ":").last, UInt16(local, radix: 16) == localPort,
                let remote = fields[2].split(separator: ":").last, let port = UInt16(remote, radix: 16)
            else { continue }
            ports.insert(port)
        }
        return ports
    }

    /// A connection that stays open: each interval reports exactly what moved in it.
    @Test(arguments: CollectionMode.allCases)
    func heldOpenConnectionHasExactDeltas(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let connection = try TestConnection(on: TestSocket.loopback(v6: true))
        defer { close(connection.listener) }
        let (client, server, serverPort) = (connection.client, connection.server, connection.listenPort)
        defer {
            close(client)
            close(server)
        }
        let clientPort = Int(connection.clientPort)
        var mark = try await agent.waitForIntervals(after: try await agent.latestSequence())
        for (up, down) in [(70_001, 3_001), (5, 90_017), (123_457, 1)] {
            let start = mark
            try connection.exchange(clientBytes: up, serverBytes: down)
            mark = try await agent.waitForIntervals(after: start)
            let all = try await agent.connections(after: start)
            let out = all.filter { $0.port("laddr") == clientPort && $0.port("raddr") == Int(serverPort) }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) && $0.port("raddr") == clientPort }
            #expect(out.sum("bytes_sent") == up && out.sum("bytes_received") == down, "client \(out)")
            #expect(inc.sum("bytes_sent") == down && inc.sum("bytes_received") == up, "server \(inc)")
            #expect(out.sum("tcp_closed") == 0 && inc.sum("tcp_closed") == 0)
        }
    }

    /// Datagrams of known sizes each way, on a connected client and on an unconnected one; the server
    /// answers with sendto() to the address recvfrom() gave. UDP has no kernel counters without eBPF:
    /// there packet capture gives each 4-tuple its datagrams.
    @Test(arguments: CollectionMode.allCases, [true, false])
    func udpDatagramsAreExact(mode: CollectionMode, connected: Bool) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let server = try TestDatagramSocket()
        let client = try TestDatagramSocket()
        defer {
            server.close()
            client.close()
        }
        if connected { try client.connect(port: server.port) }
        var sent = DatagramTally()
        var answered = DatagramTally()
        for i in 0..<25 {
            try datagramRoundTrip(
                client, server, up: 100 + i, down: 1000 + 7 * i, connected: connected, client: &sent,
                server: &answered)
        }
        let up = sent.bytesSent
        let down = answered.bytesSent
        let (out, inc) = try await waitFor("both UDP ends with every byte") {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before).filter { $0["type"] as? String == "udp" }
            let out = all.filter { $0.port("laddr") == Int(client.port) && $0.port("raddr") == Int(server.port) }
            let inc = all.filter { $0.port("laddr") == Int(server.port) && $0.port("raddr") == Int(client.port) }
            return out.sum("bytes_sent") >= up && inc.sum("bytes_sent") >= down ? (out, inc) : nil
        }
        // One more interval: nothing is counted twice later.
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence())
        let again = try await agent.connections(after: before).filter { $0["type"] as? String == "udp" }
        #expect(again.filter { $0.port("laddr") == Int(client.port) }.sum("bytes_sent") == up)
        #expect(out.sum("bytes_sent") == up && out.sum("bytes_received") == sent.bytesReceived)
        #expect(out.sum("packets_sent") == sent.packetsSent && out.sum("packets_received") == sent.packetsReceived)
        #expect(inc.sum("bytes_sent") == down && inc.sum("bytes_received") == answered.bytesReceived)
        #expect(
            inc.sum("packets_sent") == answered.packetsSent && inc.sum("packets_received") == answered.packetsReceived)
        #expect((out + inc).allSatisfy { $0["counters_known"] as? Bool == true })
        let pid = Int(getpid())
        #expect((out + inc).allSatisfy { $0.int("pid") == pid })
    }

    /// Short-lived connected UDP clients one after another, as a resolver or a metrics client makes them: the
    /// kernel soon gives a closed socket's memory to the next, and each socket's bytes must stay its own.
    @Test(arguments: CollectionMode.allCases)
    func udpSocketsOneAfterAnotherKeepTheirOwnBytes(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let server = try TestDatagramSocket()
        defer { server.close() }
        var expected: [Int: (sent: Int, received: Int)] = [:]
        var answered = DatagramTally()
        for i in 0..<300 {
            let client = try TestDatagramSocket()
            defer { client.close() }
            try client.connect(port: server.port)
            var tally = DatagramTally()
            try datagramRoundTrip(
                client, server, up: 64 + i % 50, down: 500 + i, connected: true, client: &tally, server: &answered)
            let port = Int(client.port)
            expected[port, default: (0, 0)].sent += tally.bytesSent
            expected[port, default: (0, 0)].received += tally.bytesReceived
        }
        let total = expected.values.reduce(0) { $0 + $1.sent }
        let out = try await waitFor("every client's datagrams") { () async throws -> [[String: Any]]? in
            let out = try await agent.connections(after: before).filter {
                $0["type"] as? String == "udp" && $0.port("raddr") == Int(server.port)
                    && expected[$0.port("laddr")] != nil
            }
            return out.sum("bytes_sent") >= total ? out : nil
        }
        // One more interval: a late record would add to a socket that is done.
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence())
        let byPort = Dictionary(grouping: out) { $0.port("laddr") }
        let wrong = expected.compactMap { port, e -> String? in
            let flows = byPort[port] ?? []
            let got = (flows.sum("bytes_sent"), flows.sum("bytes_received"))
            return got == (e.sent, e.received) ? nil : "\(port): \(got.0)/\(got.1) != \(e.sent)/\(e.received)"
        }
        #expect(wrong.isEmpty, "\(wrong.count) of \(expected.count) clients wrong: \(wrong.prefix(5))")
        #expect(out.sum("bytes_sent") == total)
    }

    /// A connect to a closed port is refused (111); a reset on an open connection is 104 for the side
    /// it arrives at. In eBPF-less mode only packet capture says so, with or without destroy
    /// notifications.
    @Test(
        arguments: zip(
            [CollectionMode.sockLength, .kernelCounters, .ebpfless, .ebpfless], [true, true, true, false]))
    func refusedAndResetConnectionsAreFailures(mode: CollectionMode, destroyNotifications: Bool) async throws {
        let agent = try await mode.startAgent(["DD_CNM_DESTROY_NOTIFICATIONS": "\(destroyNotifications)"])
        defer { agent.stop() }
        if !mode.isEBPF {
            let capture = try await agent.json("/status").component("capture")
            try #require(capture.state == "on", "capture: \(capture)")
        }
        let before = try await agent.latestSequence()
        let closedPort = try freePort()
        for _ in 0..<20 {
            #expect(throws: (any Error).self) {
                try TestSocket.connect(port: closedPort)
            }
        }
        let connection = try TestConnection()
        defer { close(connection.listener) }
        let (client, server, serverPort) = (connection.client, connection.server, connection.listenPort)
        let clientPort = Int(connection.clientPort)
        try TestSocket.send(client, count: 10)
        try TestSocket.receive(server, count: 10)
        // Closing with a zero linger sends a reset instead of a FIN.
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(server, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(server)
        #expect(throws: (any Error).self) { _ = try TestSocket.receiveToEOF(client) }
        close(client)

        let (refused, reset) = try await waitFor("the refused and the reset connections") {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before)
            let refused = all.filter { $0.port("raddr") == Int(closedPort) }
            let reset = all.filter { $0.port("laddr") == clientPort && $0.port("raddr") == Int(serverPort) }
            return refused.failures()["111"] == 20 && !reset.failures().isEmpty ? (refused, reset) : nil
        }
        #expect(refused.failures() == ["111": 20])
        #expect(refused.sum("tcp_established") == 0 && refused.sum("tcp_closed") == 0)
        #expect(reset.failures() == ["104": 1])
        #expect(reset.sum("bytes_sent") == 10 && reset.sum("tcp_established") == 1 && reset.sum("tcp_closed") == 1)
    }

    /// A connect into a namespace that drops SYNs, with one SYN retry: timed out (110).
    @Test(arguments: CollectionMode.ebpf)
    func connectToDroppedSYNsTimesOut(mode: CollectionMode) async throws {
        let lab = try NetworkLab()
        defer { try? lab.close() }
        try lab.dropSYNs(in: .b, toPort: 9)
        try lab.setSysctl(in: .a, "net.ipv4.tcp_syn_retries", "1")
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let server = lab.address(of: .b, v6: false)
        let outcome = try withNetworkNamespace(lab.path(of: .a)) { () -> Int32 in
            do {
                close(try TestSocket.connect(to: server, port: 9, timeout: .seconds(20)))
                return 0
            } catch let error as SystemCallError {
                return error.errno
            }
        }
        #expect(outcome == ETIMEDOUT, "ground truth: the connect itself timed out")
        let flows = try await waitFor("the timed-out connection") { () async throws -> [[String: Any]]? in
            let mine = try await agent.connections(after: before).filter {
                $0.port("raddr") == 9 && $0.address("raddr")["ip"] as? String == server
            }
            return mine.failures().isEmpty ? nil : mine
        }
        #expect(flows.failures() == ["110": 1])
    }

    /// A transfer across a lossy link: the retransmits reported are the kernel's own total for that
    /// socket, and there are some.
    @Test(arguments: CollectionMode.ebpf)
    func retransmitsMatchTheKernel(mode: CollectionMode) async throws {
        let lab = try NetworkLab()
        defer { try? lab.close() }
        try lab.dropRandomly(in: .b, oneIn: 20)
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let size = 2_000_000
        let (listener, client, server, port, clientPort) = try lab.connectAcross()
        defer { close(listener) }
        #expect(try TestSocket.transfer(size, from: client, to: server, timeout: .seconds(60)) == size)
        // Once the client's FIN is acknowledged (FIN_WAIT2) nothing of it can be retransmitted any more.
        let info = try waitForSync("the client's FIN acknowledged") {
            let info = try kernelTCPInfo(fd: client)
            return info.tcpi_state == 5 ? info : nil
        }
        close(server)
        close(client)
        let flows = try await waitFor("the client's connection closed") { () async throws -> [[String: Any]]? in
            let mine = try await agent.connections(after: before).filter {
                $0.port("laddr") == clientPort && $0.port("raddr") == Int(port)
            }
            return mine.sum("tcp_closed") >= 1 ? mine : nil
        }
        #expect(info.tcpi_total_retrans > 0, "the lossy link made the kernel retransmit")
        #expect(flows.sum("retransmits") == Int(info.tcpi_total_retrans))
        #expect(flows.sum("bytes_sent") == size)
    }

    /// Timeouts, out-of-order arrivals and ECN on a lossy link with ECN on: each end's reported TCP-quality
    /// counts are the kernel's own totals for that socket, and the timeouts are really there.
    @Test(arguments: CollectionMode.allCases)
    func tcpQualityMatchesTheKernel(mode: CollectionMode) async throws {
        let lab = try NetworkLab()
        defer { try? lab.close() }
        for side in NetworkLab.Side.allCases { try lab.setSysctl(in: side, "net.ipv4.tcp_ecn", "1") }
        // Without eBPF the agent finds namespaces through the processes in them.
        let residents = try NetworkLab.Side.allCases.map { try lab.resident(in: $0) }
        defer { residents.forEach(NetworkLab.stop) }
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let (listener, client, server, port, clientPort) = try lab.connectAcross()
        defer { close(listener) }
        // Seen before the outage, so that every mode follows the sockets from their first counts.
        let before = try await agent.latestSequence()
        _ = try await agent.waitForIntervals(after: try await agent.waitForIntervals(after: before))

        // An outage: every data segment to the server is lost until the client has timed out twice.
        try lab.dropRandomly(in: .b, oneIn: 1)
        let first = [UInt8](repeating: 0x33, count: 1000)
        #expect(first.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == 1000)
        _ = try waitForSync("two retransmission timeouts", timeout: .seconds(20)) {
            try kernelTCPInfo(fd: client).tcpi_total_rto >= 2 ? true : nil
        }
        try lab.removeDropRules(in: .b)
        // Then a lossy link: later segments arrive before the lost ones they follow.
        try lab.dropRandomly(in: .b, oneIn: 20)
        let size = 2_000_000
        #expect(try TestSocket.transfer(size, from: client, to: server, timeout: .seconds(60)) == size + 1000)
        let clientInfo = try waitForSync("the client's FIN acknowledged") {
            let info = try kernelTCPInfo(fd: client)
            return info.tcpi_state == 5 ? info : nil
        }
        // The server read everything and nothing reaches it any more; its FIN crosses no drop rule.
        let serverInfo = try kernelTCPInfo(fd: server)
        close(server)
        close(client)
        func end(_ local: Int, _ remote: Int, _ what: String) async throws -> [[String: Any]] {
            try await waitFor(what) { () async throws -> [[String: Any]]? in
                let mine = try await agent.connections(after: before).filter {
                    $0.port("laddr") == local && $0.port("raddr") == remote
                }
                return mine.sum("tcp_closed") >= 1 ? mine : nil
            }
        }
        let clientFlows = try await end(clientPort, Int(port), "the client's connection closed")
        let serverFlows = try await end(Int(port), clientPort, "the server's connection closed")

        #expect(clientInfo.tcpi_total_rto >= 2, "the outage made the client time out")
        #expect(serverInfo.tcpi_rcv_ooopack > 0, "the lossy link delivered segments out of order")
        for (flows, info, side) in [(clientFlows, clientInfo, "client"), (serverFlows, serverInfo, "server")] {
            #expect(flows.sum("tcp_rto_count") == Int(info.tcpi_total_rto), "\(side) timeouts")
            #expect(flows.sum("tcp_reord_seen") == Int(info.tcpi_reord_seen), "\(side) reordering")
            #expect(flows.sum("tcp_rcv_ooo_pack") == Int(info.tcpi_rcv_ooopack), "\(side) out of order")
            #expect(flows.sum("tcp_delivered_ce") == Int(info.tcpi_delivered_ce), "\(side) CE marks")
            #expect(info.tcpi_options & 8 != 0, "ground truth: the \(side) negotiated ECN")
            #expect(flows.contains { $0["tcp_ecn_negotiated"] as? Bool == true }, "\(side) ECN")
        }
        #expect(clientFlows.sum("bytes_sent") == size + 1000)
        #expect(serverFlows.sum("bytes_received") == size + 1000)
    }

    /// More connections than the table holds: the agent goes on and says so. eBPF mode's kernel
    /// table counts what it could not take; past the socket table, eBPF-less mode follows sockets
    /// by their counts only.
    @Test(arguments: CollectionMode.allCases)
    func tableOverflowIsCountedAndSurvived(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent(["DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS": "64"])
        defer { agent.stop() }
        let (listener, port) = try TestSocket.listener()
        defer { close(listener) }
        var sockets: [Int32] = []
        defer { sockets.forEach { close($0) } }
        for _ in 0..<150 {
            sockets.append(try TestSocket.connect(port: port))
            sockets.append(try TestSocket.accept(listener))
        }
        for s in sockets { try TestSocket.send(s, count: 1) }
        let status = try await waitFor("the overflow counted in /status") { () async throws -> [String: Any]? in
            let status = try await agent.json("/status")
            let problems = status["problems"] as? [String: [String: Any]] ?? [:]
            let counted = (problems["ebpf_table_full"]?["count"] as? NSNumber)?.intValue ?? 0
            let tracker = status["tracker"] as? [String: Any] ?? [:]
            let dropped = (tracker["dropped_table_full"] as? NSNumber)?.intValue ?? 0
            let countsOnly = (tracker["counted_only"] as? NSNumber)?.intValue ?? 0
            return counted > 0 || dropped > 0 || (mode == .ebpfless && countsOnly > 0) ? status : nil
        }
        #expect(status["healthy"] as? Bool == true)
        let seq = try await agent.waitForIntervals(after: try await agent.latestSequence())
        #expect(seq > 0)
        #expect(try await agent.get("/healthz").status == 200)
    }
}
