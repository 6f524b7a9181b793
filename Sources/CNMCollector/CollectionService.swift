import CLinux
import CNMBPF
import CNMCapture
import CNMDocker
import CNMECS
import CNMModel
import CNMProcfs
import CNMReport
import CNMSystem
import Dispatch
import Glibc
import Logging
import ServiceLifecycle
import Synchronization

/// The collection loop: reads sockets every sample period, publishes a report every interval to the
/// report stream, tags connections with container metadata, and keeps `/status` current.
public final class CollectionService: Service, Sendable {
    private let configuration: Configuration
    /// Where `/status` is kept.
    private let store: ReportStore
    private let reports: ReportStream
    private let logger: Logger
    /// Blocking kernel and /proc reads run here, never on the async pool.
    private let queue = DispatchQueue(label: "cnm.collector")
    /// Container id → tags, and how many refreshes have completed.
    private let containerTags = Mutex<ContainerView>(ContainerView())

    /// What the last Docker refresh said about the host's containers.
    private struct ContainerView {
        /// Docker's and the ECS endpoint's tags, merged.
        var tags: [String: [String]] = [:]
        var dockerTags: [String: [String]] = [:]
        var ecsTags: [String: [String]] = [:]
        /// The Fargate task's tags, for flows without a known container.
        var taskWideTags: [String] = []
        var fargateTaskARN: String?
        var excluded: Set<String> = []
        var byAddress: [IPAddress: String] = [:]
        var published: [ContainerMetadata.PublishedPort: String] = [:]
        var refreshes: UInt64 = 0
    }

    public init(configuration: Configuration, status store: ReportStore, reports: ReportStream, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.reports = reports
        self.logger = logger
    }

    public func run() async throws {
        let docker = DockerTagger(
            configuration: configuration, ownContainerID: containerID(ofProcess: "self"))
        let ecs = configuration.ecsMetadataURI.map {
            ECSTagger(uri: $0, timeoutMilliseconds: configuration.ecsMetadataTimeoutMilliseconds)
        }
        // Tags are refreshed beside collection, so a slow or hanging daemon never delays a sample.
        let (tagRequests, requestTags) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        await withDiscardingTaskGroup { group in
            group.addTask {
                var log = ProblemLog(logger: self.logger)
                for await _ in tagRequests { await self.refreshTags(docker, ecs, log: &log) }
            }
            group.addTask {
                while (try? await Task.sleep(for: .seconds(10))) != nil { requestTags.yield() }
            }
            if let events = docker.events {
                group.addTask { await self.followEvents(events, docker) }
            }
            requestTags.yield()
            // Graceful shutdown (SIGTERM, SIGINT) cancels the loop; the report in progress is dropped.
            await cancelWhenGracefulShutdown {
                await self.collect(requestTags: { requestTags.yield() })
            }
            requestTags.finish()
            group.cancelAll()
        }
    }

