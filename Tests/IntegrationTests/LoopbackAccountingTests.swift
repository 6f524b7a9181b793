import CNMTestSupport
import Foundation
import Glibc
import Testing

/// The agent, run as a real process, reports exactly what a loopback connection carried.
@Suite(.serialized, .enabled(if: Environment.isRoot, "needs root: the agent reads every process's sockets"))
struct LoopbackAccountingTests {
    @Test(
        .enabled(if: Environment.hasAgentBinary, "build the agent first (swift build): .build/debug/cnm-agent"),
        arguments: [false, true]
    )
    func exactBytesAtBothEndsAcrossIntervals(v6: Bool) async throws {
        let agent = try AgentProcess(environment: ["DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true"])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        let before = try await agent.latestSequence()

        let connection = try TestConnection(on: TestSocket.loopback(v6: v6))
        defer { close(connection.listener) }
        let (client, server, serverPort) = (connection.client, connection.server, connection.listenPort)
        let clientPort = try TestSocket.localPort(client)

        // Two rounds, each in its own interval, so the deltas of an open connection are summed.
        let rounds = [(a: 40_001, b: 7_919), (a: 25_013, b: 30_011)]
        var seen = before
        for round in rounds {
            try connection.exchange(clientBytes: round.a, serverBytes: round.b)
            seen = try await agent.waitForIntervals(after: seen)
        }
        _ = shutdown(client, Int32(SHUT_WR))
        #expect(try TestSocket.receiveToEOF(server) == 0)
        close(server)
        #expect(try TestSocket.receiveToEOF(client) == 0)
        close(client)

        let a = rounds.map(\.a).reduce(0, +)
        let b = rounds.map(\.b).reduce(0, +)
        let pid = Int(getpid())
        // Wait until both ends are reported closed, then check the sums over every interval.
        let (outgoing, incoming) = try await waitFor("both ends reported closed") {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before)
            let out = all.filter { $0.port("laddr") == Int(clientPort) && $0.port("raddr") == Int(serverPort) }
            let inc = all.filter { $0.port("laddr") == Int(serverPort) && $0.port("raddr") == Int(clientPort) }
            let closed = out.map { $0.int("tcp_closed") }.reduce(0, +) + inc.map { $0.int("tcp_closed") }.reduce(0, +)
            return closed >= 2 ? (out, inc) : nil
        }
        func sum(_ entries: [[String: Any]], _ key: String) -> Int { entries.map { $0.int(key) }.reduce(0, +) }

        #expect(outgoing.count >= 2, "the open connection is reported in every interval it lived in")
        #expect(sum(outgoing, "bytes_sent") == a)
        #expect(sum(outgoing, "bytes_received") == b)
        #expect(sum(incoming, "bytes_sent") == b)
        #expect(sum(incoming, "bytes_received") == a)
        #expect(sum(outgoing, "tcp_established") == 1 && sum(incoming, "tcp_established") == 1)
        #expect(sum(outgoing, "tcp_closed") == 1 && sum(incoming, "tcp_closed") == 1)
        #expect(outgoing.allSatisfy { $0["direction"] as? String == "outgoing" })
        #expect(incoming.allSatisfy { $0["direction"] as? String == "incoming" })
        #expect(outgoing.allSatisfy { $0.int("pid") == pid } && incoming.allSatisfy { $0.int("pid") == pid })
        #expect(outgoing.allSatisfy { $0["family"] as? String == (v6 ? "v6" : "v4") && $0["type"] as? String == "tcp" })
        #expect(outgoing.allSatisfy { $0["intra_host"] as? Bool == true })
        #expect(sum(outgoing, "packets_sent") > 0 && sum(incoming, "packets_received") > 0)
        #expect(outgoing.contains { $0.int("rtt_us") > 0 })

        let status = try await agent.json("/status")
        #expect(status["mode"] as? String == "ebpfless")
        #expect(status.component("closed_connections").state == "destroy_notifications")
    }
}
