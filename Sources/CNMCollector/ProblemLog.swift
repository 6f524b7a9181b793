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
