import CLinux
import CNMBPF
import CNMModel
import CNMProcfs
import CNMReport
import CNMSystem
import Glibc
import Synchronization

/// The eBPF source: closed flows folded in by the ring buffer's thread as they come; open ones read
/// by iterator in every network namespace and from the UDP table once per interval, just before the
/// report (their counters are cumulative, so reading them more often would buy nothing), one record
/// at a time; owners from the programs (or `/proc` for sockets older than the agent). `sample` and
/// `flush` run on the collection queue; `fold(closed:)` on the ring buffer's thread.
final class EBPFCore: CollectorCore, @unchecked Sendable {
    /// What both threads use: the tracker, and the containers by cgroup id of this interval and the
    /// one before (a host that starts and removes containers all day must not keep every cgroup it
    /// ever saw). Closed flows go straight into the tracker: none waits in a list, so a burst of
    /// 100,000 closes costs their rolled-up ends, not 100,000 records.
    private struct Shared {
        var tracker: FlowTracker
        var containerByCgroup = Generations<UInt64, String?>()
        /// Containers met for the first time since the last sample: their metadata may be new.
        var newContainers = Set<String>()
    }

    let programs: KernelPrograms
    private let configuration: Configuration
    private let shared: Mutex<Shared>
    private var scanner: SocketOwnerScanner
    private let ownNamespace = SocketOwnerScanner.ownNetworkNamespace()
    private var problemLog: ProblemLog
    private var lastTelemetry = EBPFTelemetry()
    private var lastScanHealth = ScanHealth()
    private var namespaceCount = 1
    private var lastLateRecords: UInt64 = 0
    private var lastRolledUp: UInt64 = 0
    private var lastReaderFailures: UInt64 = 0
    /// The deferred-table count at the last sweep, and whether the next sample must sweep anyway.
    private var deferredAtSweep: UInt64 = 0
    private var sweepAgain = false
    /// Open flows read by iterator before the tracker takes them, under one hold of its lock.
    private static let passChunk = 512

    init(programs: KernelPrograms, configuration: Configuration, budget: MemoryBudget, problemLog: ProblemLog) {
        self.programs = programs
        self.configuration = configuration
        self.shared = Mutex(
            Shared(
                tracker: FlowTracker(
                    hooksCountTCPBytes: programs.strategy == .sockLength, maxOpenFlows: budget.trackedFlows,
                    maxCountedFlows: budget.countedFlows, maxClosedEnds: budget.closedFlows ?? .max,
                    maxReportConnections: budget.reportConnections ?? .max)
            ))
        self.scanner = SocketOwnerScanner(procRoot: configuration.hostProc)
        self.problemLog = problemLog
    }

