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
