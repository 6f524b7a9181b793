import CNMTestSupport
import Foundation
import Glibc
import Testing

/// A memory cgroup of the test's own with a limit: cgroup v2's `memory.max` where the unified
/// hierarchy has the memory controller, else v1's `memory.limit_in_bytes` (swap included, so none).
private struct MemoryCgroup {
    let path: String
    let v2: Bool

    static var root: (path: String, v2: Bool)? {
        let controllers = (try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.controllers", encoding: .utf8)) ?? ""
        if controllers.split(separator: " ").contains(where: {
            $0.trimmingCharacters(in: .whitespacesAndNewlines) == "memory"
        }) {
            return ("/sys/fs/cgroup", true)
        }
        if FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/memory.limit_in_bytes") {
            return ("/sys/fs/cgroup/memory", false)
        }
        return nil
    }

    init(name: String, limit: Int) throws {
        guard let root = Self.root else { throw TestFailure("no memory cgroup controller") }
        path = root.path + "/" + name
        v2 = root.v2
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        if v2 {
            try write("memory.max", "\(limit)")
            try? write("memory.swap.max", "0")
        } else {
            try write("memory.limit_in_bytes", "\(limit)")
            try? write("memory.memsw.limit_in_bytes", "\(limit)")
        }
    }

    func write(_ file: String, _ value: String) throws {
        try value.write(toFile: path + "/" + file, atomically: false, encoding: .utf8)
    }

    /// OOM kills in the cgroup so far.
    var oomKills: Int {
        let file = v2 ? "memory.events" : "memory.oom_control"
        let text = (try? String(contentsOfFile: path + "/" + file, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.split(separator: " ")[1]) ?? -1
        }
        return -1
    }

    /// Removes the cgroup once the processes in it have exited.
    func remove() {
        _ = try? waitForSync("\(path) empty", timeout: .seconds(10)) {
            rmdir(path) == 0 || errno == ENOENT ? true : nil
        }
    }
}

/// A process holding `count` loopback TCP connections to a listener of its own, with `hello` sent
/// on each: the flood an agent in a small cgroup must survive.
private final class ConnectionHolder {
    static let script = """
        import resource, socket, sys
        n = int(sys.argv[1])
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        port = listener.getsockname()[1]
        print("port", port, flush=True)
        held = []
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = listener.accept()
            c.sendall(b"hello")
            held.append((c, s))
        print("ready", flush=True)
        sys.stdin.read()
        """
    let process = Process()
    let input = Pipe()
    let output = Pipe()
    let port: Int

    init(count: Int) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", Self.script, "\(count)"]
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let more = output.fileHandleForReading.availableData
            guard !more.isEmpty else { throw TestFailure("the connection holder exited before its port") }
            line += more
        }
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard words.count >= 2, words[0] == "port", let port = Int(words[1]) else {
            throw TestFailure("the connection holder said \(String(decoding: line, as: UTF8.self))")
        }
        self.port = port
    }

    /// Closes every connection (end of file on its input) and waits for it to exit.
    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// The memory budget is a promise: with a small `memory.max` and a flood of connections, the agent
