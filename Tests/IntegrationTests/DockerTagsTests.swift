import CNMTestSupport
import Foundation
import Testing

extension Dictionary where Key == String, Value == Any {
    var remoteTags: [String] { self["remote_tags"] as? [String] ?? [] }
}

/// Who is talking to whom, on a real dockerd: containers on a user-defined bridge network, one on
/// the host network and one that lives under a second, each flow tagged at both ends; an excluded
/// container's flows left out.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: the agent reads every namespace's sockets"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (make build): .build/debug/cnm-agent"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)")
)
struct DockerTagsTests {
    @Test(arguments: [CollectionMode.sockLength, .ebpfless])
    func everyFlowIsTaggedAtBothEnds(mode: CollectionMode) async throws {
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let network = "cnm-tg-\(suffix)"
        let server = "cnm-tg-srv-\(suffix)"
        let client = "cnm-tg-cli-\(suffix)"
        let hostClient = "cnm-tg-host-\(suffix)"
        let brief = "cnm-tg-brief-\(suffix)"
        let excluded = "cnm-tg-excl-\(suffix)"
        defer {
            _ = try? Environment.docker("rm", "-f", server, client, hostClient, brief, excluded)
            _ = try? Environment.docker("network", "rm", network)
        }
        let agent = try await mode.startAgent([
            "DD_DOCKER_LABELS_AS_TAGS": #"{"com.example.team": "team"}"#,
            "DD_DOCKER_ENV_AS_TAGS": #"{"TIER": "tier"}"#,
            "DD_CONTAINER_EXCLUDE": "name:^cnm-tg-excl-",
        ])
        defer { agent.stop() }
        let before = try await agent.latestSequence()

        try Environment.docker("network", "create", network)
        // Serves every connection a line and keeps it open 2 s, so both ends are seen alive.
        let serverID = try Environment.docker(
            "run", "-d", "--name", server, "--network", network, "-p", "127.0.0.1::8080",
            "--label", "com.datadoghq.tags.service=inventory", "--label", "com.docker.compose.service=api",
            "--label", "com.docker.compose.project=shop", "-e", "DD_VERSION=1.4.2", "-e", "TIER=backend",
            "cnm-test/busybox:latest", "sh", "-c",
            "printf '#!/bin/sh\\necho hello\\nsleep 2\\n' > /serve; chmod +x /serve; nc -ll -p 8080 -e /serve"
        )
        try await waitUntilListening(server, port: 8080)
        let serverIP = try Environment.docker(
            "inspect", "-f", "{{(index .NetworkSettings.Networks \"\(network)\").IPAddress}}", server)
        let clientID = try Environment.docker(
            "run", "-d", "--name", client, "--network", network, "--label", "com.example.team=payments",
            "cnm-test/busybox:latest", "sh", "-c", "sleep 3 | nc \(server) 8080; sleep 30"
        )
        let hostID = try Environment.docker(
            "run", "-d", "--name", hostClient, "--network", "host",
            "cnm-test/busybox:latest", "sh", "-c", "sleep 3 | nc \(serverIP) 8080; sleep 30"
        )
        // Lives well under a second: connects and exits at once (stdin is empty), then is removed.
        // Only eBPF mode sees who owned a socket that short-lived.
        var briefID: String?
        if mode.isEBPF {
            try Environment.docker(
                "run", "--name", brief, "--network", network, "cnm-test/busybox:latest",
                "sh", "-c", "nc \(server) 8080 </dev/null")
            briefID = try Environment.docker("inspect", "-f", "{{.Id}}", brief)
            _ = try Environment.docker("rm", "-f", brief)
        }
        try Environment.docker(
            "run", "-d", "--name", excluded, "--network", network, "cnm-test/busybox:latest",
            "sh", "-c", "sleep 3 | nc \(server) 8080; sleep 30")

        let serverTags = [
            "container_name:\(server)", "container_id:\(serverID)", "service:inventory", "compose_service:api",
            "compose_project:shop", "version:1.4.2", "tier:backend", "short_image:busybox",
        ]
        let clients = Set([clientID, hostID] + (briefID.map { [$0] } ?? []))
        let flows = try await waitFor("every client's flows, closed and tagged", timeout: .seconds(40)) {
            () async throws -> [[String: Any]]? in
            let all = try await agent.connections(after: before)
            let closedFrom = Set(
                all.filter { $0.port("raddr") == 8080 && $0.int("tcp_closed") > 0 }
                    .compactMap { $0.address("laddr")["container_id"] as? String })
            return clients.isSubset(of: closedFrom) ? all : nil
        }
        let served = flows.filter {
            $0.port("laddr") == 8080 && $0.address("laddr")["container_id"] as? String == serverID
        }
        for flow in served {
            for tag in serverTags { #expect(flow.tags.contains(tag), "server end: \(flow.tags)") }
        }
        func outgoing(from id: String) -> [[String: Any]] {
            flows.filter { $0.address("laddr")["container_id"] as? String == id && $0.port("raddr") == 8080 }
        }
        let fromClient = outgoing(from: clientID)
        #expect(!fromClient.isEmpty)
        for flow in fromClient {
            #expect(flow.tags.contains("container_name:\(client)") && flow.tags.contains("team:payments"))
            for tag in serverTags { #expect(flow.remoteTags.contains(tag), "remote end: \(flow.remoteTags)") }
            #expect(flow["intra_host"] as? Bool == true)
        }
        let fromHost = outgoing(from: hostID)
        #expect(!fromHost.isEmpty, "the host-network container's flow, by its cgroup")
        for flow in fromHost {
            #expect(flow.tags.contains("container_name:\(hostClient)"))
            #expect(flow.remoteTags.contains("container_name:\(server)"))
        }
        if let briefID {
            let fromBrief = outgoing(from: briefID)
            #expect(fromBrief.contains { $0.tags.contains("container_name:\(brief)") }, "short-lived: \(fromBrief)")
            #expect(served.contains { $0.remoteTags.contains("container_name:\(brief)") })
        }
        // The server's side of each client names that client.
        #expect(served.contains { $0.remoteTags.contains("container_name:\(client)") })
        #expect(served.contains { $0.remoteTags.contains("container_name:\(hostClient)") })

        // A host process reaching the server through its published port: the flow leads to the server.
        let published = try Environment.docker("port", server, "8080/tcp")
        let hostPort = try #require(published.split(separator: ":").last.flatMap { UInt16($0) }, "\(published)")
        let socket = try TestSocket.connect(port: hostPort)
        try TestSocket.receive(socket, count: 6)
        close(socket)
        let viaPort = try await waitFor("the flow to the published port") { () async throws -> [String: Any]? in
            try await agent.connections(after: before).first {
                $0.port("raddr") == Int(hostPort) && $0["direction"] as? String == "outgoing"
            }
        }
        #expect(viaPort.address("raddr")["container_id"] as? String == serverID, "\(viaPort)")
        #expect(viaPort.remoteTags.contains("container_name:\(server)"))

        // The excluded container connected too, but none of its flows is reported.
        let excludedID = try Environment.docker("inspect", "-f", "{{.Id}}", excluded)
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 2)
        let all = try await agent.connections(after: before)
        #expect(!all.contains { $0.address("laddr")["container_id"] as? String == excludedID })
        let events = try await agent.json("/status").component("docker_events")
        #expect(events.state == "connected" && events.counters["events", default: 0] > 0, "\(events)")
    }

    /// An awsvpc task on an ECS container instance: the task's address is an ENI a CNI plugin moved
    /// into the pause container's namespace, so Docker reports no address for any of its containers.
    /// Here a veth end in a `--network none` pause container stands in for the ENI. A host process
    /// connecting to it (served, and refused on a closed port) reaches the task's app container.
    @Test func aTaskAddressDockerDoesNotKnowLeadsToItsContainer() async throws {
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let pause = "cnm-eni-pause-\(suffix)"
        let app = "cnm-eni-app-\(suffix)"
        let hostEnd = "cnmh\(suffix.prefix(8))"
        defer {
            _ = try? Environment.docker("rm", "-f", app, pause)
            _ = try? NetworkLab.command("ip", ["link", "del", hostEnd])
        }
        let agent = try await CollectionMode.sockLength.startAgent([:])
        defer { agent.stop() }
        let before = try await agent.latestSequence()

        try Environment.docker(
            "run", "-d", "--name", pause, "--network", "none",
            "--label", "com.amazonaws.ecs.container-name=~internal~ecs~pause",
            "cnm-test/busybox:latest", "sleep", "600")
        let pid = try Environment.docker("inspect", "-f", "{{.State.Pid}}", pause)
        try NetworkLab.command("ip", ["link", "add", hostEnd, "type", "veth", "peer", "name", "eni0", "netns", pid])
        try NetworkLab.command("ip", ["addr", "add", "198.51.100.1/24", "dev", hostEnd])
        try NetworkLab.command("ip", ["link", "set", hostEnd, "up"])
        for step in [["addr", "add", "198.51.100.2/24", "dev", "eni0"], ["link", "set", "eni0", "up"]] {
            try NetworkLab.command("nsenter", ["-t", pid, "-n", "ip"] + step)
        }
        let appID = try Environment.docker(
            "run", "-d", "--name", app, "--network", "container:\(pause)", "cnm-test/busybox:latest", "sh", "-c",
            "printf '#!/bin/sh\\necho hello\\n' > /serve; chmod +x /serve; nc -ll -p 8080 -e /serve")
        try await waitUntilListening(app, port: 8080)
        // The agent reads the namespaces when it learns of the app container (its start event, or
        // the periodic listing), which may come after a first pair of connections: connect again
        // each second until a served and a refused flow are reported with the container's name.
        let flows = try await waitFor(
            "both flows to the task's address, its container named", timeout: .seconds(40),
            every: .seconds(1)
        ) { () async throws -> [[String: Any]]? in
            let served = try TestSocket.connect(to: "198.51.100.2", port: 8080)
            var line = [UInt8](repeating: 0, count: 6)
            #expect(recv(served, &line, 6, Int32(MSG_WAITALL)) == 6)
            close(served)
            #expect(throws: SystemCallError.self) { try TestSocket.connect(to: "198.51.100.2", port: 9) }
            let all = try await agent.connections(after: before).filter {
                $0.address("raddr")["ip"] as? String == "198.51.100.2" && $0["direction"] as? String == "outgoing"
            }
            let named = all.filter { $0.remoteTags.contains("container_name:\(app)") }
            return Set(named.map { $0.port("raddr") }) == [8080, 9] ? named : nil
        }
        for flow in flows {
            #expect(flow.address("raddr")["container_id"] as? String == appID)
            #expect(flow["intra_host"] as? Bool == true)
            #expect(!flow.remoteTags.contains("container_name:\(pause)"))
        }
        let refused = flows.filter { $0.port("raddr") == 9 }
        #expect(refused.failures()["111", default: 0] >= 1 && refused.sum("tcp_established") == 0)
    }
}
