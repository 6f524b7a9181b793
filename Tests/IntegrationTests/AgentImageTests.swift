import CNMTestSupport
import Foundation
import Glibc
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The agent's image, built once per test run by `scripts/build-agent-image.sh` from
/// `docker/Dockerfile` on locally made base images.
enum AgentImage {
    static let tag = "cnm-agent:test"

    private static let built = Result<Void, TestFailure> { () throws(TestFailure) in
        // A first build compiles the agent in release mode from nothing: minutes on two cores.
        do {
            try NetworkLab.command(
                "bash", [Environment.root.appendingPathComponent("scripts/build-agent-image.sh").path, tag],
                timeout: .seconds(40 * 60))
        } catch {
            throw TestFailure("building \(tag): \(error)")
        }
    }

    static func build() throws { try built.get() }

    /// `docker run` exactly as the README gives it, but for the API port (a free one) and the name.
    static func runAsInREADME(name: String, extra: [String] = []) throws -> (id: String, apiPort: UInt16) {
        let arguments = [
            "run", "-d", "--name", name,
            "--pid", "host", "--cgroupns", "host",
            "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
            "--security-opt", "apparmor:unconfined",
            "-v", "/var/run/docker.sock:/var/run/docker.sock:ro",
            "-v", "/proc:/host/proc:ro",
            "-v", "/sys/fs/cgroup:/host/sys/fs/cgroup:ro",
            "-v", "/sys/kernel/debug:/sys/kernel/debug",
            "-e", "DD_CNM_HTTP_ADDR=0.0.0.0:7777", "-p", "127.0.0.1::7777",
        ]
        let r = try Environment.run("/usr/bin/env", ["docker"] + arguments + extra + [tag])
        guard r.status == 0 else { throw TestFailure("docker run \(tag): \(r.output)") }
        let id = r.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let published = try Environment.docker("port", name, "7777/tcp")
        guard let port = published.split(separator: "\n").first?.split(separator: ":").last.flatMap({ UInt16($0) })
        else { throw TestFailure("no published API port: \(published)") }
        return (id, port)
    }
}

/// The image as users run it: built from the Dockerfile, started with the README's `docker run`,
/// it picks eBPF mode and reports other containers' flows with their names.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root to run dockerd and build images"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)"),
    .enabled(
        if: Environment.hasDebootstrap,
        "needs debootstrap to make the base images (make test-deps installs it)")
)
struct AgentImageTests {
    @Test func theREADMEsDockerRunReportsOtherContainersInEBPFMode() async throws {
        try AgentImage.build()
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let agentName = "cnm-img-agent-\(suffix)"
        let network = "cnm-img-\(suffix)"
        let server = "cnm-img-srv-\(suffix)"
        let client = "cnm-img-cli-\(suffix)"
        defer {
            _ = try? Environment.docker("rm", "-f", agentName, server, client)
            _ = try? Environment.docker("network", "rm", network)
        }
        let (agentID, apiPort) = try AgentImage.runAsInREADME(
            name: agentName, extra: ["-e", "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS=1"])
        let api = ContainerAPI(port: apiPort, container: agentName)
        let status = try await api.waitUntilHealthy()
        #expect(status["mode"] as? String == "ebpf", "mode: \(status["mode_reason"] ?? "?")")
        let health = try Environment.docker("inspect", "-f", "{{.State.Health.Status}}", agentName)
        #expect(["starting", "healthy"].contains(health), "HEALTHCHECK: \(health)")

        try Environment.docker("network", "create", network)
        try Environment.docker(
            "run", "-d", "--name", server, "--network", network, "cnm-test/busybox:latest", "sh", "-c",
            "printf '#!/bin/sh\\necho hello\\n' > /serve; chmod +x /serve; nc -ll -p 8080 -e /serve")
        try await waitUntilListening(server, port: 8080)
        try Environment.docker(
            "run", "-d", "--name", client, "--network", network, "cnm-test/busybox:latest", "sh", "-c",
            "while true; do nc \(server) 8080 </dev/null; sleep 0.2; done")

        let flow = try await waitFor("the client's flow to the server, named at both ends", timeout: .seconds(60)) {
            () async throws -> [String: Any]? in
            try await api.connections().first {
                $0.port("raddr") == 8080 && $0.tags.contains("container_name:\(client)")
                    && $0.remoteTags.contains("container_name:\(server)")
            }
        }
        #expect(flow["intra_host"] as? Bool == true)
        // The agent's own container is left out: its API traffic (this test's requests) is not reported.
        let all = try await api.connections()
        #expect(!all.contains { $0.address("laddr")["container_id"] as? String == agentID })
    }

