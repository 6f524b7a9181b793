import CNMTestSupport
import Foundation
import Glibc
import Testing

/// eBPF-less mode as on Fargate, where no capability lets the agent receive destroy notifications:
/// the socket table is sampled, and packet capture in the agent's namespace counts what sampling
/// cannot see. Every connection must be reported once, with exact bytes.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: reads every process's sockets and opens an AF_PACKET socket"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (make build): .build/debug/cnm-agent")
)
struct CaptureAccountingTests {
    /// Starts the agent in eBPF-less mode and checks capture runs.
    func startAgent(destroyNotifications: Bool = false) async throws -> AgentProcess {
        let agent = try await CollectionMode.ebpfless.startAgent([
            "DD_CNM_DESTROY_NOTIFICATIONS": destroyNotifications ? "true" : "false"
        ])
        let capture = try await agent.json("/status").component("capture")
        guard capture.state == "on" else {
            agent.stop()
            throw TestFailure("capture is not on: \(capture)")
        }
        return agent
    }

    /// 500 connections that each live a few ms: connect, send, receive, close. Most open and close
    /// between two reads of the socket table, so only capture sees them; some are read once, alive,
    /// and vanish before the next read. Each is counted once, with its exact bytes each way.
    @Test func everyShortConnectionIsCountedOnceAndExactly() async throws {
        let agent = try await startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let (listener, serverPort) = try TestSocket.listener()
        defer { close(listener) }
        let expected = try makeShortConnections(500, to: listener, port: serverPort, linger: 2_000) { i in
            (1 + 37 * i, 5_003 - 9 * i)
        }
        let (outgoing, incoming) = try await waitFor("all 1,000 ends reported closed", timeout: .seconds(60)) {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before).filter { $0["type"] as? String == "tcp" }
            let out = all.filter { $0.port("raddr") == Int(serverPort) }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) }
            return out.sum("tcp_closed") >= 500 && inc.sum("tcp_closed") >= 500 ? (out, inc) : nil
        }
        // A second look a few intervals on: nothing is counted twice later.
        let settled = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 2)
        let all = try await agent.connections(after: before).filter { $0["type"] as? String == "tcp" }
        #expect(all.filter { $0.port("raddr") == Int(serverPort) }.count == outgoing.count, "as of #\(settled)")
        #expect(all.filter { $0.port("laddr") == Int(serverPort) }.count == incoming.count)

        let wrong = mismatches(expected, outgoing: outgoing, incoming: incoming)
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
        #expect(outgoing.sum("tcp_closed") == 500 && incoming.sum("tcp_closed") == 500)
        #expect(outgoing.allSatisfy { $0["direction"] as? String == "outgoing" })
        #expect(incoming.allSatisfy { $0["direction"] as? String == "incoming" })
        // The server side belongs to the listener's process; a client side no read listed has no
        // process (none is guessed), one a read listed has its own.
        let pid = Int(getpid())
        #expect(incoming.allSatisfy { $0.int("pid") == pid })
        #expect(outgoing.allSatisfy { $0["pid"] is NSNull || $0.int("pid") == pid })
        let unlisted = outgoing.filter { $0["pid"] is NSNull }.count
        #expect(unlisted > 0, "some connections were seen by capture alone")
        let status = try await agent.json("/status")
        let problems = status["problems"] as? [String: Any] ?? [:]
        #expect(problems["capture_ring_dropped"] == nil && problems["capture_table_full"] == nil, "\(problems)")
    }

    /// A connection open across several intervals is listed by every read and seen by capture all
    /// along: it is reported once, from the kernel's counters, with each interval's exact delta.
    @Test func aLongConnectionSeenByBothSourcesIsReportedOnce() async throws {
        let agent = try await startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()
        let connection = try TestConnection()
        defer { close(connection.listener) }
        let (client, server, serverPort) = (connection.client, connection.server, connection.listenPort)
        let clientPort = Int(connection.clientPort)
        let rounds = [(a: 70_001, b: 3_001), (a: 5, b: 90_017), (a: 123_457, b: 1)]
        var mark = try await agent.waitForIntervals(after: before)
        for round in rounds {
            let start = mark
            try connection.exchange(clientBytes: round.a, serverBytes: round.b)
            mark = try await agent.waitForIntervals(after: start)
            let all = try await agent.connections(after: start)
            let out = all.filter { $0.port("laddr") == clientPort && $0.port("raddr") == Int(serverPort) }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) && $0.port("raddr") == clientPort }
            #expect(out.sum("bytes_sent") == round.a && out.sum("bytes_received") == round.b, "client \(out)")
            #expect(inc.sum("bytes_sent") == round.b && inc.sum("bytes_received") == round.a, "server \(inc)")
        }
        _ = shutdown(client, Int32(SHUT_WR))
        #expect(try TestSocket.receiveToEOF(server) == 0)
        close(server)
        #expect(try TestSocket.receiveToEOF(client) == 0)
        close(client)
        let (out, inc) = try await waitFor("both ends reported closed") {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before)
            let out = all.filter { $0.port("laddr") == clientPort && $0.port("raddr") == Int(serverPort) }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) && $0.port("raddr") == clientPort }
            return out.sum("tcp_closed") + inc.sum("tcp_closed") >= 2 ? (out, inc) : nil
        }
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 2)
        let all = try await agent.connections(after: before)
        let outAll = all.filter { $0.port("laddr") == clientPort && $0.port("raddr") == Int(serverPort) }
        let inAll = all.filter { $0.port("laddr") == Int(serverPort) && $0.port("raddr") == clientPort }
        let a = rounds.map(\.a).reduce(0, +)
        let b = rounds.map(\.b).reduce(0, +)
        #expect(outAll.sum("bytes_sent") == a && outAll.sum("bytes_received") == b)
        #expect(inAll.sum("bytes_sent") == b && inAll.sum("bytes_received") == a)
        #expect(outAll.sum("tcp_established") == 1 && outAll.sum("tcp_closed") == 1)
        #expect(inAll.sum("tcp_established") == 1 && inAll.sum("tcp_closed") == 1)
        let pid = Int(getpid())
        #expect((outAll + inAll).allSatisfy { $0.int("pid") == pid }, "every row from the listed sockets")
        #expect(out.count <= outAll.count && inc.count <= inAll.count)
    }

    /// Turned off, capture says so, and the socket table is still read.
    @Test func turnedOffItSaysSo() async throws {
        let agent = try await CollectionMode.ebpfless.startAgent([
            "DD_CNM_PACKET_CAPTURE": "false", "DD_CNM_DESTROY_NOTIFICATIONS": "false",
        ])
        defer { agent.stop() }
        let status = try await agent.json("/status")
        let capture = status.component("capture")
        #expect(capture.state == "off" && capture.reason == "DD_CNM_PACKET_CAPTURE=false", "\(capture)")
        try await expectAHeldConnectionIsCounted(agent)
    }

    /// Without CAP_NET_RAW (a container without it in its set) capture is unavailable and says why;
    /// the socket table is still read.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs setpriv (util-linux)"))
    func withoutNetRawItSaysSoAndGoesOn() async throws {
        let agent = try AgentProcess(
            environment: ["DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true"],
            launcher: ["/usr/bin/setpriv", "--bounding-set", "-net_raw"])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        let capture = try await agent.json("/status").component("capture")
        #expect(capture.state == "unavailable" && capture.reason.hasPrefix("no CAP_NET_RAW"), "\(capture)")
        try await expectAHeldConnectionIsCounted(agent)
    }

    /// In eBPF mode the programs see every connection: capture does not run.
    @Test func offInEBPFMode() async throws {
        let agent = try await CollectionMode.sockLength.startAgent()
        defer { agent.stop() }
        let capture = try await agent.json("/status").component("capture")
        #expect(capture.state == "off", "\(capture)")
    }

    private func expectAHeldConnectionIsCounted(_ agent: AgentProcess) async throws {
        let before = try await agent.latestSequence()
        let connection = try TestConnection()
        defer { close(connection.listener) }
        let (client, server, port) = (connection.client, connection.server, connection.listenPort)
        defer {
            close(client)
            close(server)
        }
        try TestSocket.send(client, count: 4_321)
        try TestSocket.receive(server, count: 4_321)
        let sent = try await waitFor("the held connection's bytes") { () async throws -> Int? in
            let sent = try await agent.connections(after: before).filter { $0.port("raddr") == Int(port) }
                .sum("bytes_sent")
            return sent >= 4_321 ? sent : nil
        }
        #expect(sent == 4_321)
    }
}
