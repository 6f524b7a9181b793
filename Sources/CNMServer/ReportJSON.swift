import CNMModel
import CNMReport
import FoundationEssentials

/// The JSON contract of `/api/v1/connections`. Fields may be added; these stay.
struct ReportJSON: Encodable {
    var host: String
    var mode: String
    var sequence: UInt64
    var intervalStart: String
    var intervalEnd: String
    /// On Fargate, the task the connections belong to; absent elsewhere.
    var ecsTaskARN: String?
    var connections: [ConnectionJSON]

    enum CodingKeys: String, CodingKey {
        case host, mode, sequence, connections
        case intervalStart = "interval_start"
        case intervalEnd = "interval_end"
        case ecsTaskARN = "ecs_task_arn"
    }

    init(_ report: IntervalReport, host: String, mode: AgentStatus.Mode) {
        self.host = host
        self.mode = mode.rawValue
        self.sequence = report.sequence
        self.intervalStart = formatTimestamp(report.start)
        self.intervalEnd = formatTimestamp(report.end)
        self.ecsTaskARN = report.ecsTaskARN
        self.connections = report.connections.map(ConnectionJSON.init)
    }
}

struct AddressJSON: Encodable {
    var ip: String
    var port: UInt16
    var containerID: String?

    enum CodingKeys: String, CodingKey {
        case ip, port
        case containerID = "container_id"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ip, forKey: .ip)
        try c.encode(port, forKey: .port)
        try c.encode(containerID, forKey: .containerID)  // null, not absent, when unknown
    }
}

struct ConnectionJSON: Encodable {
    let c: Connection

    init(_ c: Connection) { self.c = c }

    enum CodingKeys: String, CodingKey {
        case type, family, direction, pid, netns, laddr, raddr, tags
        case intraHost = "intra_host"
        case processName = "process_name"
        case remotePid = "remote_pid"
        case remoteProcessName = "remote_process_name"
        case bytesSent = "bytes_sent"
        case bytesReceived = "bytes_received"
        case packetsSent = "packets_sent"
        case packetsReceived = "packets_received"
        case retransmits
        case tcpEstablished = "tcp_established"
        case tcpClosed = "tcp_closed"
        case tcpFailures = "tcp_failures"
        case rttMicros = "rtt_us"
        case rttVarMicros = "rtt_var_us"
        case rtoCount = "tcp_rto_count"
        case reorderingSeen = "tcp_reord_seen"
        case outOfOrderReceived = "tcp_rcv_ooo_pack"
        case deliveredCE = "tcp_delivered_ce"
        case ecnNegotiated = "tcp_ecn_negotiated"
        case countersKnown = "counters_known"
        case remoteTags = "remote_tags"
    }

    func encode(to encoder: any Encoder) throws {
        var e = encoder.container(keyedBy: CodingKeys.self)
        let k = c.key
        try e.encode(k.transport.rawValue, forKey: .type)
        try e.encode(k.family.rawValue, forKey: .family)
        try e.encode(k.direction.rawValue, forKey: .direction)
        try e.encode(c.intraHost, forKey: .intraHost)
        try e.encode(k.pid, forKey: .pid)
        try e.encode(c.processName, forKey: .processName)
        try e.encode(k.netns, forKey: .netns)
        try e.encode(
            AddressJSON(ip: k.local.address.description, port: k.local.port, containerID: c.localContainerID),
            forKey: .laddr
        )
        try e.encode(
            AddressJSON(ip: k.remote.address.description, port: k.remote.port, containerID: c.remoteContainerID),
            forKey: .raddr
        )
        try e.encode(c.remotePid, forKey: .remotePid)
        try e.encode(c.remoteProcessName, forKey: .remoteProcessName)
        let s = c.stats
        try e.encode(s.bytesSent, forKey: .bytesSent)
        try e.encode(s.bytesReceived, forKey: .bytesReceived)
        try e.encode(s.packetsSent, forKey: .packetsSent)
        try e.encode(s.packetsReceived, forKey: .packetsReceived)
        try e.encode(s.retransmits, forKey: .retransmits)
        try e.encode(s.tcpEstablished, forKey: .tcpEstablished)
        try e.encode(s.tcpClosed, forKey: .tcpClosed)
        try e.encode(
            Dictionary(uniqueKeysWithValues: s.tcpFailures.map { (String($0.key), $0.value) }),
            forKey: .tcpFailures
        )
        try e.encode(s.rttMicros, forKey: .rttMicros)
        try e.encode(s.rttVarMicros, forKey: .rttVarMicros)
        try e.encode(s.rtoCount, forKey: .rtoCount)
        try e.encode(s.reorderingSeen, forKey: .reorderingSeen)
        try e.encode(s.outOfOrderReceived, forKey: .outOfOrderReceived)
        try e.encode(s.deliveredCE, forKey: .deliveredCE)
        try e.encode(s.ecnNegotiated, forKey: .ecnNegotiated)
        try e.encode(c.countersKnown, forKey: .countersKnown)
        try e.encode(c.tags, forKey: .tags)
        try e.encode(c.remoteTags, forKey: .remoteTags)
    }
}

struct StatusJSON: Encodable {
    let s: AgentStatus
    let connectionsInLastReport: Int
    var memory: MemoryUsage? = nil
    let now: Timestamp

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

        enum CodingKeys: String, CodingKey {
            case rssBytes = "rss_bytes"
            case heapInUseBytes = "heap_in_use_bytes"
            case heapFreeBytes = "heap_free_bytes"
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

        enum CodingKeys: String, CodingKey {
            case tracked
            case droppedTableFull = "dropped_table_full"
            case closedWithoutFinalCounters = "closed_without_final_counters"
            case counterRegressions = "counter_regressions"
            case completedFromCapture = "completed_from_capture"
            case capturedWithoutSocket = "captured_without_socket"
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
        try e.encode(s.polls, forKey: .polls)
        try e.encode(s.reports, forKey: .reports)
        try e.encode(s.lastPollMicros, forKey: .lastPollMicros)
        try e.encodeIfPresent(
            memory.map {
                MemoryJSON(
                    rssBytes: $0.residentBytes, heapInUseBytes: $0.heapInUseBytes, heapFreeBytes: $0.heapFreeBytes)
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
                capturedWithoutSocket: s.tracker.capturedWithoutSocket
            ),
            forKey: .tracker
        )
        try e.encode(s.problems.mapValues { ProblemJSON(count: $0.count, last: $0.last) }, forKey: .problems)
    }
}

/// RFC 3339 in UTC with milliseconds.
func formatTimestamp(_ t: Timestamp) -> String {
    let date = Date(timeIntervalSince1970: Double(t.nanoseconds) / 1e9)
    return date.formatted(
        .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
}