    /// The ECS daemon's way (ecs/daemon-ec2.json): the host's network, the host's /proc, and the API
    /// where the image puts it when DD_CNM_HTTP_ADDR is not set: 127.0.0.1:7777. A container on the default bridge (a network namespace of its own) reaches
    /// a server on the host's bridge address, but not the agent there. With a token, a request
    /// without it gets 401 and /healthz still answers.
    @Test func onTheHostsNetworkTheAPIIsLoopbackOnlyAndGuardedByItsToken() async throws {
        try AgentImage.build()
        let (holder, _) = try TestSocket.listener(on: "127.0.0.1", port: 7777)
        close(holder)  // the default port is free: the agent can take it
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let agentName = "cnm-img-host-\(suffix)"
        let probe = "cnm-img-probe-\(suffix)"
        let token = "cnm-test-token-\(suffix)-0123456789"
        defer { _ = try? Environment.docker("rm", "-f", agentName, probe) }
        try Environment.docker(
            "run", "-d", "--name", agentName, "--network", "host", "--pid", "host", "--cgroupns", "host",
            "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
            "--security-opt", "apparmor:unconfined",
            "-v", "/var/run/docker.sock:/var/run/docker.sock:ro", "-v", "/proc:/host/proc:ro",
            "-v", "/sys/fs/cgroup:/host/sys/fs/cgroup:ro", "-v", "/sys/kernel/debug:/sys/kernel/debug",
            "-e", "DD_CNM_API_TOKEN=\(token)",
            "-e", "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS=1", AgentImage.tag)

        _ = try await waitFor("the agent's /healthz on 127.0.0.1:7777", timeout: .seconds(60)) {
            () async throws -> Bool? in
            let state = try Environment.docker("inspect", "-f", "{{.State.Status}}", agentName)
            guard state == "running" else {
                throw TestFailure(
                    "the agent exited: \(try Environment.run("/usr/bin/env", ["docker", "logs", agentName]).output)")
            }
            return try? await Self.status(of: "http://127.0.0.1:7777/healthz") == 200 ? true : nil
        }
        #expect(try await Self.status(of: "http://127.0.0.1:7777/status") == 401)
        #expect(try await Self.status(of: "http://127.0.0.1:7777/status", token: "wrong-token-0123456789") == 401)
        #expect(try await Self.status(of: "http://127.0.0.1:7777/status", token: token) == 200)

        try Environment.docker("run", "-d", "--name", probe, "cnm-test/busybox:latest", "sleep", "120")
        let host = try defaultGateway(of: probe)
        // The path from the probe to the host works: a server on the host's bridge address answers.
        let reachable = try ScriptedHTTPServer(
            answering: .raw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), on: host)
        let control = try Self.connect(from: probe, to: host, port: reachable.port)
        #expect(control.status == 0, "the probe could not reach the host at all: \(control.output)")
        // The agent is not there.
        let agent = try Self.connect(from: probe, to: host, port: 7777)
        #expect(agent.status != 0, "the agent answered another network namespace: \(agent.output)")
        #expect(agent.output.lowercased().contains("refused"), "\(agent.output)")
    }

    /// The runtime stage holds the agent, its libraries and a CA bundle: nothing to get a shell or
    /// install a package with, and the agent still starts (its libraries all load).
    @Test func theImageHasNoShellAndNoPackageManager() throws {
        try AgentImage.build()
        for program in ["/bin/sh", "/bin/bash", "/usr/bin/apt-get", "/usr/bin/dpkg", "/bin/busybox"] {
            let r = try Environment.run(
                "/usr/bin/env", ["docker", "run", "--rm", "--entrypoint", program, AgentImage.tag, "--version"])
            #expect(r.status != 0, "\(program) runs in the image: \(r.output)")
            #expect(r.output.lowercased().contains("no such file or directory"), "\(program): \(r.output)")
        }
        let version = try Environment.docker("run", "--rm", AgentImage.tag, "version")
        #expect(version.hasPrefix("cnm-agent "), "\(version)")
    }

    /// A request line sent with busybox nc from inside `container`: its exit status and output.
    static func connect(from container: String, to host: String, port: UInt16) throws -> (status: Int32, output: String)
    {
        try Environment.run(
            "/usr/bin/env",
            [
                "docker", "exec", container, "sh", "-c",
                "printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc -w 5 \(host) \(port) 2>&1",
            ])
    }

    /// The HTTP status of a GET, with a bearer token when given.
    static func status(of url: String, token: String? = nil) async throws -> Int {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 10
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as? HTTPURLResponse)?.statusCode ?? 0
    }
}

/// The API of an agent running in a container, through its published port.
struct ContainerAPI {
    var host = "127.0.0.1"
    var port: UInt16
    var container: String

    func json(_ path: String) async throws -> [String: Any] {
        var request = URLRequest(url: URL(string: "http://\(host):\(port)\(path)")!)
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        guard (response as? HTTPURLResponse)?.statusCode == 200,
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { throw TestFailure("GET \(path): \(String(decoding: data, as: UTF8.self))") }
        return object
    }

    /// Waits until `/status` says the first collection is done (what `/healthz` answers 200 to), failing
    /// at once with the container's log if it exited; returns that `/status`.
    func waitUntilHealthy() async throws -> [String: Any] {
        try await waitFor("the agent container's first collection", timeout: .seconds(60)) {
            () async throws -> [String: Any]? in
            let state = try Environment.docker("inspect", "-f", "{{.State.Status}}", container)
            guard state == "running" else {
                let log = try Environment.run("/usr/bin/env", ["docker", "logs", container]).output
                throw TestFailure("the agent container is \(state): \(log)")
            }
            guard let status = try? await json("/status"), status["healthy"] as? Bool == true else { return nil }
            return status
        }
    }

    /// Every connection of the intervals the agent still holds, or of those after `sequence`.
    func connections(after sequence: UInt64? = nil) async throws -> [[String: Any]] {
        let query = sequence.map { "?after=\($0)" } ?? ""
        let intervals = try await json("/api/v1/intervals\(query)")["intervals"] as? [[String: Any]] ?? []
        return intervals.flatMap { $0["connections"] as? [[String: Any]] ?? [] }
    }

    /// The newest completed interval's sequence number (0 before the first).
    func latestSequence() async throws -> UInt64 {
        let intervals = try await json("/api/v1/intervals")["intervals"] as? [[String: Any]] ?? []
        return intervals.compactMap { ($0["sequence"] as? NSNumber)?.uint64Value }.max() ?? 0
    }
}