/// stays alive and under 80% of its limit, rolls up what its tables cannot hold one by one, counts
/// that in `/status`, and keeps every byte in the rolled-up rows.
@Suite(
    .serialized,
    .enabled(
        if: Environment.isRoot, "needs root: the agent reads every process's sockets, and the test makes a cgroup"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (swift build): .build/debug/cnm-agent"),
    .enabled(if: MemoryCgroup.root != nil, "needs a memory cgroup controller (v2 memory.max or v1)")
)
struct MemoryBudgetTests {
    @Test func anAgentInASmallCgroupSurvivesAFloodWithinItsBudgetAndCountsItsRollups() async throws {
        let limit = 128 << 20
        let cgroup = try MemoryCgroup(name: "cnm-test-budget-\(getpid())", limit: limit)
        defer { cgroup.remove() }
        // The agent enters the cgroup before it starts, so that its limit is read at start-up.
        let agent = try AgentProcess(
            environment: ["DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS": "2", "DD_LOG_LEVEL": "info"],
            launcher: ["/bin/sh", "-c", "echo $$ > '\(cgroup.path)/cgroup.procs' && exec \"$0\""])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        let memory = try await agent.json("/status")["memory"] as? [String: Any] ?? [:]
        #expect(memory.int("limit_bytes") == limit, "the agent read its cgroup's limit: \(memory)")
        let budget = memory.int("budget_bytes")
        let bounds = memory["bounds"] as? [String: Any] ?? [:]
        let before = try await agent.latestSequence()

        // 21,000 connections (42,000 sockets, both ends here) in three processes: more than the budget
        // lets the kernel's table, the full-detail table and one report hold one by one.
        let perHolder = 7_000
        let holders = try (0..<3).map { _ in try ConnectionHolder(count: perHolder) }
        defer { for h in holders { h.stop() } }
        let ports = Set(holders.map(\.port))
        var intervals: [UInt64: [[String: Any]]] = [:]
        func sentTo(_ port: Int) -> Int {
            intervals.values.joined()
                .filter { $0["direction"] as? String == "outgoing" && $0.port("raddr") == port }
                .map { $0.int("bytes_sent") }.reduce(0, +)
        }
        do {
            _ = try await waitFor("5 bytes on each of \(3 * perHolder) connections", timeout: .seconds(180)) {
                () async throws -> Bool? in
                guard agent.process.isRunning else { throw TestFailure("the agent exited: \(agent.log.suffix(2000))") }
                let after = intervals.keys.max() ?? before
                for (sequence, connections) in try await agent.intervals(after: after) {
                    intervals[sequence] = connections
                }
                return ports.allSatisfy { sentTo($0) >= 5 * perHolder } ? true : nil
            }
        } catch {
            let status = try? await agent.json("/status")
            throw TestFailure(
                "\(error): sent \(ports.map(sentTo)) of \(5 * perHolder) each in \(intervals.count) intervals;"
                    + " tracker \(status?["tracker"] ?? "?"); problems \(status?["problems"] ?? "?")")
        }
        let status = try await agent.json("/status")
        let tracker = status["tracker"] as? [String: Any] ?? [:]
        let problems = status["problems"] as? [String: Any] ?? [:]
        for port in ports {
            let rows = intervals.sorted { $0.key < $1.key }.flatMap { sequence, rows in
                rows.filter { $0["direction"] as? String == "outgoing" && $0.port("raddr") == port }
                    .map {
                        "#\(sequence): \($0.int("bytes_sent")) B in \($0.int("rolled_up")) from :\($0.port("laddr"))"
                    }
            }
            #expect(
                sentTo(port) == 5 * perHolder,
                "every byte, to port \(port), in the rollups: \(rows); tracker \(tracker); problems \(problems.keys.sorted())"
            )
        }
        let rolled = intervals.values.joined().filter { $0.int("rolled_up") > 1 }
        #expect(!rolled.isEmpty, "connections were rolled up")
        #expect(
            rolled.allSatisfy {
                $0["direction"] as? String == "outgoing" ? $0.port("laddr") == 0 : $0.port("raddr") == 0
            }, "a rolled-up row's ephemeral port is 0")

        let rss = (status["memory"] as? [String: Any] ?? [:]).int("rss_bytes")
        #expect(agent.process.isRunning, "alive")
        #expect(cgroup.oomKills == 0, "never OOM-killed")
        #expect(rss > 0 && rss < budget, "RSS \(rss) under the budget \(budget) (bounds \(bounds))")
        #expect(tracker.int("rolled_up_for_memory") > 0, "rollups counted: \(tracker)")
        #expect(problems["memory_rollup"] != nil, "and said in problems: \(problems.keys.sorted())")
    }
}