    /// Closed flows from the ring buffer (or the deferred table), folded into the interval as they come.
    func fold(closed batch: [FlowRecord]) {
        let now = monotonicMicros() * 1000
        shared.withLock { s in
            for var record in batch where isEnabled(record) {
                resolveContainer(&record, &s)
                s.tracker.observe(closed: record, now: now)
            }
        }
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
            fold(closed: takeDeferred(sweep: false, deferredCount: telemetry.ringBufferDeferred))
            return finish(started: started, telemetry: telemetry, problems: &problems)
        }
        var namespaces = scanner.networkNamespaces()
        if let own = ownNamespace { namespaces[own] = nil }
        var paths: [(netns: UInt64?, path: String?)] = [(ownNamespace, nil)]
        paths += namespaces.map { ($0.key, $0.value) }
        // Flows the iterators list as open, fed to the tracker as read; the UDP sockets that still exist.
        let iterationStartNanos = monotonicMicros() * 1000
        var liveUDP = Set<UInt64>()
        var complete = Set<UInt64>()
        // Fed to the tracker a chunk at a time, the lock taken for each: the ring buffer's thread
        // folds closed flows in between, so a burst of closes during a pass over 50,000 flows waits
        // milliseconds, not the whole pass, and does not overflow the ring.
        var chunk: [FlowRecord] = []
        chunk.reserveCapacity(Self.passChunk)
        func observeChunk() {
            shared.withLock { s in
                for var record in chunk {
                    resolveContainer(&record, &s)
                    s.tracker.observe(open: record, baseline: baseline, now: iterationStartNanos)
                }
            }
            chunk.removeAll(keepingCapacity: true)
        }
        shared.withLock { $0.tracker.beginPass() }
        for (netns, path) in paths {
            do {
                if configuration.tcpEnabled {
                    try programs.forEachTCPFlow(namespacePath: path) { record in
                        guard isEnabled(record) else { return }
                        chunk.append(record)
                        if chunk.count == Self.passChunk { observeChunk() }
                    }
                    observeChunk()
                }
                liveUDP.formUnion(try programs.udpSockets(namespacePath: path))
                if let netns { complete.insert(netns) }
            } catch {
                observeChunk()
                problems.add("ebpf_iterator", "namespace \(netns.map(String.init) ?? "own") : \(error)")
            }
        }
        // A UDP flow whose socket no iterator listed has closed: its table entry holds its final counts.
        var closed: [FlowRecord] = []
        var openUDP: [FlowRecord] = []
        for record in programs.udpFlows() where isEnabled(record) {
            let gone =
                !liveUDP.contains(record.id.socket) && complete.contains(record.netns)
                && record.id.birth < iterationStartNanos
            if gone {
                closed.append(record)
                programs.deleteUDPFlow(record)
            } else {
                openUDP.append(record)
            }
        }
        let telemetry = readTelemetry(&problems)
        closed += takeDeferred(sweep: true, deferredCount: telemetry.ringBufferDeferred).filter(isEnabled)
        let unowned: Set<UInt64> = shared.withLock { s in
            for var record in openUDP {
                resolveContainer(&record, &s)
                s.tracker.observe(open: record, baseline: baseline, now: iterationStartNanos)
            }
            for i in closed.indices { resolveContainer(&closed[i], &s) }
            s.tracker.endPass(closed: closed, complete: complete, now: monotonicMicros() * 1000)
            return s.tracker.inodesWithoutOwner
        }
        // /proc is walked outside the lock: closed flows keep coming in meanwhile.
        if !unowned.isEmpty {
            let owners = scanner.owners(for: unowned)
            shared.withLock { $0.tracker.assignOwners(owners) }
        }
        problems.addScanProblems(scanner.health, since: lastScanHealth)
        lastScanHealth = scanner.health
        namespaceCount = paths.count
        return finish(started: started, telemetry: telemetry, problems: &problems)
    }

    /// Closed flows waiting in the deferred table (the ring buffer was full). Walking it costs as
    /// much empty as full, so between full passes it is swept only after the programs counted a
    /// deferral (and once more after that: the count moves just before the entry lands).
    private func takeDeferred(sweep: Bool, deferredCount: UInt64) -> [FlowRecord] {
        let changed = deferredCount != deferredAtSweep
        guard sweep || changed || sweepAgain else { return [] }
        let deferred = programs.takeDeferredClosed()
        deferredAtSweep = deferredCount
        sweepAgain = changed || !deferred.isEmpty
        return deferred
    }

    private func finish(started: UInt64, telemetry: EBPFTelemetry, problems: inout ProblemCounts) -> SampleResult {
        countTelemetry(telemetry, &problems)
        let (trackerHealth, maxOpenFlows, containers) = shared.withLock { s in
            defer { s.newContainers = [] }
            return (s.tracker.health, s.tracker.maxOpenFlows, s.newContainers)
        }
        let late = trackerHealth.lateRecordsIgnored
        problems.add(
            "late_records_ignored", by: late - lastLateRecords,
            "an iterator listed a socket that had just closed: its record was ignored (its final record counts it)")
        lastLateRecords = late
        problems.addMemoryBounds(
            rolledUp: trackerHealth.rolledUpForMemory, since: &lastRolledUp,
            notFollowed: trackerHealth.openNotFollowed, bound: maxOpenFlows)
        for (kind, problem) in problems.entries { problemLog.report(kind, problem.detail) }
        var health = ConnectionTracker.Health()
        health.tracked = trackerHealth.tracked
        health.droppedTableFull = lastTelemetry.tableFull
        health.closedWithoutFinalCounters = trackerHealth.closedWithoutFinalRecord
        health.counterRegressions = trackerHealth.counterRegressions
        health.rolledUpForMemory = trackerHealth.rolledUpForMemory
        health.openNotFollowed = trackerHealth.openNotFollowed
        health.countedOnly = trackerHealth.countedOnly
        return SampleResult(
            micros: monotonicMicros() - started,
            namespaces: namespaceCount,
            tracker: health,
            problems: problems,
            closedConnections: .init(
                "ring_buffer", "final counters from the eBPF ring buffer (\(programs.strategy.rawValue))"),
            containerIDs: containers
        )
    }

    func stop() {}

    func flush() -> [Connection] {
        // The interval's records are freed by now: give their pages back rather than keep the peak.
        defer { _ = cnm_linux_malloc_trim() }
        return shared.withLock { s in
            s.containerByCgroup.advance()
            return s.tracker.flush()
        }
    }

    /// Whether `DD_DISABLE_*_TRACING` leaves this flow in the reports.
    private func isEnabled(_ r: FlowRecord) -> Bool {
        (r.transport == .tcp ? configuration.tcpEnabled : configuration.udpEnabled)
            && (r.local.address.family == .v4 || configuration.ipv6Enabled)
    }

    /// Fills in the record's container from its cgroup's name, remembered per cgroup.
    private func resolveContainer(_ record: inout FlowRecord, _ s: inout Shared) {
        let id = record.cgroupID
        guard id != 0 else { return }
        if let known = s.containerByCgroup.refresh(id) {  // still in use: kept another interval
            record.containerID = known
            return
        }
        guard let name = programs.cgroupName(id) else { return }
        let container = containerID(fromCgroupName: name)
        s.containerByCgroup.set(container, for: id)
        if let container { s.newContainers.insert(container) }
        record.containerID = container
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
            "more flows than the eBPF flow table holds (\(programs.maxFlows): the smaller of"
                + " DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS and what the memory budget holds): "
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
