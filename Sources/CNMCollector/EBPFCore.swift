import CLinux
import CNMBPF
import CNMModel
import CNMProcfs
import CNMReport
import CNMSystem
import Glibc
import Synchronization

/// Closed flows handed over by the ring buffer's thread, waiting for the next pass. Bounded: past
/// `limit` the oldest are dropped and counted (the pass rate keeps it far from that).
final class ClosedFlowQueue: Sendable {
    private let state = Mutex<(records: [FlowRecord], dropped: UInt64)>(([], 0))
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    func append(_ batch: [FlowRecord]) {
        state.withLock {
            $0.records += batch
            let excess = $0.records.count - limit
            if excess > 0 {
                $0.records.removeFirst(excess)
                $0.dropped += UInt64(excess)
            }
        }
    }

    func take() -> (records: [FlowRecord], dropped: UInt64) {
        state.withLock { s in
            defer { s = ([], 0) }
            return s
        }
    }
}

/// The eBPF source: closed flows from the ring buffer every sample; open ones read by iterator in
/// every network namespace and from the UDP table once per interval, just before the report (their
/// counters are cumulative, so reading them more often would buy nothing); owners from the programs
/// (or `/proc` for sockets older than the agent). Used only from the collection queue.
final class EBPFCore: CollectorCore, @unchecked Sendable {
    let programs: KernelPrograms
    let closedQueue: ClosedFlowQueue
    private let configuration: Configuration
    private var tracker: FlowTracker
    private var scanner: SocketOwnerScanner
    private let ownNamespace = SocketOwnerScanner.ownNetworkNamespace()
    private var problemLog: ProblemLog
    /// Containers by cgroup id, of this interval and the one before: a host that starts and removes
    /// containers all day must not keep every cgroup it ever saw.
    private var containerByCgroup = Generations<UInt64, String?>()
    private var lastTelemetry = EBPFTelemetry()
    private var lastScanHealth = ScanHealth()
    private var namespaceCount = 1
    private var lastLateRecords: UInt64 = 0
    private var lastReaderFailures: UInt64 = 0
    /// The deferred-table count at the last sweep, and whether the next sample must sweep anyway.
    private var deferredAtSweep: UInt64 = 0
    private var sweepAgain = false

    init(programs: KernelPrograms, configuration: Configuration, problemLog: ProblemLog) {
        self.programs = programs
        self.configuration = configuration
        self.closedQueue = ClosedFlowQueue(limit: max(configuration.maxTrackedConnections * 4, 100_000))
        self.tracker = FlowTracker(hooksCountTCPBytes: programs.strategy == .sockLength)
        self.scanner = SocketOwnerScanner(procRoot: configuration.hostProc)
        self.problemLog = problemLog
    }

    func sample(baseline: Bool, beforeReport: Bool) -> SampleResult {
        let started = monotonicMicros()
        var problems = ProblemCounts()
        if !programs.drainClosed() {
            problems.add(
                "ring_buffer_reader",
                programs.closedReaderFailure.map { "the ring buffer's reader is down, restarting: \($0)" }
                    ?? "the ring buffer's reader did not answer within 2 s")
        }
        let readerFailures = programs.closedReaderFailures
        problems.add(
            "ring_buffer_reader_restarted", by: readerFailures &- lastReaderFailures,
            "the ring buffer's reader failed and was restarted: \(programs.closedReaderFailure ?? "")")
        lastReaderFailures = readerFailures
        guard baseline || beforeReport else {
            let telemetry = readTelemetry(&problems)
            var closed = takeClosed(&problems, sweepDeferred: false, deferredCount: telemetry.ringBufferDeferred)
            closed.removeAll { !isEnabled($0) }
            resolveContainers(&closed)
            tracker.apply(closed: closed, now: monotonicMicros() * 1000)
            return finish(
                started: started, telemetry: telemetry, problems: &problems,
                containers: closed.compactMap(\.containerID))
        }
        var namespaces = scanner.networkNamespaces()
        if let own = ownNamespace { namespaces[own] = nil }
        // Flows the iterators list as open, and the UDP sockets that still exist.
        let iterationStartNanos = monotonicMicros() * 1000
        var open: [FlowRecord] = []
        var liveUDP = Set<UInt64>()
        var complete = Set<UInt64>()
        var paths: [(netns: UInt64?, path: String?)] = [(ownNamespace, nil)]
        paths += namespaces.map { ($0.key, $0.value) }
        for (netns, path) in paths {
            do {
                if configuration.tcpEnabled { open += try programs.tcpFlows(namespacePath: path) }
                liveUDP.formUnion(try programs.udpSockets(namespacePath: path))
                if let netns { complete.insert(netns) }
            } catch {
                problems.add("ebpf_iterator", "namespace \(netns.map(String.init) ?? "own") : \(error)")
            }
        }
        // A UDP flow whose socket no iterator listed has closed: its table entry holds its final counts.
        var closed: [FlowRecord] = []
        for record in programs.udpFlows() {
            let gone =
                !liveUDP.contains(record.id.socket) && complete.contains(record.netns)
                && record.id.birth < iterationStartNanos
            if gone {
                closed.append(record)
                programs.deleteUDPFlow(record)
            } else {
                open.append(record)
            }
        }
        let telemetry = readTelemetry(&problems)
        closed += takeClosed(&problems, sweepDeferred: true, deferredCount: telemetry.ringBufferDeferred)
        open.removeAll { !isEnabled($0) }
        closed.removeAll { !isEnabled($0) }

        resolveContainers(&open)
        resolveContainers(&closed)
        tracker.apply(
            open: open, closed: closed, complete: complete, baseline: baseline, now: monotonicMicros() * 1000)
        let unowned = tracker.inodesWithoutOwner
        if !unowned.isEmpty { tracker.assignOwners(scanner.owners(for: unowned)) }
        problems.addScanProblems(scanner.health, since: lastScanHealth)
        lastScanHealth = scanner.health
        namespaceCount = paths.count
        return finish(
            started: started, telemetry: telemetry, problems: &problems,
            containers: open.compactMap(\.containerID) + closed.compactMap(\.containerID))
    }

