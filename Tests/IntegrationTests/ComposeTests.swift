import CNMTestSupport
import Foundation
import Testing

/// `compose.yaml` as users bring it up: `docker-compose --profile demo up` starts the agent and the
/// demo services, and the agent's API shows the demo's flows tagged at both ends.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root to run dockerd and build images"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)"),
    .enabled(
        if: FileManager.default.isExecutableFile(atPath: "/usr/bin/docker-compose"),
        "needs docker-compose (make test-deps installs Debian's)"),
    .enabled(
        if: Environment.hasDebootstrap,
        "needs debootstrap to make the base images (make test-deps installs it)")
)
struct ComposeTests {
    @Test func theDemoProfileShowsTaggedFlowsBetweenItsServices() async throws {
        try AgentImage.build()
        let project = "cnmdemo\(String(UInt32.random(in: 0..<UInt32.max), radix: 36))"
        let apiPort = try freePort()
        // The compose file's variables pointed at local images; nothing else differs from a user's run.
        let environment = [
            "CNM_AGENT_IMAGE": AgentImage.tag, "CNM_DEMO_IMAGE": "cnm-test/busybox:latest",
            "CNM_API_PORT": "\(apiPort)", "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS": "1",
        ]
        @discardableResult func compose(_ arguments: [String]) throws -> String {
            let env = ["env"] + environment.map { "\($0.key)=\($0.value)" }
            let file = Environment.root.appendingPathComponent("compose.yaml").path
            return try NetworkLab.command(
                env[0],
                Array(env.dropFirst()) + ["docker-compose", "-f", file, "-p", project, "--profile", "demo"] + arguments,
                timeout: .seconds(120))
        }
        defer { _ = try? compose(["down", "--timeout", "2"]) }
        try compose(["up", "-d", "--no-build"])

        let api = ContainerAPI(port: apiPort, container: "\(project)_cnm-agent_1")
        let status = try await api.waitUntilHealthy()
        #expect(status["mode"] as? String == "ebpf", "mode: \(status["mode_reason"] ?? "?")")
        func tagged(_ flow: [String: Any], from: String, to: String) -> Bool {
            flow.tags.contains("compose_service:\(from)") && flow.tags.contains("compose_project:\(project)")
                && flow.remoteTags.contains("compose_service:\(to)")
        }
        let (clientToAPI, apiToWeb) = try await waitFor(
            "demo-client → demo-api and demo-api → demo-web, tagged at both ends", timeout: .seconds(90)
        ) { () async throws -> ([String: Any], [String: Any])? in
            let all = try await api.connections()
            guard
                let a = all.first(where: { $0.port("raddr") == 8081 && tagged($0, from: "demo-client", to: "demo-api") }
                ),
                let b = all.first(where: { $0.port("raddr") == 8080 && tagged($0, from: "demo-api", to: "demo-web") })
            else { return nil }
            return (a, b)
        }
        for flow in [clientToAPI, apiToWeb] {
            #expect(flow.tags.contains("env:demo"), "\(flow.tags)")
            #expect(flow["intra_host"] as? Bool == true)
            #expect(flow.int("bytes_sent") > 0 && flow.int("bytes_received") > 0)
        }
        #expect(clientToAPI.tags.contains("service:demo-client"))
        #expect(apiToWeb.remoteTags.contains("service:demo-web"))
    }
}
