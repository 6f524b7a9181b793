import CNMTestSupport
import Foundation
import Glibc
import Testing

/// An ECS task on Fargate, as near as a Docker host gets: an app container, a second one sharing its
/// pid and network namespaces, and the agent image joined to both with `--cap-drop ALL` and only
/// what Fargate allows (`SYS_PTRACE`, and `NET_RAW` from the default set), reading task metadata from
/// a local server that serves a Fargate-shaped v4 response naming those containers.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root to run dockerd, build images and enter namespaces"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)"),
    .enabled(if: Environment.hasDebootstrap, "needs debootstrap to make the base images (make test-deps installs it)")
)
struct FargateSimulationTests {
    enum Privileges: String, CaseIterable, CustomTestStringConvertible {
        case ptraceAndRaw = "SYS_PTRACE+NET_RAW"
        case ptrace = "SYS_PTRACE"
        case none = "no capability"

        var testDescription: String { rawValue }
        var capabilities: [String] {
            switch self {
            case .ptraceAndRaw: ["--cap-add", "SYS_PTRACE", "--cap-add", "NET_RAW"]
            case .ptrace: ["--cap-add", "SYS_PTRACE"]
            case .none: []
            }
        }
    }

    /// Bytes each short connection carries: the client's request, the server's answer.
    static let request = 137
    static let answer = 1_009
    static let shortConnections = 500

    @Test(arguments: Privileges.allCases)
    func theTaskIsSeenWithWhatFargateAllows(privileges: Privileges) async throws {
        try AgentImage.build()
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let app = "cnm-fg-app-\(suffix)"
        let worker = "cnm-fg-worker-\(suffix)"
        let peer = "cnm-fg-peer-\(suffix)"
        let agentName = "cnm-fg-agent-\(suffix)"
        defer { _ = try? Environment.docker("rm", "-f", agentName, worker, app, peer) }

        // The task: `app` serves on 8080; `worker`, in app's namespaces, calls it and a peer outside.
        let serve = "printf '#!/bin/sh\\necho hello\\nsleep 1\\n' > /serve; chmod +x /serve; nc -ll -p 8080 -e /serve"
        try Environment.docker("run", "-d", "--name", peer, "cnm-test/busybox:latest", "sh", "-c", serve)
        let appID = try Environment.docker("run", "-d", "--name", app, "cnm-test/busybox:latest", "sh", "-c", serve)
        try await waitUntilListening(app, port: 8080)
        try await waitUntilListening(peer, port: 8080)
        let peerIP = try Environment.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", peer)
        let appIP = try Environment.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", app)
        let workerID = try Environment.docker(
            "run", "-d", "--name", worker, "--pid", "container:\(app)", "--network", "container:\(app)",
            "cnm-test/busybox:latest", "sh", "-c",
            "while true; do sleep 1 | nc 127.0.0.1 8080; sleep 1 | nc \(peerIP) 8080; done")

        // The metadata endpoint, where the task's containers reach the host: their default gateway.
        let gateway = try defaultGateway(of: app)
        let endpoint = try ScriptedHTTPServer(
            answering: .http(200, try ECSTagsTests.task(containers: [(appID, "app"), (workerID, "worker")])),
            on: gateway)
        let env = [
            "DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true", "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS=1",
            // The test reads the API from the host, at the task's address (the sidecar's definition
            // keeps it on loopback).
            "DD_CNM_HTTP_ADDR=0.0.0.0:7777",
            "ECS_CONTAINER_METADATA_URI_V4=http://\(gateway):\(endpoint.port)/v4/\(suffix)",
        ].flatMap { ["-e", $0] }
        try Environment.docker(
            [
                "run", "-d", "--name", agentName, "--pid", "container:\(app)", "--network", "container:\(app)",
                "--cap-drop", "ALL",
            ] + privileges.capabilities + env + [AgentImage.tag])
        let api = ContainerAPI(host: appIP, port: 7777, container: agentName)
        let status = try await api.waitUntilHealthy()
        #expect(status["mode"] as? String == "ebpfless")

        let task = [
            "task_family:curltest", "task_name:curltest", "task_version:3", "ecs_cluster_name:default",
            "region:us-west-2", "availability_zone:us-west-2a",
        ]
        // The worker's calls, inside the task and to the peer outside it.
        let inside: [String: Any]
        let outside: [String: Any]
        do {
            (inside, outside) = try await waitFor("the worker's flows, tagged", timeout: .seconds(60)) {
                () async throws -> ([String: Any], [String: Any])? in
                let flows = try await api.connections().filter {
                    $0.port("raddr") == 8080 && $0["direction"] as? String == "outgoing"
                        && task.allSatisfy($0.tags.contains)
                }
                let named =
                    privileges == .none ? flows : flows.filter { $0.tags.contains("ecs_container_name:worker") }
                guard let a = named.first(where: { $0.address("raddr")["ip"] as? String == "127.0.0.1" }),
                    let b = named.first(where: { $0.address("raddr")["ip"] as? String == peerIP })
                else { return nil }
                return (a, b)
            }
        } catch {
            // What the agent did see, so a failure says which part was missing.
            let seen = (try? await api.connections().filter { $0.port("raddr") == 8080 }) ?? []
            let described = seen.prefix(6).map { "\($0.address("raddr")) \($0["direction"] ?? "") \($0.tags)" }
            let status = (try? await api.json("/status")).map { "\($0)" } ?? "no /status"
            let logs =
                (try? Environment.run("/usr/bin/env", ["docker", "logs", "--tail", "40", agentName]).output) ?? ""
            Issue.record("flows to 8080 seen: \(seen.count)\n\(described.joined(separator: "\n"))\n\(status)\n\(logs)")
            throw error
        }
        if privileges != .none {
            // No Docker daemon on Fargate: the metadata names the containers, by their DockerId.
            for flow in [inside, outside] {
                for tag in ["container_id:\(workerID)", "container_name:ecs-curltest-3-worker"] {
                    #expect(flow.tags.contains(tag), "\(tag) in \(flow.tags)")
                }
            }
            for tag in ["ecs_container_name:app", "container_id:\(appID)"] + task {
                #expect(inside.remoteTags.contains(tag), "remote \(tag) in \(inside.remoteTags)")
            }
        } else {
            // Without SYS_PTRACE no socket has an owner: task-level flows only, and /status says why.
            let problems = try await api.json("/status")["problems"] as? [String: Any] ?? [:]
            #expect(problems["proc_permission_denied"] != nil, "\(problems.keys.sorted())")
        }

        // The interval says which task these connections are (the intake's `ecsTask`).
        let latest = try await api.json("/api/v1/connections")
        #expect(
            latest["ecs_task_arn"] as? String
                == "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3")

