import CNMModel
import CNMReport

/// One collection pass's outcome, for `/status`.
struct SampleResult: Sendable {
    var micros: UInt64
    var namespaces: Int
    var tracker: ConnectionTracker.Health
    var problems: ProblemCounts
    var closedConnections: AgentStatus.Component
    /// Containers of the sockets whose owners this sample found.
    var containerIDs: Set<String>
    /// Packet capture's state, in eBPF-less mode.
    var capture: AgentStatus.Component? = nil
}

/// A source of connections, read on the collection queue only.
protocol CollectorCore: AnyObject, Sendable {
    /// One pass. `beforeReport`: a report follows at once, so everything must be read.
    func sample(baseline: Bool, beforeReport: Bool) -> SampleResult
    func flush() -> [Connection]
    /// Stops what the core runs beside the collection loop.
    func stop()
}
