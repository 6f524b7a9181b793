import CNMModel
import CNMReport

/// The JSON of `/status`: small, so it goes through `JSONEncoder`.
struct StatusJSON: Encodable {
    let s: AgentStatus
    let connectionsInLastReport: Int
    var memory: MemoryUsage? = nil
    var memoryBudget: MemoryBudget? = nil
    /// The API's retained intervals: how many, the bytes they are kept in, and reads that failed to decompress.
    var retained: RetainedJSON? = nil
    let now: Timestamp

    struct RetainedJSON: Encodable {
        var count: Int
        var bytes: Int
        var decompressionFailures: UInt64

        enum CodingKeys: String, CodingKey {
            case count, bytes
            case decompressionFailures = "decompression_failures"
        }
    }

    enum CodingKeys: String, CodingKey {
        case version, hostname, mode, strategies, polls, reports, problems, namespaces, docker, ecs, tracker, capture
        case memory
        case intake
        case dockerEvents = "docker_events"
        case modeReason = "mode_reason"
        case intervalSeconds = "interval_seconds"
        case sampleSeconds = "sample_seconds"
        case closedConnections = "closed_connections"
        case startedAt = "started_at"
        case uptimeSeconds = "uptime_seconds"
        case connectionsTracked = "connections_tracked"
        case connectionsInLastReport = "connections_in_last_report"
        case lastPollMicros = "last_poll_us"
        case healthy
        case retainedIntervals = "retained_intervals"
    }

    struct StrategyJSON: Encodable {
        var name: String
        var chosen: Bool
        var reason: String
    }

    /// `{state, reason, counters}`, the shape of every component.
    struct ComponentJSON: Encodable {
        var state: String
        var reason: String
        var counters: [String: UInt64]

        init(_ c: AgentStatus.Component) {
            state = c.state
            reason = c.reason
            counters = c.counters
        }
    }

    struct MemoryJSON: Encodable {
        var rssBytes: UInt64
        var heapInUseBytes: UInt64
        var heapFreeBytes: UInt64
        var budget: MemoryBudget?

        enum CodingKeys: String, CodingKey {
            case rssBytes = "rss_bytes"
            case heapInUseBytes = "heap_in_use_bytes"
            case heapFreeBytes = "heap_free_bytes"
            case limitBytes = "limit_bytes"
            case limitSource = "limit_source"
            case budgetBytes = "budget_bytes"
            case baselineBytes = "baseline_bytes"
            case bounds
        }

        /// What the budget lets each table hold (present with a limit).
        struct BoundsJSON: Encodable {
            var kernelFlows: Int
            var trackedFlows: Int
            var countedFlows: Int
            var reportConnections: Int?
            var closedFlows: Int?
            var retainedIntervalBytes: Int

            enum CodingKeys: String, CodingKey {
                case kernelFlows = "kernel_flows"
                case trackedFlows = "tracked_flows"
                case countedFlows = "counted_flows"
                case reportConnections = "report_connections"
                case closedFlows = "closed_flows"
                case retainedIntervalBytes = "retained_interval_bytes"
            }
        }

        func encode(to encoder: any Encoder) throws {
            var e = encoder.container(keyedBy: CodingKeys.self)
            try e.encode(rssBytes, forKey: .rssBytes)
            try e.encode(heapInUseBytes, forKey: .heapInUseBytes)
            try e.encode(heapFreeBytes, forKey: .heapFreeBytes)
            let limit = budget?.limit
            try e.encode(limit?.bytes, forKey: .limitBytes)
            try e.encode(limit?.source, forKey: .limitSource)
            try e.encode(limit?.budgetBytes, forKey: .budgetBytes)
            guard let budget, limit != nil else { return }
            try e.encode(budget.baselineBytes, forKey: .baselineBytes)
            try e.encode(
                BoundsJSON(
                    kernelFlows: budget.kernelFlows, trackedFlows: budget.trackedFlows,
                    countedFlows: budget.countedFlows, reportConnections: budget.reportConnections,
                    closedFlows: budget.closedFlows, retainedIntervalBytes: budget.retainedIntervalBytes),
                forKey: .bounds)
        }
    }

