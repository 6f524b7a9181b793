import CNMTestSupport
import Foundation
import Glibc
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Paths and preconditions shared by the tests that run the real agent.
enum Environment {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let agentBinary = root.appendingPathComponent(".build/debug/cnm-agent").path
    static var isRoot: Bool { geteuid() == 0 }
    /// The agent image's tests make its base images with debootstrap.
    static var hasDebootstrap: Bool { FileManager.default.isExecutableFile(atPath: "/usr/sbin/debootstrap") }
    static var hasAgentBinary: Bool { FileManager.default.isExecutableFile(atPath: agentBinary) }
    static var dockerAnswers: Bool {
        (try? run("/usr/bin/env", ["docker", "info", "--format", "{{.ServerVersion}}"]).status) == 0
    }

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @discardableResult
    static func docker(_ arguments: String...) throws -> String { try docker(arguments) }

    @discardableResult
    static func docker(_ arguments: [String]) throws -> String {
        let r = try run("/usr/bin/env", ["docker"] + arguments)
        guard r.status == 0 else { throw TestFailure("docker \(arguments.joined(separator: " ")): \(r.output)") }
        return r.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Waits until a process in `container` listens on TCP `port` (busybox netstat inside it).
func waitUntilListening(_ container: String, port: Int) async throws {
    _ = try await waitFor("\(container) to listen on \(port)") {
        let r = try Environment.run("/usr/bin/env", ["docker", "exec", container, "netstat", "-ltn"])
        return r.output.contains(":\(port)") ? true : nil
    }
}

/// The IPv4 address through which `container` reaches the host: its default route's gateway, as the
/// container itself sees it. On a daemon started for the first time the default bridge's IPAM config
/// names no gateway (the address is only on `docker0`), so `docker network inspect` cannot be asked.
func defaultGateway(of container: String) throws -> String {
    let routes = try Environment.docker("exec", container, "ip", "-4", "route", "show", "default")
    let words = routes.split(whereSeparator: \.isWhitespace)
    guard let via = words.firstIndex(of: "via"), via + 1 < words.count,
        inet_addr(String(words[via + 1])) != INADDR_NONE
    else {
        throw TestFailure("no IPv4 default gateway in \(container)'s 'ip -4 route show default': '\(routes)'")
    }
    return String(words[via + 1])
}

/// A free TCP port on loopback, chosen by the kernel.
func freePort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
        }
    }
    guard ok else { throw TestFailure("no free port: errno \(errno)") }
    return UInt16(bigEndian: addr.sin_port)
}

/// The real agent binary, run as users run it, with its API on a free loopback port.
final class AgentProcess {
    let process = Process()
    let port: UInt16
    let logPath: String

    /// `launcher`: a command that runs the agent (its path is appended), such as one that drops a
    /// capability.
    init(environment extra: [String: String] = [:], launcher: [String] = []) throws {
        port = try freePort()
        logPath = NSTemporaryDirectory() + "cnm-agent-\(port).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        if let tool = launcher.first {
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = Array(launcher.dropFirst()) + [Environment.agentBinary]
        } else {
            process.executableURL = URL(fileURLWithPath: Environment.agentBinary)
        }
        var env = ProcessInfo.processInfo.environment
        env["DD_CNM_HTTP_ADDR"] = "127.0.0.1:\(port)"
        env["DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS"] = "1"
        env["DD_CNM_SAMPLE_INTERVAL"] = "0.5"
        env["DD_CNM_TERMINAL"] = "never"
        env["DD_LOG_LEVEL"] = "debug"
        for (k, v) in extra { env[k] = v }
        process.environment = env
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    deinit { stop() }