    /// Picks the mode: eBPF with the first strategy that loads and attaches, unless eBPF-less is
    /// forced or nothing does. Says why in the log and in `/status`.
    private func chooseCore() -> (any CollectorCore, KernelPrograms?) {
        var strategies: [AgentStatus.Strategy] = []
        var programs: KernelPrograms?
        let candidates: [EBPFStrategy] =
            switch configuration.ebpfStrategy {
            case .auto: EBPFStrategy.allCases
            case .sockLength: [.sockLength]
            case .kernelCounters: [.kernelCounters]
            }
        var whyNot: String
        if configuration.forceEBPFless {
            whyNot = "DD_NETWORK_CONFIG_ENABLE_EBPFLESS=true"
        } else if access("/sys/kernel/btf/vmlinux", R_OK) != 0 {
            whyNot = "the kernel has no BTF (/sys/kernel/btf/vmlinux), which the CO-RE programs need"
        } else if !KernelPrograms.areBuiltIn {
            whyNot = "this binary was built without its eBPF programs (build with `make build`)"
        } else {
            whyNot = ""
        }
        for strategy in EBPFStrategy.allCases {
            let name = "ebpf/\(strategy.rawValue)"
            guard whyNot.isEmpty || programs != nil else {
                strategies.append(.init(name: name, chosen: false, reason: whyNot))
                continue
            }
            guard programs == nil else {
                strategies.append(.init(name: name, chosen: false, reason: "a strategy before it was chosen"))
                continue
            }
            guard candidates.contains(strategy) else {
                strategies.append(
                    .init(
                        name: name, chosen: false, reason: "DD_CNM_EBPF_STRATEGY=\(configuration.ebpfStrategy.rawValue)"
                    ))
                continue
            }
            do {
                programs = try KernelPrograms(strategy: strategy, maxFlows: configuration.maxTrackedConnections)
                strategies.append(
                    .init(name: name, chosen: true, reason: "loaded and attached; needs \(strategy.needs)"))
            } catch {
                logger.warning("eBPF strategy \(strategy.rawValue) unavailable: \(error)")
                let firstLine = error.description.split(separator: "\n").first.map(String.init) ?? ""
                strategies.append(.init(name: name, chosen: false, reason: firstLine))
            }
        }
        if programs == nil && whyNot.isEmpty {
            whyNot = "no eBPF strategy loaded: " + strategies.map { "\($0.name): \($0.reason)" }.joined(separator: "; ")
        }
        strategies.append(
            .init(
                name: "sock_diag", chosen: programs == nil,
                reason: programs == nil ? "NETLINK_SOCK_DIAG answers in every namespace" : "eBPF mode runs"))
        let mode: AgentStatus.Mode = programs == nil ? .ebpfless : .ebpf
        let reason =
            programs.map { "eBPF programs loaded and attached (strategy \($0.strategy.rawValue))" } ?? whyNot
        store.updateStatus {
            $0.mode = mode
            $0.modeReason = reason
            $0.sampleSeconds = configuration.sampleSeconds
            $0.strategies = strategies
            if programs != nil { $0.capture = "off: eBPF mode, whose programs see every connection" }
        }
        logger.info(
            "collecting",
            metadata: [
                "mode": "\(mode.rawValue)", "reason": "\(reason)", "interval_s": "\(configuration.intervalSeconds)",
                "api": "\(configuration.httpAddress)",
            ]
        )
        if let programs {
            return (
                EBPFCore(programs: programs, configuration: configuration, problemLog: ProblemLog(logger: logger)),
                programs
            )
        }
        return (SockDiagCore(configuration: configuration, logger: logger), nil)
    }

    private func collect(requestTags: @escaping @Sendable () -> Void) async {
        let (core, programs) = await onQueue { self.chooseCore() }
        defer {
            core.stop()
            programs?.close()
        }
        if let programs, let ebpf = core as? EBPFCore {
            // Closed flows leave the ring buffer on their own thread, whatever the collection loop does.
            let queue = ebpf.closedQueue
            programs.startReadingClosed { queue.append($0) }
        }

        let sampleMicros = UInt64(configuration.sampleSeconds * 1_000_000)
        let intervalMicros = UInt64(configuration.intervalSeconds) * 1_000_000
        var intervalStart = Timestamp.now
        let firstSample = await onQueue { core.sample(baseline: true, beforeReport: false) }
        publishStatus(firstSample)
        logger.info("first collection done", metadata: ["namespaces": "\(firstSample.namespaces)"])

        let startMicros = monotonicMicros()
        var nextSample = startMicros + sampleMicros
        var nextReport = startMicros + intervalMicros
        var sequence: UInt64 = 0
        while !Task.isCancelled {
            let wake = min(nextSample, nextReport)
            let now = monotonicMicros()
            if wake > now {
                do {
                    try await Task.sleep(for: .microseconds(wake - now))
                } catch {
                    break
                }
            }
            // The sample that ends an interval reads everything (eBPF mode reads open flows only then).
            let beforeReport = monotonicMicros() >= nextReport
            let sample = await onQueue { core.sample(baseline: false, beforeReport: beforeReport) }
            publishStatus(sample)
            let after = monotonicMicros()
            // New containers should carry their names from their first report on.
            if containerTags.withLock({ known in sample.containerIDs.contains { known.tags[$0] == nil } }) {
                requestTags()
            }
            while nextSample <= after { nextSample += sampleMicros }
            guard beforeReport else { continue }
            while nextReport <= after { nextReport += intervalMicros }
            sequence += 1
            let end = Timestamp.now
            var connections = await onQueue { core.flush() }
            let tags = await tags(for: connections, requestTags: requestTags)
            let view = containerTags.withLock { $0 }
            if !view.excluded.isEmpty {
                connections.removeAll { $0.localContainerID.map(view.excluded.contains) ?? false }
            }
            // A peer whose socket was not seen (it only listened, or closed unseen) is still a local
            // container when its address is one, or when the flow went to a port published to it.
            for i in connections.indices where connections[i].remoteContainerID == nil {
                let key = connections[i].key
                let remote = key.remote.address.unmappedV4 ?? key.remote.address
                if let id = view.byAddress[remote] {
                    connections[i].remoteContainerID = id
                    connections[i].intraHost = true
                } else if key.direction == .outgoing && (remote.isLoopback || connections[i].intraHost) {
                    let any = ContainerMetadata.PublishedPort(transport: key.transport, hostPort: key.remote.port)
                    var exact = any
                    exact.hostAddress = remote
                    connections[i].remoteContainerID = view.published[exact] ?? view.published[any]
                }
            }
            // On Fargate the task is the host: its tags go on flows whose container is unknown too.
            let hostTags = configuration.hostTags + view.taskWideTags.filter { !configuration.hostTags.contains($0) }
            // One tag array per container, shared by all its connections.
            var localTags: [String: [String]] = [:]
            for i in connections.indices {
                if let id = connections[i].localContainerID {
                    if localTags[id] == nil { localTags[id] = configuration.hostTags + (tags[id] ?? []) }
                    connections[i].tags = localTags[id]!
                } else {
                    connections[i].tags = hostTags
                }
                connections[i].remoteTags = connections[i].remoteContainerID.flatMap { tags[$0] } ?? []
            }
            let report = IntervalReport(
                sequence: sequence, start: intervalStart, end: end, connections: connections,
                ecsTaskARN: view.fargateTaskARN)
            intervalStart = end
            store.updateStatus { $0.reports = sequence }
            reports.publish(report)
        }
    }