    struct ProblemJSON: Encodable {
        var count: UInt64
        var last: String?
    }

    struct TrackerJSON: Encodable {
        var tracked: Int
        var droppedTableFull: UInt64
        var closedWithoutFinalCounters: UInt64
        var counterRegressions: UInt64
        var completedFromCapture: UInt64
        var capturedWithoutSocket: UInt64
        var rolledUpForMemory: UInt64
        var openFlowsNotFollowed: Int
        var countedOnly: Int
        var peerFinAssumed: UInt64

        enum CodingKeys: String, CodingKey {
            case tracked
            case droppedTableFull = "dropped_table_full"
            case closedWithoutFinalCounters = "closed_without_final_counters"
            case counterRegressions = "counter_regressions"
            case completedFromCapture = "completed_from_capture"
            case capturedWithoutSocket = "captured_without_socket"
            case rolledUpForMemory = "rolled_up_for_memory"
            case openFlowsNotFollowed = "open_flows_not_followed"
            case countedOnly = "counted_only"
            case peerFinAssumed = "peer_fin_assumed"
        }
    }

    func encode(to encoder: any Encoder) throws {
        var e = encoder.container(keyedBy: CodingKeys.self)
        try e.encode(s.version, forKey: .version)
        try e.encode(s.hostname, forKey: .hostname)
        try e.encode(s.mode.rawValue, forKey: .mode)
        try e.encode(s.modeReason, forKey: .modeReason)
        try e.encode(
            s.strategies.map { StrategyJSON(name: $0.name, chosen: $0.chosen, reason: $0.reason) }, forKey: .strategies)
        try e.encode(s.intervalSeconds, forKey: .intervalSeconds)
        try e.encode(s.sampleSeconds, forKey: .sampleSeconds)
        try e.encode(ComponentJSON(s.closedConnections), forKey: .closedConnections)
        try e.encode(ComponentJSON(s.capture), forKey: .capture)
        try e.encode(formatTimestamp(s.startedAt), forKey: .startedAt)
        try e.encode(Double(now.nanoseconds - s.startedAt.nanoseconds) / 1e9, forKey: .uptimeSeconds)
        try e.encode(s.tracker.tracked, forKey: .connectionsTracked)
        try e.encode(connectionsInLastReport, forKey: .connectionsInLastReport)
        try e.encodeIfPresent(retained, forKey: .retainedIntervals)
        try e.encode(s.polls, forKey: .polls)
        try e.encode(s.reports, forKey: .reports)
        try e.encode(s.lastPollMicros, forKey: .lastPollMicros)
        try e.encodeIfPresent(
            memory.map {
                MemoryJSON(
                    rssBytes: $0.residentBytes, heapInUseBytes: $0.heapInUseBytes, heapFreeBytes: $0.heapFreeBytes,
                    budget: memoryBudget)
            }, forKey: .memory)
        try e.encode(s.namespaces, forKey: .namespaces)
        try e.encode(ComponentJSON(s.docker), forKey: .docker)
        try e.encode(ComponentJSON(s.dockerEvents), forKey: .dockerEvents)
        try e.encodeIfPresent(s.ecs.map(ComponentJSON.init), forKey: .ecs)
        try e.encodeIfPresent(s.intake, forKey: .intake)
        try e.encode(s.firstCollectionDone, forKey: .healthy)
        try e.encode(
            TrackerJSON(
                tracked: s.tracker.tracked,
                droppedTableFull: s.tracker.droppedTableFull,
                closedWithoutFinalCounters: s.tracker.closedWithoutFinalCounters,
                counterRegressions: s.tracker.counterRegressions,
                completedFromCapture: s.tracker.completedFromCapture,
                capturedWithoutSocket: s.tracker.capturedWithoutSocket,
                rolledUpForMemory: s.tracker.rolledUpForMemory,
                openFlowsNotFollowed: s.tracker.openNotFollowed,
                countedOnly: s.tracker.countedOnly,
                peerFinAssumed: s.tracker.peerFinAssumed
            ),
            forKey: .tracker
        )
        try e.encode(s.problems.mapValues { ProblemJSON(count: $0.count, last: $0.last) }, forKey: .problems)
    }
}
