/// How the agent's memory budget (`MemoryLimit.budgetBytes`) is shared between what grows with
/// load. What the agent holds before any load (its code, libraries and runtime: `baselineBytes`)
/// is not the load's to share. Each table's bound is its share divided by what one entry costs, so
/// that all of them full stay within the budget. Without a limit, each keeps the bound it has when
/// nothing constrains it.
///
/// Shares of what the load may use, in sixteenths: the kernel's flow tables 4 (their memory is
/// charged to the agent's cgroup as well), flows followed in full 2, flows followed by their
/// counts only 5, one interval's report 2, retained API intervals 1, closed flows waiting for the
/// next report 1, intake messages waiting to be sent 1.
public struct MemoryBudget: Sendable, Equatable {
    public var limit: MemoryLimit?
    public var baselineBytes: UInt64
    /// `DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS`: the flow table's bound when the budget allows more.
    public var configuredFlows: Int

    /// What one followed flow costs: its table entry and key, and its end in the report.
    public static let bytesPerTrackedFlow: UInt64 = 768
    /// What one flow followed by its counts only costs: its key and last counters in a hash table.
    public static let bytesPerCountedFlow: UInt64 = 200
    /// What one connection of a report costs until every output has it: its flow end, the grouping
    /// tables, the connection with its tags, its JSON and its share of the intake's message.
    public static let bytesPerReportedConnection: UInt64 = 3072
    /// What one closed flow costs between its close and the report: its record, then its flow end.
    public static let bytesPerClosedFlow: UInt64 = 512
    /// What one entry of the eBPF programs' flow tables costs in the kernel (key, value, element
    /// header, allocator slack), times the three tables of that size (open TCP, UDP, deferred).
    public static let bytesPerKernelFlow: UInt64 = 3 * 320
    /// What the agent adds to its start-up RSS once running, before any load: its threads, the
    /// ring buffer mapped in, code paged in by the first collection and report (measured: 18 MiB).
    public static let startupAllowanceBytes: UInt64 = 20 << 20
    /// The least the load gets, however close the baseline is to the budget: the agent must still
    /// report something.
    public static let minimumLoadBytes: UInt64 = 4 << 20

    public init(limit: MemoryLimit?, baselineBytes: UInt64 = 0, configuredFlows: Int = 65_536) {
        self.limit = limit
        self.baselineBytes = baselineBytes
        self.configuredFlows = configuredFlows
    }

    /// What the load may use, nil without a limit.
    public var loadBytes: UInt64? {
        limit.map { max(Self.minimumLoadBytes, $0.budgetBytes > baselineBytes ? $0.budgetBytes - baselineBytes : 0) }
    }

    /// Retained API intervals, as encoded JSON: at most 64 MiB.
    public var retainedIntervalBytes: Int { bytes(sixteenths: 1, atMost: 64 << 20) }

    /// Intake messages waiting to be sent: at most what was configured.
    public func intakeQueueBytes(configured: Int) -> Int { bytes(sixteenths: 1, atMost: configured) }

    /// Entries of each of the eBPF programs' flow tables (`configuredFlows` at most).
    public var kernelFlows: Int {
        entries(
            sixteenths: 4, each: Self.bytesPerKernelFlow, atMost: configuredFlows, atLeast: min(1024, configuredFlows))
    }

    /// Flows followed in full at once (`configuredFlows` at most).
    public var trackedFlows: Int {
        entries(
            sixteenths: 2, each: Self.bytesPerTrackedFlow, atMost: configuredFlows, atLeast: min(1024, configuredFlows))
    }

    /// Open flows past `trackedFlows` followed by their counts only, their deltas rolled up; without a
    /// limit, four times `configuredFlows` (a host with more sockets than that is told so in `/status`).
    public var countedFlows: Int {
        limit == nil
            ? configuredFlows.multipliedReportingOverflow(by: 4).partialValue
            : entries(sixteenths: 5, each: Self.bytesPerCountedFlow, atMost: .max, atLeast: 1024)
    }

    /// Connections one report may carry before they are rolled up; nil for no bound.
    public var reportConnections: Int? {
        limit == nil ? nil : entries(sixteenths: 2, each: Self.bytesPerReportedConnection, atMost: .max, atLeast: 256)
    }

    /// Closed flows kept one by one until the report; past it they are rolled up as they come. nil for no bound.
    public var closedFlows: Int? {
        limit == nil ? nil : entries(sixteenths: 1, each: Self.bytesPerClosedFlow, atMost: .max, atLeast: 1024)
    }

    private func bytes(sixteenths: UInt64, atMost ceiling: Int) -> Int {
        guard let load = loadBytes else { return ceiling }
        return Int(min(UInt64(ceiling), max(1, load / 16 * sixteenths)))
    }

    private func entries(sixteenths: UInt64, each: UInt64, atMost ceiling: Int, atLeast floor: Int) -> Int {
        guard let load = loadBytes else { return ceiling }
        return min(ceiling, max(floor, Int(min(load / 16 * sixteenths / each, UInt64(Int.max)))))
    }
}
