import CNMModel
import Synchronization

/// The latest reports and the agent's health, shared between the collection loop (writer) and the
/// HTTP API and terminal view (readers).
public final class ReportStore: Sendable {
    private struct State {
        var recent: [IntervalReport] = []
        var status: AgentStatus
    }

    /// Reports kept for readers that poll less often than the interval (`/api/v1/intervals`).
    public let retained: Int
    /// Connections kept in reports older than the latest: memory stays bounded on busy hosts,
    /// where the latest report alone may hold tens of thousands.
    public let retainedConnections: Int
    private let state: Mutex<State>

    public init(status: AgentStatus, retained: Int = 16, retainedConnections: Int = 10_000) {
        self.retained = retained
        self.retainedConnections = retainedConnections
        self.state = Mutex(State(status: status))
    }

    public func publish(_ report: IntervalReport) {
        state.withLock {
            $0.recent.append(report)
            var older = $0.recent.dropLast().reduce(0) { $0 + $1.connections.count }
            while $0.recent.count > 1 && ($0.recent.count > retained || older > retainedConnections) {
                older -= $0.recent.removeFirst().connections.count
            }
        }
    }

    public var latest: IntervalReport? { state.withLock { $0.recent.last } }

    /// Retained reports with a sequence number above `sequence`, oldest first.
    public func reports(after sequence: UInt64) -> [IntervalReport] {
        state.withLock { $0.recent.filter { $0.sequence > sequence } }
    }

    public var status: AgentStatus { state.withLock { $0.status } }

    public func updateStatus(_ change: (inout AgentStatus) -> Void) {
        state.withLock { change(&$0.status) }
    }
}