    /// SIGTERM, then SIGKILL if the agent has not exited within 10 s.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        for _ in 0..<200 where process.isRunning { usleep(50_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func get(_ path: String) async throws -> (status: Int, body: Data) {
        let url = URL(string: "http://127.0.0.1:\(port)\(path)")!
        var request = URLRequest(url: url)
        request.timeoutInterval = 15
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    func json(_ path: String) async throws -> [String: Any] {
        let (status, body) = try await get(path)
        guard status == 200, let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw TestFailure("GET \(path) answered \(status): \(String(decoding: body, as: UTF8.self))")
        }
        return object
    }

    func waitUntilHealthy() async throws {
        _ = try await waitFor("the agent's /healthz (log: \(logPath))", timeout: .seconds(30)) {
            guard process.isRunning else { throw TestFailure("the agent exited: \(log)") }
            return (try? await get("/healthz"))?.status == 200 ? true : nil
        }
    }

    /// The sequence number of the newest completed interval (0 before the first).
    func latestSequence() async throws -> UInt64 {
        try await readNewIntervals()
        return readLock.withLock { read.keys.max() ?? 0 }
    }

    /// Waits until `count` more intervals have completed after `sequence`.
    func waitForIntervals(after sequence: UInt64, count: UInt64 = 1) async throws -> UInt64 {
        try await waitFor("\(count) interval(s) after #\(sequence)") {
            let latest = try await latestSequence()
            return latest >= sequence + count ? latest : nil
        }
    }

    /// The intervals after `sequence` the agent reported, by sequence number: those it holds, and
    /// those read earlier (every poll keeps what it read). The agent keeps only as many intervals
    /// as its retained bytes allow, and while another test floods the host with sockets each
    /// interval is large, so a test that spans a few may outlive the first.
    func intervals(after sequence: UInt64) async throws -> [(UInt64, [[String: Any]])] {
        try await readNewIntervals()
        return readLock.withLock { read.filter { $0.key > sequence }.sorted { $0.key < $1.key } }.map {
            ($0.key, $0.value)
        }
    }

    /// Every interval read so far, by sequence.
    private var read: [UInt64: [[String: Any]]] = [:]
    private let readLock = NSLock()

    private func readNewIntervals() async throws {
        let newest = readLock.withLock { read.keys.max() ?? 0 }
        let intervals = try await json("/api/v1/intervals?after=\(newest)")["intervals"] as? [[String: Any]] ?? []
        readLock.withLock {
            for interval in intervals {
                guard let number = (interval["sequence"] as? NSNumber)?.uint64Value else { continue }
                read[number] = interval["connections"] as? [[String: Any]] ?? []
            }
        }
    }

    /// Every connection reported in the intervals after `sequence`, as decoded JSON objects.
    func connections(after sequence: UInt64) async throws -> [[String: Any]] {
        try await intervals(after: sequence).flatMap(\.1)
    }
}

extension Dictionary where Key == String, Value == Any {
    func int(_ key: String) -> Int { (self[key] as? NSNumber)?.intValue ?? -1 }
    func address(_ key: String) -> [String: Any] { self[key] as? [String: Any] ?? [:] }
    func port(_ key: String) -> Int { address(key).int("port") }
    var tags: [String] { self["tags"] as? [String] ?? [] }

    /// A `/status` component: `{state, reason, counters}`.
    func component(_ key: String) -> StatusComponent {
        let c = self[key] as? [String: Any] ?? [:]
        return StatusComponent(
            state: c["state"] as? String ?? "", reason: c["reason"] as? String ?? "",
            counters: (c["counters"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.intValue })
    }
}

struct StatusComponent: CustomStringConvertible {
    var state: String
    var reason: String
    var counters: [String: Int]
    var description: String { "\(state): \(reason) \(counters)" }
}

/// Two busybox containers on a network of their own: a client that sends `size` bytes to a server on port
/// 8080, which counts what it read. `remove()` deletes both and the network.
struct ContainerPair {
    let network: String
    let serverName: String
    let clientName: String
    let serverID: String
    let clientID: String
    let size: Int

    /// Starts the server, waits until it listens, then starts the client; removes what it made if that fails.
    static func start(prefix: String, size: Int) async throws -> ContainerPair {
        let suffix = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
        let (network, serverName, clientName) = (
            "\(prefix)-\(suffix)", "\(prefix)-srv-\(suffix)", "\(prefix)-cli-\(suffix)"
        )
        do {
            try Environment.docker("network", "create", network)
            let serverID = try Environment.docker(
                "run", "-d", "--name", serverName, "--network", network, "cnm-test/busybox:latest",
                "sh", "-c", "sleep 6 | nc -l -p 8080 | wc -c")
            try await waitUntilListening(serverName, port: 8080)
            let clientID = try Environment.docker(
                "run", "-d", "--name", clientName, "--network", network, "cnm-test/busybox:latest",
                "sh", "-c", "(head -c \(size) /dev/zero; sleep 1) | nc \(serverName) 8080")
            return ContainerPair(
                network: network, serverName: serverName, clientName: clientName, serverID: serverID,
                clientID: clientID, size: size)
        } catch {
            _ = try? Environment.docker("rm", "-f", serverName, clientName)
            _ = try? Environment.docker("network", "rm", network)
            throw error
        }
    }

    /// The ground truth: how many bytes the server read, once it has said.
    func delivered() async throws -> Int {
        try await waitFor("the server to count what it received") {
            let logs = try Environment.run("/usr/bin/env", ["docker", "logs", serverName]).output
            return Int(logs.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    func remove() {
        _ = try? Environment.docker("rm", "-f", serverName, clientName)
        _ = try? Environment.docker("network", "rm", network)
    }
}