    /// Closed flows waiting in the queue and in the deferred table. Walking the deferred table
    /// costs as much empty as full, so between full passes it is swept only after the programs
    /// counted a deferral (and once more after that: the count moves just before the entry lands).
    private func takeClosed(_ problems: inout ProblemCounts, sweepDeferred: Bool, deferredCount: UInt64)
        -> [FlowRecord]
    {
        let queued = closedQueue.take()
        problems.add(
            "closed_queue_full", by: queued.dropped,
            "closed flows arrived faster than the collector took them: the oldest were dropped")
        let changed = deferredCount != deferredAtSweep
        guard sweepDeferred || changed || sweepAgain else { return queued.records }
        let deferred = programs.takeDeferredClosed()
        deferredAtSweep = deferredCount
        sweepAgain = changed || !deferred.isEmpty
        return queued.records + deferred
    }

    private func finish(started: UInt64, telemetry: EBPFTelemetry, problems: inout ProblemCounts, containers: [String])
        -> SampleResult
    {
        countTelemetry(telemetry, &problems)
        let late = tracker.health.lateRecordsIgnored
        problems.add(
            "late_records_ignored", by: late - lastLateRecords,
            "an iterator listed a socket that had just closed: its record was ignored (its final record counts it)")
        lastLateRecords = late
        for (kind, problem) in problems.entries { problemLog.report(kind, problem.detail) }
        var health = ConnectionTracker.Health()
        health.tracked = tracker.health.tracked
        health.droppedTableFull = lastTelemetry.tableFull
        health.closedWithoutFinalCounters = tracker.health.closedWithoutFinalRecord
        health.counterRegressions = tracker.health.counterRegressions
        return SampleResult(
            micros: monotonicMicros() - started,
            namespaces: namespaceCount,
            tracker: health,
            problems: problems,
            closedConnections: .init(
                "ring_buffer", "final counters from the eBPF ring buffer (\(programs.strategy.rawValue))"),
            containerIDs: Set(containers)
        )
    }

    func stop() {}

    func flush() -> [Connection] {
        // The interval's records are freed by now: give their pages back rather than keep the peak.
        defer { _ = cnm_linux_malloc_trim() }
        containerByCgroup.advance()
        return tracker.flush()
    }

    /// Whether `DD_DISABLE_*_TRACING` leaves this flow in the reports.
    private func isEnabled(_ r: FlowRecord) -> Bool {
        (r.transport == .tcp ? configuration.tcpEnabled : configuration.udpEnabled)
            && (r.local.address.family == .v4 || configuration.ipv6Enabled)
    }

    /// Fills in each record's container from its cgroup's name, remembered per cgroup.
    private func resolveContainers(_ records: inout [FlowRecord]) {
        for i in records.indices where records[i].cgroupID != 0 {
            let id = records[i].cgroupID
            if let known = containerByCgroup.refresh(id) {  // still in use: kept another interval
                records[i].containerID = known
                continue
            }
            guard let name = programs.cgroupName(id) else { continue }
            let container = containerID(fromCgroupName: name)
            containerByCgroup.set(container, for: id)
            records[i].containerID = container
        }
    }

    /// The programs' counters; when the map cannot be read, the last ones (so that nothing seems
    /// to have happened), and the failure is counted.
    private func readTelemetry(_ problems: inout ProblemCounts) -> EBPFTelemetry {
        guard let telemetry = programs.telemetry() else {
            problems.add("ebpf_telemetry_unreadable", "the programs' loss counters could not be read")
            return lastTelemetry
        }
        return telemetry
    }

    private func countTelemetry(_ now: EBPFTelemetry, _ problems: inout ProblemCounts) {
        let gained = now.increase(since: lastTelemetry)
        lastTelemetry = now
        problems.add(
            "ebpf_table_full", by: gained.tableFull,
            "more flows than DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS=\(configuration.maxTrackedConnections): "
                + "new ones are read from the kernel's counters without an owner, UDP ones are not counted")
        problems.add(
            "ring_buffer_deferred", by: gained.ringBufferDeferred,
            "the ring buffer was full: closed flows waited in the deferred table (nothing lost)")
        problems.add(
            "closed_flows_lost", by: gained.closedLost,
            "the ring buffer and the deferred table were both full: closed flows lost their last counters")
        problems.add(
            "udp_peer_unknown", by: gained.udpPeerUnknown,
            "unconnected UDP datagrams whose peer address the process did not ask for (recv without an address)")
        problems.add(
            "syscall_table_full", by: gained.syscallTableFull,
            "more socket syscalls in flight than the argument table holds")
    }
}
