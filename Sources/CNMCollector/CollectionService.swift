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
    private let store: StatusStore
    private let reports: ReportStream
    private let logger: Logger
    private let budget: MemoryBudget
    /// Blocking kernel and /proc reads run here, never on the async pool.
    private let queue = DispatchQueue(label: "cnm.collector")
    public init(
        configuration: Configuration, budget: MemoryBudget = MemoryBudget(limit: nil), status store: StatusStore,
        reports: ReportStream, logger: Logger
    ) {
        self.configuration = configuration
        self.budget = budget
        self.store = store
        self.reports = reports
        self.logger = logger
    }

    public func run() async throws {
        let metadata = ContainerMetadataService(configuration: configuration, status: store, logger: logger)
        await withDiscardingTaskGroup { group in
            group.addTask { try? await metadata.run() }
            // Graceful shutdown (SIGTERM, SIGINT) cancels the loop; the report in progress is dropped.
            await cancelWhenGracefulShutdown {
                await self.collect(metadata)
            }
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
                programs = try KernelPrograms(strategy: strategy, maxFlows: budget.kernelFlows)
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
            if programs != nil { $0.capture = .init("off", "eBPF mode, whose programs see every connection") }
        }
        logger.info(
            "collecting",
            metadata: [
                "mode": "\(mode.rawValue)", "reason": "\(reason)", "interval_s": "\(configuration.intervalSeconds)",
                "api": "\(configuration.apiListenDescription)",
            ]
        )
        if let programs {
            return (
                EBPFCore(
                    programs: programs, configuration: configuration, budget: budget,
                    problemLog: ProblemLog(logger: logger)),
                programs
            )
        }
        return (SockDiagCore(configuration: configuration, budget: budget, logger: logger), nil)
    }

    private func collect(_ metadata: ContainerMetadataService) async {
        let (core, programs) = await onQueue { self.chooseCore() }
        defer {
            core.stop()
            programs?.close()
        }
        if let programs, let ebpf = core as? EBPFCore {
            // Closed flows leave the ring buffer on their own thread, whatever the collection loop does.
            programs.startReadingClosed { ebpf.fold(closed: $0) }
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
            let known = metadata.current.tags
            if sample.containerIDs.contains(where: { known[$0] == nil }) { metadata.requestRefresh() }
            while nextSample <= after { nextSample += sampleMicros }
            guard beforeReport else { continue }
            while nextReport <= after { nextReport += intervalMicros }
            sequence += 1
            let end = Timestamp.now
            var connections = await onQueue { core.flush() }
            // A container met for the first time may have started a moment ago: one refresh is
            // awaited (briefly) so its first report already carries its name.
            let ids = Set(connections.flatMap { [$0.localContainerID, $0.remoteContainerID] }.compactMap { $0 })
            let view = await metadata.snapshot(knowing: ids, timeout: .seconds(2))
            Attribution.attribute(&connections, with: view, hostTags: configuration.hostTags)
            let report = IntervalReport(
                sequence: sequence, start: intervalStart, end: end, connections: connections,
                ecsTaskARN: view.fargateTaskARN)
            intervalStart = end
            store.updateStatus { $0.reports = sequence }
            reports.publish(report)
        }
    }

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: work()) }
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
