import CNMTestSupport
import Foundation
import Testing

/// Two real containers on a real dockerd: the server's connection is tagged with its container and
/// carries exactly the bytes of the file it served.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: the agent reads every namespace's sockets"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (swift build): .build/debug/cnm-agent"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)")
)
struct DockerAccountingTests {
    @Test(arguments: CollectionMode.allCases)
    func servedFileIsCountedExactlyAndTagged(mode: CollectionMode) async throws {
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let network = "cnm-it-\(suffix)"
        let serverName = "cnm-it-srv-\(suffix)"
        let clientName = "cnm-it-cli-\(suffix)"
        let size = 100_003
        defer {
            _ = try? Environment.docker("rm", "-f", serverName, clientName)
            _ = try? Environment.docker("network", "rm", network)
        }

        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()

        try Environment.docker("network", "create", network)
        // The server keeps the connection open for a moment after sending, so that the agent's
        // socket reads see it alive and can name its process (sock_diag has no pid of its own).
        let serverID = try Environment.docker(
            "run", "-d", "--name", serverName, "--network", network, "cnm-test/busybox:latest",
            "sh", "-c", "head -c \(size) /dev/zero > /f; (cat /f; sleep 2) | nc -l -p 8080"
        )
        try await waitUntilListening(serverName, port: 8080)
        let received = try Environment.docker(
            "run", "--name", clientName, "--network", network, "cnm-test/busybox:latest",
            "sh", "-c", "sleep 4 | nc \(serverName) 8080 | wc -c"
        )
        #expect(Int(received) == size, "ground truth: the client received the whole file")

        let served = try await waitFor("the server's connection reported closed", timeout: .seconds(30)) {
            () async throws -> [[String: Any]]? in
            let all = try await agent.connections(after: before)
            let mine = all.filter {
                $0.port("laddr") == 8080 && $0.address("laddr")["container_id"] as? String == serverID
            }
            return mine.map { $0.int("tcp_closed") }.reduce(0, +) >= 1 ? mine : nil
        }
        #expect(served.map { $0.int("bytes_sent") }.reduce(0, +) == size)
        #expect(served.map { $0.int("bytes_received") }.reduce(0, +) == 0)
        #expect(served.allSatisfy { $0["direction"] as? String == "incoming" })
        #expect(served.allSatisfy { $0.tags.contains("container_name:\(serverName)") })
        #expect(served.allSatisfy { $0.tags.contains("image_name:cnm-test/busybox") })
        #expect(served.allSatisfy { $0.tags.contains("container_id:\(serverID)") })
    }
}

/// Both ends of a connection between two locally built containers, in eBPF mode: each end is
/// attributed to its own container, and names the other one's as its remote.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: loads eBPF programs"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (make build): .build/debug/cnm-agent"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)")
)
struct DockerBothEndsTests {
    @Test(arguments: CollectionMode.ebpf)
    func bothEndsAreAttributedToTheirContainers(mode: CollectionMode) async throws {
        let agent = try await mode.startAgent()
        defer { agent.stop() }
        let before = try await agent.latestSequence()

        let pair = try await ContainerPair.start(prefix: "cnm-be", size: 54_321)
        defer { pair.remove() }
        let (serverID, clientID, size) = (pair.serverID, pair.clientID, pair.size)
        let (outgoing, incoming) = try await waitFor("both ends reported closed", timeout: .seconds(30)) {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await agent.connections(after: before)
            let out = all.filter {
                $0.address("laddr")["container_id"] as? String == clientID && $0.port("raddr") == 8080
            }
            let inc = all.filter {
                $0.address("laddr")["container_id"] as? String == serverID && $0.port("laddr") == 8080
            }
            return out.sum("tcp_closed") >= 1 && inc.sum("tcp_closed") >= 1 ? (out, inc) : nil
        }
        #expect(try await pair.delivered() == size, "ground truth: the server read every byte")
        #expect(outgoing.sum("bytes_sent") == size && incoming.sum("bytes_received") == size)
        #expect(outgoing.contains { $0.address("raddr")["container_id"] as? String == serverID })
        #expect(incoming.contains { $0.address("raddr")["container_id"] as? String == clientID })
        #expect(outgoing.allSatisfy { $0.tags.contains("container_name:\(pair.clientName)") })
        #expect(incoming.allSatisfy { $0.tags.contains("container_name:\(pair.serverName)") })
        #expect(outgoing.allSatisfy { $0["process_name"] as? String == "nc" })
    }
}