        let capture = try await api.json("/status").component("capture")
        if privileges == .ptraceAndRaw {
            #expect(capture.state == "on", "capture: \(capture)")
            try await shortConnectionsAreExact(
                appPID: try Environment.docker("inspect", "-f", "{{.State.Pid}}", app), api)
        } else {
            #expect(capture.state == "unavailable" && capture.reason.contains("NET_RAW"), "capture: \(capture)")
        }
    }

    /// 500 connections of a few milliseconds each, made by this test inside the task's network
    /// namespace: each carries exactly `request` bytes one way and `answer` the other.
    private func shortConnectionsAreExact(appPID: String, _ api: ContainerAPI) async throws {
        let before = try await api.latestSequence()
        let port = try withNetworkNamespace("/proc/\(appPID)/ns/net") { () throws -> UInt16 in
            let (listener, port) = try TestSocket.listener()
            defer { close(listener) }
            for _ in 0..<Self.shortConnections {
                let client = try TestSocket.connect(to: "127.0.0.1", port: port)
                let server = try TestSocket.accept(listener)
                _ = try TestSocket.transfer(Self.request, from: client, to: server, timeout: .seconds(5))
                _ = try TestSocket.transfer(Self.answer, from: server, to: client, timeout: .seconds(5))
                close(client)
                close(server)
            }
            return port
        }
        let n = Self.shortConnections
        let (out, inc) = try await waitFor("all \(n) short connections, both ends", timeout: .seconds(60)) {
            () async throws -> ([[String: Any]], [[String: Any]])? in
            let all = try await api.connections(after: before)
            let out = all.filter { $0.port("raddr") == Int(port) && $0["direction"] as? String == "outgoing" }
            let inc = all.filter { $0.port("laddr") == Int(port) && $0["direction"] as? String == "incoming" }
            return out.sum("tcp_closed") >= n && inc.sum("tcp_closed") >= n ? (out, inc) : nil
        }
        #expect(out.sum("tcp_closed") == n && inc.sum("tcp_closed") == n)
        #expect(out.sum("bytes_sent") == n * Self.request)
        #expect(out.sum("bytes_received") == n * Self.answer)
        #expect(inc.sum("bytes_received") == n * Self.request)
        #expect(inc.sum("bytes_sent") == n * Self.answer)
        #expect((out + inc).allSatisfy { $0.tags.contains("task_family:curltest") })
    }
}
