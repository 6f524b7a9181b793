import CNMProcfs
import Logging

/// Logs the first occurrence of each kind of problem, and its recovery, instead of every event:
/// `/status` carries the counts.
struct ProblemLog {
    private var active: Set<String> = []
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    mutating func report(_ kind: String, _ message: @autoclosure () -> String) {
        guard active.insert(kind).inserted else { return }
        logger.warning("\(message()) (logged once; counted in /status as \(kind))")
    }

    mutating func resolved(_ kind: String, _ message: @autoclosure () -> String) {
        guard active.remove(kind) != nil else { return }
        logger.notice("\(message())")
    }
}

/// Problems met during one collection: how many of each kind, and the last one's details.
struct ProblemCounts: Sendable {
    private(set) var entries: [String: (count: UInt64, detail: String)] = [:]

    mutating func add(_ kind: String, by count: UInt64 = 1, _ detail: String) {
        guard count > 0 else { return }
        entries[kind, default: (0, "")].count += count
        entries[kind]?.detail = detail
    }
}

extension ProblemCounts {
    /// What went wrong reading `/proc` since the scanner's health was `before`.
    mutating func addScanProblems(_ now: ScanHealth, since before: ScanHealth) {
        func delta(_ a: UInt64, _ b: UInt64) -> UInt64 { a > b ? a - b : 0 }
        add("proc_vanished", by: delta(now.vanished, before.vanished), "a process exited while /proc was read")
        add(
            "proc_permission_denied", by: delta(now.permissionDenied, before.permissionDenied),
            "a process's fd directory could not be read: permission denied (the agent lacks SYS_PTRACE, or a capability that process holds)"
        )
        add("proc_malformed", by: delta(now.malformed, before.malformed), "an unreadable /proc file")
    }
}

extension ProblemCounts {
    /// What the memory budget cost the last pass: connections rolled up (`rolledUp` is the running
    /// total, `last` the total already counted), and open flows not followed for lack of room.
    mutating func addMemoryBounds(rolledUp: UInt64, since last: inout UInt64, notFollowed: Int, bound: Int) {
        add(
            "memory_rollup", by: rolledUp > last ? rolledUp - last : 0,
            "an interval held more connections than the memory budget allows one by one: they were rolled up"
                + " (ephemeral port, then remote end, set to 0), every count kept in the merged rows")
        last = rolledUp
        add(
            "memory_flows_not_followed", by: notFollowed > 0 ? 1 : 0,
            "\(notFollowed) open flows were not followed, the memory budget's bound being \(bound) flows:"
                + " each is counted when it closes")
    }
}
