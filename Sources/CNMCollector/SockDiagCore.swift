import CLinux
import CNMCapture
import CNMModel
import CNMNetlink
import CNMProcfs
import CNMReport
import CNMSystem
import Logging

/// The eBPF-less collection state, touched only on the collection queue.
final class SockDiagCore: CollectorCore, @unchecked Sendable {

    private let source: SockDiagSource
    private var tracker: ConnectionTracker
    private var problemLog: ProblemLog
    private let configuration: Configuration
    private var lastScanHealth = ScanHealth()
    /// Packet headers of the agent's own namespace, when capture runs.
    private let capture: PacketCapture?
    private var captureState: AgentStatus.Component
    private var lastCaptureStatistics = CaptureStatistics()
    private var lastRolledUp: UInt64 = 0
    private var lastCaptureReaderFailures: UInt64 = 0
    private var interfaces: [String] = []

    init(configuration: Configuration, budget: MemoryBudget, logger: Logger) {
        self.configuration = configuration
        self.source = SockDiagSource(
            configuration: configuration, maxPendingDestroyed: budget.closedFlows ?? DestroyListener.defaultMaxPending)
        self.tracker = ConnectionTracker(
            maxTracked: budget.trackedFlows,
            maxReportConnections: budget.reportConnections ?? .max, maxCounted: budget.countedFlows)
        self.problemLog = ProblemLog(logger: logger)
        var capture: PacketCapture?
        if !configuration.packetCapture {
            captureState = .init("off", "DD_CNM_PACKET_CAPTURE=false")
        } else if source.ownNamespace == nil {
            captureState = .init("unavailable", "the agent's own network namespace is unknown (/proc/self/ns/net)")
        } else {
            do {
                capture = try PacketCapture(maxFlows: budget.trackedFlows)
                captureState = .init("on", "every interface of the agent's network namespace")
            } catch {
                captureState = .init(
                    "unavailable", error.code == .permissionDenied ? "no CAP_NET_RAW (\(error))" : "\(error)")
                logger.warning("packet capture unavailable", metadata: ["reason": "\(error)"])
            }
        }
        self.capture = capture
        // Started before the first read, so a connection that opens meanwhile is seen by one or the other.
        if let capture {
            tracker.capturedNamespace = source.ownNamespace
            interfaces = PacketCapture.interfaceNames()
            capture.start()
        }
    }

    func stop() { capture?.stop() }

    func sample(baseline: Bool, beforeReport: Bool) -> SampleResult {
        let started = monotonicMicros()
        var problems = ProblemCounts()
        let poll = source.poll(baseline: baseline, problems: &problems)
        let captured = capture.flatMap { takeCaptured($0, poll, beforeReport: beforeReport, problems: &problems) }
        let droppedBefore = tracker.health.droppedTableFull
        tracker.apply(poll, captured: captured)
        let owners = source.owners(for: tracker.inodesWithoutOwner)
        tracker.assignOwners(owners)
        if tracker.health.droppedTableFull > droppedBefore {
            problems.add(
                "table_full", by: tracker.health.droppedTableFull - droppedBefore,
                "more sockets than the table's bound, \(tracker.maxTracked) (the smaller of"
                    + " DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS and what the memory budget holds)"
            )
        }
        problems.addMemoryBounds(
            rolledUp: tracker.health.rolledUpForMemory, since: &lastRolledUp, notFollowed: 0, bound: tracker.maxTracked)
        problems.addScanProblems(source.scanHealth, since: lastScanHealth)
        lastScanHealth = source.scanHealth
        for (kind, problem) in problems.entries { problemLog.report(kind, problem.detail) }
        var closed: AgentStatus.Component =
            switch source.destroyNotificationsAvailable {
            case true?:
                .init(
                    "destroy_notifications",
                    "final counters from the kernel's socket-destroy notifications"
                        + (source.pumpProblem.map { ", read at each sample only: \($0)" }
                            ?? ", read as they come"))
            default:
                .init(
                    "sampled",
                    "sampled every \(configuration.sampleSeconds) s: destroy notifications unavailable"
                        + " (\(source.destroyUnavailableReason ?? "unknown")); a socket closing between two samples"
                        + (capture == nil
                            ? " loses what it carried after the last one"
                            : " has its last bytes counted by packet capture when capture saw it from its SYN"))
            }
        if capture != nil {
            closed.reason +=
                "; connections in the agent's network namespace that no read listed are counted by packet capture"
        }
        return SampleResult(
            micros: monotonicMicros() - started,
            namespaces: source.namespaceCount,
            tracker: tracker.health,
            problems: problems,
            closedConnections: closed,
            containerIDs: Set(owners.values.compactMap(\.containerID)),
            capture: captureState
        )
    }