    /// The tag map for a report. A container met for the first time may have started a moment ago:
    /// one refresh is awaited (briefly) so its first report already carries its name.
    private func tags(for connections: [Connection], requestTags: @Sendable () -> Void) async -> [String: [String]] {
        let ids = Set(connections.flatMap { [$0.localContainerID, $0.remoteContainerID] }.compactMap { $0 })
        var (known, refreshes) = containerTags.withLock { ($0.tags, $0.refreshes) }
        // A refresh already under way may have listed containers before this one started: ask again
        // after each refresh that still lacks one, for up to 2 s.
        let deadline = monotonicMicros() + 2_000_000
        while ids.contains(where: { known[$0] == nil }) && monotonicMicros() < deadline {
            requestTags()
            while monotonicMicros() < deadline, containerTags.withLock({ $0.refreshes }) <= refreshes {
                try? await Task.sleep(for: .milliseconds(20))
            }
            (known, refreshes) = containerTags.withLock { ($0.tags, $0.refreshes) }
        }
        return known
    }

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
        }
    }

    private func refreshTags(_ docker: DockerTagger, _ ecs: ECSTagger?, log: inout ProblemLog) async {
        async let fromECS = ecs?.refresh()
        let result = await docker.refresh()
        apply(result, await fromECS, log: &log)
    }

    /// Keeps the tags current between refreshes: a container that starts or is renamed is inspected
    /// at once. Reconnects by itself; a lost stream is logged once and counted.
    private func followEvents(_ events: DockerEventWatcher, _ docker: DockerTagger) async {
        var log = ProblemLog(logger: logger)
        await events.run { update in
            defer {
                let h = events.health
                let c = h.counts
                let summary =
                    "\(h.connected ? "connected" : "disconnected (\(h.lastError ?? "?"))"), \(c.events) events, "
                    + "\(c.invalidLines) unreadable lines and \(c.otherTypes) non-container events skipped"
                store.updateStatus { $0.dockerEvents = summary }
            }
            switch update {
            case .connected:
                log.resolved("docker_events", "Docker events stream connected")
            case .disconnected(let error):
                log.report("docker_events", "Docker events stream lost, reconnecting with backoff: \(error)")
                store.updateStatus { $0.count("docker_events_\(error.kind.rawValue)", detail: "\(error)") }
            case .event(let event):
                switch event.action {
                case .start, .rename:
                    apply(await docker.containerChanged(id: event.containerID), nil, log: &log)
                default:
                    break  // a dead container keeps its tags for the grace period
                }
            }
        }
    }

    /// Takes in a refresh's outcome (or one container's, `ecs` nil then).
    private func apply(_ result: DockerTagger.Result, _ ecsResult: ECSTagger.Result?, log: inout ProblemLog) {
        // One update, the refresh count last: a reader waiting for this refresh sees all of it.
        containerTags.withLock { view in
            if let tags = result.tags {
                view.dockerTags = tags
                view.excluded = result.excluded
                view.byAddress = result.containerByAddress
                view.published = result.published
            }
            if let tags = ecsResult?.tags {
                view.ecsTags = tags
                view.taskWideTags = ecsResult?.taskWideTags ?? []
                view.fargateTaskARN = ecsResult?.fargateTaskARN
            }
            view.tags = view.dockerTags.merging(view.ecsTags) { docker, ecs in
                docker + ecs.filter { !docker.contains($0) }
            }
            view.refreshes += 1
        }
        if result.tags != nil {
            log.resolved("docker", "Docker API at \(configuration.dockerHost) answers")
        } else {
            log.report(
                "docker", "no container tags from Docker, flows are still reported: Docker API \(result.summary)")
        }
        if let ecsResult {
            if ecsResult.tags != nil {
                log.resolved("ecs", "ECS task metadata endpoint answers")
            } else {
                log.report("ecs", "no task tags, flows are still reported: ECS metadata \(ecsResult.summary)")
            }
        }
        store.updateStatus {
            $0.docker = result.summary
            if let problem = result.problem { $0.count(problem.kind, detail: problem.detail) }
            if let ecsResult {
                $0.ecs = ecsResult.summary
                if let problem = ecsResult.problem { $0.count(problem.kind, detail: problem.detail) }
            }
        }
    }

    private func publishStatus(_ sample: SampleResult) {
        store.updateStatus { status in
            status.polls += 1
            status.firstCollectionDone = true
            status.lastPollMicros = sample.micros
            status.namespaces = sample.namespaces
            status.tracker = sample.tracker
            status.closedConnections = sample.closedConnections
            if let capture = sample.capture { status.capture = capture }
            for (kind, problem) in sample.problems.entries {
                status.count(kind, by: problem.count, detail: problem.detail)
            }
        }
    }
}

