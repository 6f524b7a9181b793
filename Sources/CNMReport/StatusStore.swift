import CNMModel
import Synchronization

/// The agent's health, shared between the collection loop and the components that update it
/// (writers) and the HTTP API (reader).
public final class StatusStore: Sendable {
    private let state: Mutex<AgentStatus>

    public init(status: AgentStatus) {
        self.state = Mutex(status)
    }

    public var status: AgentStatus { state.withLock { $0 } }

    public func updateStatus(_ change: (inout AgentStatus) -> Void) {
        state.withLock { change(&$0) }
    }
}
