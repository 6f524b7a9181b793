import CNMTestSupport
import Foundation
import Testing

/// Inside an ECS task: a local server stands in for the task metadata endpoint v4, serving a real
/// Fargate task response whose containers are rewritten to two containers this test runs. Flows
/// carry the task's tags and each container's `ecs_container_name`; when the endpoint fails and then
/// answers garbage, flows keep the tags already known and the failures are counted.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: the agent reads every namespace's sockets"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (make build): .build/debug/cnm-agent"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)")
)
struct ECSTagsTests {
    static let fixture = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("shared/fixtures/ecs/v4/otel-go/metadatav4-response-task-fargate.json")

    /// The fixture's task with its one container entry turned into one per (id, name).
    static func task(containers: [(id: String, name: String)]) throws -> String {
        let data = try Data(contentsOf: fixture)
        var task = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let template = try #require((task["Containers"] as? [[String: Any]])?.first)
        task["Containers"] = containers.map { c -> [String: Any] in
            var entry = template
            entry["DockerId"] = c.id
            entry["Name"] = c.name
            entry["DockerName"] = "ecs-curltest-3-\(c.name)"
            return entry
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: task), as: UTF8.self)
    }

    @Test func flowsCarryTheTaskTagsAndKeepThemWhenTheEndpointFails() async throws {
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let network = "cnm-ecs-\(suffix)"
        let server = "cnm-ecs-srv-\(suffix)"
        let client = "cnm-ecs-cli-\(suffix)"
        defer {
            _ = try? Environment.docker("rm", "-f", server, client)
            _ = try? Environment.docker("network", "rm", network)
        }
        try Environment.docker("network", "create", network)
        let serverID = try Environment.docker(
            "run", "-d", "--name", server, "--network", network, "cnm-test/busybox:latest", "sh", "-c",
            "printf '#!/bin/sh\\necho hello\\nsleep 1\\n' > /serve; chmod +x /serve; nc -ll -p 8080 -e /serve")
        try await waitUntilListening(server, port: 8080)
        // A new connection every two seconds or so, for as long as the test runs.
        let clientID = try Environment.docker(
            "run", "-d", "--name", client, "--network", network, "cnm-test/busybox:latest", "sh", "-c",
            "while true; do sleep 1 | nc \(server) 8080; sleep 1; done")

        let endpoint = try ScriptedHTTPServer(
            answering: .http(200, try Self.task(containers: [(serverID, "inventory"), (clientID, "checkout")])))
        let agent = try AgentProcess(environment: [
            "ECS_CONTAINER_METADATA_URI_V4": "http://127.0.0.1:\(endpoint.port)/v4/\(suffix)",
            "DD_ECS_METADATA_TIMEOUT": "1000",
        ])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        let start = try await agent.latestSequence()

        let task = [
            "task_family:curltest", "task_name:curltest", "task_version:3", "ecs_cluster_name:default",
            "cluster_name:default", "availability_zone:us-west-2a", "availability-zone:us-west-2a",
            "region:us-west-2", "aws_account:111122223333",
            "task_arn:arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
        ]
        func clientFlows(after sequence: UInt64) async throws -> [[String: Any]] {
            try await agent.connections(after: sequence).filter {
                $0.address("laddr")["container_id"] as? String == clientID && $0.port("raddr") == 8080
            }
        }
        func expectTagged(_ flows: [[String: Any]], _ when: Comment) {
            for flow in flows {
                for tag in task + ["ecs_container_name:checkout", "container_name:\(client)"] {
                    #expect(flow.tags.contains(tag), "\(when): \(tag) in \(flow.tags)")
                }
                for tag in task + ["ecs_container_name:inventory"] {
                    #expect(flow.remoteTags.contains(tag), "\(when): remote \(tag) in \(flow.remoteTags)")
                }
            }
        }
        let first = try await waitFor("the client's flows, tagged", timeout: .seconds(30)) {
            () async throws -> [[String: Any]]? in
            let flows = try await clientFlows(after: start)
            return flows.contains { $0.tags.contains("ecs_container_name:checkout") } ? flows : nil
        }
        #expect(endpoint.requests.first?.path == "/v4/\(suffix)/taskWithTags", "\(endpoint.requests.map(\.path))")
        expectTagged(first.filter { $0.tags.contains("ecs_container_name:checkout") }, "answering")

        // The endpoint fails, then answers garbage: each is asked at least once more.
        for (answer, problem) in [
            (ScriptedHTTPServer.Reply.http(500, "{\"message\":\"boom\"}"), "ecs_http_500"),
            (.http(200, "{\"Cluster\": \"arn:aws:ecs:us-west-2:1111"), "ecs_invalid_json"),
        ] {
            endpoint.answer(with: answer)
            let asked = endpoint.requests.count
            _ = try await waitFor("the agent to ask the failing endpoint", timeout: .seconds(30)) {
                endpoint.requests.count >= asked + 2 ? true : nil
            }
            let problems = try await waitFor("\(problem) counted in /status") { () async throws -> [String: Any]? in
                let p = try await agent.json("/status")["problems"] as? [String: Any] ?? [:]
                return p[problem] != nil ? p : nil
            }
            #expect(problems[problem] != nil)
            let since = try await agent.latestSequence()
            let later = try await waitFor("new flows after \(problem)", timeout: .seconds(30)) {
                () async throws -> [[String: Any]]? in
                let flows = try await clientFlows(after: since)
                return flows.contains { $0.int("tcp_established") > 0 } ? flows : nil
            }
            expectTagged(later, "after \(problem)")
        }
        let status = try await agent.json("/status")
        #expect(status.component("ecs").state == "unavailable", "\(status.component("ecs"))")
    }
}