/// One collection pass's outcome, for `/status`.
struct SampleResult: Sendable {
    var micros: UInt64
    var namespaces: Int
    var tracker: ConnectionTracker.Health
    var problems: ProblemCounts
    var closedConnections: String
    /// Containers of the sockets whose owners this sample found.
    var containerIDs: Set<String>
    /// Packet capture's state, in eBPF-less mode.
    var capture: String? = nil
}

/// A source of connections, read on the collection queue only.
protocol CollectorCore: AnyObject, Sendable {
    /// One pass. `beforeReport`: a report follows at once, so everything must be read.
    func sample(baseline: Bool, beforeReport: Bool) -> SampleResult
    func flush() -> [Connection]
    /// Stops what the core runs beside the collection loop.
    func stop()
}

/// The eBPF-less collection state, touched only on the collection queue.
private final class SockDiagCore: CollectorCore, @unchecked Sendable {

    private let source: SockDiagSource
    private var tracker: ConnectionTracker
    private var problemLog: ProblemLog
    private let configuration: Configuration
    private var lastScanHealth = ScanHealth()
    /// Packet headers of the agent's own namespace, when capture runs.
    private let capture: PacketCapture?
    private var captureState: String
    private var lastCaptureStatistics = CaptureStatistics()
    private var interfaces: [String] = []

    init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.source = SockDiagSource(configuration: configuration)
        self.tracker = ConnectionTracker(maxTracked: configuration.maxTrackedConnections)
        self.problemLog = ProblemLog(logger: logger)
        var capture: PacketCapture?
        if !configuration.packetCapture {
            captureState = "off: DD_CNM_PACKET_CAPTURE=false"
        } else if source.ownNamespace == nil {
            captureState = "unavailable: the agent's own network namespace is unknown (/proc/self/ns/net)"
        } else {
            do {
                capture = try PacketCapture(maxFlows: configuration.maxTrackedConnections)
                captureState = "on"
            } catch {
                captureState =
                    error.code == .permissionDenied ? "unavailable: no CAP_NET_RAW (\(error))" : "unavailable: \(error)"
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
                "more sockets than DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS=\(configuration.maxTrackedConnections)"
            )
        }
        problems.addScanProblems(source.scanHealth, since: lastScanHealth)
        lastScanHealth = source.scanHealth
        for (kind, problem) in problems.entries { problemLog.report(kind, problem.detail) }
        var closed: String =
            switch source.destroyNotificationsAvailable {
            case true?:
                "final counters from the kernel's socket-destroy notifications"
            default:
                "sampled every \(configuration.sampleSeconds) s: destroy notifications unavailable"
                    + " (\(source.destroyUnavailableReason ?? "unknown")); a socket closing between two samples"
                    + (capture == nil
                        ? " loses what it carried after the last one"
                        : " has its last bytes counted by packet capture when capture saw it from its SYN")
            }
        if capture != nil {
            closed += "; connections in the agent's network namespace that no read listed are counted by packet capture"
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
                "the packet capture's reader did not take the ring within 2 s: its connections wait for a later sample")
        }
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
        captureState =
            "on (interfaces \(interfaces.joined(separator: ", "))): \(now.packets) packets taken, \(now.ringDropped)"
            + " dropped by a full ring, \(now.flows) flows followed, \(now.notLocal) forwarded for other namespaces"
            + " and \(now.unparsed) not TCP or UDP headers left out"
    }

    func flush() -> [Connection] {
        defer { _ = cnm_linux_malloc_trim() }
        return tracker.flush()
    }
}