    /// What capture saw since the last pass, judged against this pass's read of the agent's own
    /// namespace. Every packet up to the end of that read is taken in first, so each connection's
    /// sides are marked by every read that could have listed them before it is handed over.
    private func takeCaptured(
        _ capture: PacketCapture,
        _ poll: Poll,
        beforeReport: Bool,
        problems: inout ProblemCounts
    ) -> CapturedTraffic? {
        guard let netns = source.ownNamespace else { return nil }
        let window = poll.readWindows[netns]
        let readEnd = window?.upperBound ?? Timestamp.now.nanoseconds
        let drained = capture.drain(through: readEnd)
        if !drained {
            problems.add(
                "capture_reader",
                capture.readerFailure.map { "the packet capture's reader is down, restarting: \($0)" }
                    ?? "the packet capture's reader did not take the ring within 2 s: its connections wait for a later sample"
            )
        }
        let readerFailures = capture.readerFailures
        problems.add(
            "capture_reader_restarted", by: readerFailures &- lastCaptureReaderFailures,
            "the packet capture's reader failed and was restarted: \(capture.readerFailure ?? "")")
        lastCaptureReaderFailures = readerFailures
        if beforeReport {
            capture.setLocalAddresses(PacketCapture.namespaceAddresses())
            interfaces = PacketCapture.interfaceNames()
        }
        let now = Timestamp.now.nanoseconds
        let destroyed = poll.destroyed.filter { $0.id.netns == netns }
        var traffic = capture.withTable { table in
            if let window, let observations = poll.dumps[netns] { table.markSeen(observations, during: window) }
            if !destroyed.isEmpty { table.markSeen(destroyed, during: Int64.min...readEnd) }
            // Without every packet up to the read, a connection's last packets may still be in the ring.
            let complete = poll.dumps[netns] != nil ? window?.lowerBound : nil
            return CapturedTraffic(
                netns: netns,
                ended: drained ? table.takeEnded(completeReadStart: complete, now: now) : [],
                datagrams: beforeReport ? table.takeDatagrams(now: now) : []
            )
        }
        traffic.ended.removeAll { !isEnabled($0) }
        traffic.datagrams.removeAll { !isEnabled($0) }
        countCaptureProblems(capture.statistics(), &problems)
        return traffic
    }

    private func isEnabled(_ flow: CapturedFlow) -> Bool {
        (flow.transport == .tcp ? configuration.tcpEnabled : configuration.udpEnabled)
            && (flow.a.endpoint.address.family == .v4 || configuration.ipv6Enabled)
    }

    private func countCaptureProblems(_ now: CaptureStatistics, _ problems: inout ProblemCounts) {
        let before = lastCaptureStatistics
        lastCaptureStatistics = now
        problems.add(
            "capture_ring_dropped", by: now.ringDropped - before.ringDropped,
            "the packet capture ring was full and the kernel dropped packets before the agent read them: connections"
                + " that opened and closed between two samples may be missing or short")
        problems.add(
            "capture_table_full", by: now.tableFull - before.tableFull,
            "more flows than DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS=\(configuration.maxTrackedConnections)"
                + " in packet capture: packets of new ones were not counted")
        problems.add(
            "capture_displaced_dropped", by: now.displacedDropped - before.displacedDropped,
            "more ended connections reusing the same ends between two samples than the capture table holds:"
                + " the oldest were not counted")
        captureState = .init(
            "on", "interfaces \(interfaces.joined(separator: ", "))",
            counters: [
                "packets": now.packets, "ring_dropped": now.ringDropped, "ring_full": now.ringFreezes,
                "flows": UInt64(max(now.flows, 0)), "not_local": now.notLocal, "unparsed": now.unparsed,
                "table_full": now.tableFull, "displaced_dropped": now.displacedDropped,
            ])
    }

    func flush() -> [Connection] {
        defer { _ = cnm_linux_malloc_trim() }
        return tracker.flush()
    }
}
