/// How the agent's memory budget (`MemoryLimit.budgetBytes`) is shared between what grows with
/// load. Without a limit, each part keeps the bound it has when nothing constrains it.
public struct MemoryBudget: Sendable, Equatable {
    public var limit: MemoryLimit?

    public init(limit: MemoryLimit?) { self.limit = limit }

    /// Retained API intervals, as encoded JSON: a quarter of the budget, at most 64 MiB.
    public var retainedIntervalBytes: Int { share(of: 4, atMost: 64 << 20) }

    /// Intake messages waiting to be sent: an eighth of the budget, at most what was configured.
    public func intakeQueueBytes(configured: Int) -> Int { share(of: 8, atMost: configured) }

    private func share(of parts: UInt64, atMost ceiling: Int) -> Int {
        guard let limit else { return ceiling }
        return Int(min(UInt64(ceiling), max(1, limit.budgetBytes / parts)))
    }
}
