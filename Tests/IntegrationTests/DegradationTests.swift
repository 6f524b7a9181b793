import CNMTestSupport
import Foundation
import Glibc
import Testing

/// Bad input around the agent costs what it must and nothing more: it keeps reporting.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: the agent reads every process's sockets"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (swift build): .build/debug/cnm-agent")
)
struct DegradationTests {
    /// A stand-in Docker daemon on loopback answers every request with the same status and body.
    @Test(arguments: [
        (500, "{\"message\":\"boom\"}"), (200, "this is not json"), (200, "[{\"Id\": \"abc\", \"Names\""),
    ])
    func dockerAnsweringGarbageCostsOnlyTheTags(status: Int, body: String) async throws {
        let docker = try ScriptedHTTPServer(answering: .http(status: status, body: body))
        // The mode the agent picks by itself.
        let agent = try AgentProcess(environment: ["DOCKER_HOST": "tcp://127.0.0.1:\(docker.port)"])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        let before = try await agent.latestSequence()

        let connection = try TestConnection()
        defer { close(connection.listener) }
        let (client, server, port) = (connection.client, connection.server, connection.listenPort)
        try TestSocket.send(client, count: 1234)
        try TestSocket.receive(server, count: 1234)
        // Intervals are gathered as they come: the agent keeps a bounded number of connections, so
        // on a busy host an early interval may be gone by the time the last one is reported.
        var intervals: [UInt64: [[String: Any]]] = [:]
        let seen = try await waitFor("3 intervals after #\(before)") { () async throws -> UInt64? in
            for (sequence, connections) in try await agent.intervals(after: before) {
                intervals[sequence] = connections
            }
            let latest = intervals.keys.max() ?? 0
            return latest >= before + 3 ? latest : nil
        }
        close(client)
        close(server)

        let sent = intervals.values.joined()
            .filter { $0.port("raddr") == Int(port) }
            .map { $0.int("bytes_sent") }.reduce(0, +)
        #expect(sent == 1234, "flows are reported without container tags")
        let problems = try await agent.json("/status")["problems"] as? [String: Any] ?? [:]
        #expect(
            problems.keys.contains { $0.hasPrefix("docker_") }, "the Docker failure is counted in /status: \(problems)")
        #expect(seen >= before + 3)
        let warnings = agent.log.split(separator: "\n").filter { $0.contains("no container tags") }
        #expect(warnings.count == 1, "logged once, not per refresh: \(agent.log)")
    }

    /// Network namespaces created and deleted 20 times a second while the agent reads them all (each
    /// lives 0.2 s in a process of its own, as short-lived containers do): the agent keeps reporting
    /// exact bytes, holds no namespace it no longer needs (its fd count comes back), and what it
    /// could not read in time is counted, not fatal.
    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"), "needs unshare (util-linux)"),
        arguments: [CollectionMode.sockLength, .ebpfless])
    func namespaceChurnLeavesNoFdsBehind(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let agentPID = agent.process.processIdentifier
        func fds() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(agentPID)/fd").count) ?? -1 }
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 2)
        let before = fds()

        // 200 namespaces over 10 s, at most a handful alive at once.
        var children: [Process] = []
        for _ in 0..<200 {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            child.arguments = ["--net", "--", "/bin/sleep", "0.2"]
            try child.run()
            children.append(child)
            try await Task.sleep(for: .milliseconds(50))
            children.removeAll { !$0.isRunning }
        }
        for child in children { child.waitUntilExit() }

        // A connection after the churn is still counted exactly.
        let sequence = try await agent.latestSequence()
        let connection = try TestConnection()
        defer { close(connection.listener) }
        try TestSocket.send(connection.client, count: 4321)
        try TestSocket.receive(connection.server, count: 4321)
        let port = connection.listenPort
        let sent = try await waitFor("the connection reported") { () async throws -> Int? in
            let total = try await agent.connections(after: sequence).filter { $0.port("raddr") == Int(port) }
                .sum("bytes_sent")
            return total == 4321 ? total : nil
        }
        close(connection.client)
        close(connection.server)
        #expect(sent == 4321)
        // Two more intervals: every namespace of the churn has been let go.
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 2)
        let after = fds()
        #expect(before > 0 && after <= before + 2, "fds before the churn \(before), after \(after)")
        #expect(agent.process.isRunning)
        let status = try await agent.json("/status")
        #expect(status["mode"] as? String == (mode.isEBPF ? "ebpf" : "ebpfless"))
    }

    /// Where destroy notifications cannot be had, sampling keeps every byte of a connection that lives
    /// across a sample.
    @Test func withoutDestroyNotificationsItSamplesAndSaysSo() async throws {
        let agent = try AgentProcess(environment: [
            "DD_CNM_DESTROY_NOTIFICATIONS": "false", "DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true",
        ])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        let status = try await agent.json("/status")
        let closed = status.component("closed_connections")
        #expect(closed.state == "sampled", "\(closed)")

        let before = try await agent.latestSequence()
        let connection = try TestConnection()
        defer { close(connection.listener) }
        let (client, server, port) = (connection.client, connection.server, connection.listenPort)
        try TestSocket.send(client, count: 4321)
        try TestSocket.receive(server, count: 4321)
        // Held across a sample, the bytes are seen before the close.
        _ = try await agent.waitForIntervals(after: before, count: 2)
        close(client)
        close(server)
        let connections = try await waitFor("the closed connection") { () async throws -> [[String: Any]]? in
            let all = try await agent.connections(after: before).filter { $0.port("raddr") == Int(port) }
            return all.map { $0.int("tcp_closed") }.reduce(0, +) >= 1 ? all : nil
        }
        #expect(connections.map { $0.int("bytes_sent") }.reduce(0, +) == 4321)
    }
}
