import CNMTestSupport
import Foundation
import Glibc
import Testing

/// A second, private dockerd (its own socket, data root, managed containerd and default bridge), so
/// a test can stop and restart a daemon without touching the one the other tests use. Not
/// `--bridge=none`: a daemon without a default bridge deletes `docker0`, the other daemon's.
final class PrivateDockerDaemon {
    let root: String
    var socket: String { "\(root)/docker.sock" }
    private var process: Process?

    /// The bridge this daemon uses as its default one; it must exist before the daemon starts.
    let bridge: String

    init() throws {
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        root = "/tmp/cnm-dockerd-\(suffix)"
        bridge = "cnmbr\(suffix.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try NetworkLab.command("ip", ["link", "add", bridge, "type", "bridge"])
    }

    /// Starts the daemon and waits until it answers.
    func start() async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try NetworkLab.tool("dockerd"))
        p.arguments = [
            "--iptables=false", "--bridge", bridge, "--live-restore", "--data-root", "\(root)/data",
            "--exec-root", "\(root)/exec", "--pidfile", "\(root)/docker.pid", "-H", "unix://\(socket)",
        ]
        _ = FileManager.default.createFile(atPath: "\(root)/dockerd.log", contents: nil)
        let log = FileHandle(forWritingAtPath: "\(root)/dockerd.log")
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        _ = try await waitFor("the private dockerd to answer (log: \(root)/dockerd.log)") {
            guard p.isRunning else { throw TestFailure("the private dockerd exited; see \(root)/dockerd.log") }
            return (try? docker("version", "--format", "{{.Server.Version}}")) == nil ? nil : true
        }
    }

    /// SIGTERM and waits for the daemon to exit (live-restore: its containers keep running).
    func stop() async throws {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        _ = try await waitFor("the private dockerd to exit", timeout: .seconds(30)) { p.isRunning ? nil : true }
        process = nil
    }

    @discardableResult
    func docker(_ arguments: String...) throws -> String {
        let r = try Environment.run("/usr/bin/env", ["docker", "-H", "unix://\(socket)"] + arguments)
        guard r.status == 0 else { throw TestFailure("docker \(arguments.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Removes every container, stops the daemon and deletes its files.
    func tearDown() async {
        if let ids = try? docker("ps", "-aq"), !ids.isEmpty {
            _ = try? Environment.run(
                "/usr/bin/env",
                ["docker", "-H", "unix://\(socket)", "rm", "-f"] + ids.split(separator: "\n").map(String.init))
        }
        try? await stop()
        // The daemon leaves its default network namespace bind-mounted under the exec root.
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        for point in mounts.split(separator: "\n").compactMap({ $0.split(separator: " ").dropFirst().first })
            .filter({ $0.hasPrefix(root + "/") }).sorted(by: >)
        {
            umount2(String(point), Int32(MNT_DETACH))
        }
        try? FileManager.default.removeItem(atPath: root)
        _ = try? NetworkLab.command("ip", ["link", "del", bridge])
    }
}

/// The agent follows a daemon through a restart: its events stream is lost, counted, re-opened
/// with backoff, and a container that lives under a second after the restart is still named.
@Suite(
    .serialized,
    .enabled(if: Environment.isRoot, "needs root: the agent reads every namespace's sockets, dockerd runs as root"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (make build): .build/debug/cnm-agent"),
    .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)")
)
struct DockerRestartTests {
    @Test func eventsResumeAfterTheDaemonRestarts() async throws {
        let daemon = try PrivateDockerDaemon()
        do {
            try await restart(daemon)
        } catch {
            await daemon.tearDown()
            throw error
        }
        await daemon.tearDown()
    }

    private func restart(_ daemon: PrivateDockerDaemon) async throws {
        try await daemon.start()
        let image = "\(daemon.root)/busybox.tar"
        try Environment.docker("save", "-o", image, "cnm-test/busybox:latest")
        try daemon.docker("load", "-i", image)

        let agent = try await CollectionMode.sockLength.startAgent(["DOCKER_HOST": "unix://\(daemon.socket)"])
        defer { agent.stop() }
        func eventsStatus() async throws -> StatusComponent {
            try await agent.json("/status").component("docker_events")
        }
        _ = try await waitFor("the events stream to connect") { try await eventsStatus().state == "connected" }

        try await daemon.stop()
        let lost = try await waitFor("the agent to notice the daemon is gone") { () async throws -> String? in
            let s = try await eventsStatus()
            return s.state == "disconnected" ? s.reason : nil
        }
        #expect(lost.contains("unavailable") || lost.contains("onnect"), "\(lost)")
        try await daemon.start()
        _ = try await waitFor("the events stream to reconnect", timeout: .seconds(40)) {
            try await eventsStatus().state == "connected" ? true : nil
        }
        let problems = try await agent.json("/status")["problems"] as? [String: Any] ?? [:]
        #expect(problems.keys.contains { $0.hasPrefix("docker_events_") }, "the loss is counted: \(problems)")

        // Connects to a listener of the test, which closes at once, and exits; removed before any
        // periodic listing, so only the events stream can name it.
        let (listener, port) = try TestSocket.listener()
        defer { close(listener) }
        let before = try await agent.latestSequence()
        let name = "cnm-restart-brief-\(port)"
        let id = try daemon.docker(
            "run", "-d", "--name", name, "--network", "host", "cnm-test/busybox:latest", "nc", "127.0.0.1", "\(port)")
        close(try TestSocket.accept(listener))
        try daemon.docker("wait", name)
        try daemon.docker("rm", "-f", name)
        let flow = try await waitFor("the brief container's flow") { () async throws -> [String: Any]? in
            try await agent.connections(after: before).first {
                $0.port("raddr") == Int(port) && $0.address("laddr")["container_id"] as? String == id
            }
        }
        #expect(flow.tags.contains("container_name:\(name)"), "\(flow.tags)")
    }
}
