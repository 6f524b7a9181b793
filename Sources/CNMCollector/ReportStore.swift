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
    private let state: Mutex<State>

    public init(status: AgentStatus, retained: Int = 16) {
        self.retained = retained
        self.state = Mutex(State(status: status))
    }

    public func publish(_ report: IntervalReport) {
        state.withLock {
            $0.recent.append(report)
            if $0.recent.count > retained { $0.recent.removeFirst($0.recent.count - retained) }
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
