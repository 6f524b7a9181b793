import CNMDocker
import CNMModel
import CNMProcfs
import CNMReport
import CNMSystem
import Logging
import ServiceLifecycle
import Synchronization

/// Container metadata from Docker and the ECS task metadata endpoint, refreshed beside collection
/// (every 10 s, on request, and at once for a container the events stream says started), published
/// as immutable `ContainerSnapshot`s. A slow or hanging daemon never delays a sample: a report that
/// needs a container not known yet awaits the next snapshot, up to a deadline.
final class ContainerMetadataService: Service, Sendable {
    private struct State {
        var docker: [String: [String]] = [:]
        var ecs: [String: [String]] = [:]
        var snapshot = ContainerSnapshot()
        /// Snapshots published so far.
        var generation: UInt64 = 0
        /// Reports waiting for the next snapshot, by waiter number.
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Containers an event said started or were renamed, not inspected yet, oldest first; each
        /// once however many events name it.
        var toInspect: [String] = []
        var toInspectSet: Set<String> = []
        /// Times `toInspect` overflowed and was replaced by one full refresh.
        var inspectOverflows: UInt64 = 0
    }

    /// More containers waiting to be inspected than this (an event flood, a daemon whose inspects
    /// stall) are dropped in favour of one refresh, which lists them all: the events stream is never
    /// held up by inspects, and what waits stays bounded.
    static let maxWaitingInspects = 256

    private let docker: DockerTagger
    private let ecs: ECSTagger?
    private let store: StatusStore
    private let logger: Logger
    private let configuration: Configuration
    private let state = Mutex(State())
    private let requests: AsyncStream<Void>
    private let requestContinuation: AsyncStream<Void>.Continuation
    private let inspectWake: AsyncStream<Void>
    private let inspectWakeContinuation: AsyncStream<Void>.Continuation

    init(configuration: Configuration, status store: StatusStore, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        docker = DockerTagger(configuration: configuration, ownContainerID: containerID(ofProcess: "self"))
        ecs = configuration.ecsMetadataURI.map {
            ECSTagger(uri: $0, timeoutMilliseconds: configuration.ecsMetadataTimeoutMilliseconds)
        }
        // Requests that come while a refresh runs make one more refresh, not one each.
        (requests, requestContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (inspectWake, inspectWakeContinuation) = AsyncStream.makeStream(
            of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The latest snapshot.
    var current: ContainerSnapshot { state.withLock { $0.snapshot } }

    /// Asks for a refresh soon (a container was met whose tags are not known).
    func requestRefresh() { requestContinuation.yield() }

    /// A snapshot that knows every container of `ids`, or the latest one when `timeout` passes
    /// first. A container met for the first time may have started a moment ago: a refresh already
    /// under way may have listed containers before it, so each snapshot that still lacks one asks again.
    func snapshot(knowing ids: Set<String>, timeout: Duration) async -> ContainerSnapshot {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (snapshot, generation) = state.withLock { ($0.snapshot, $0.generation) }
            guard ids.contains(where: { snapshot.tags[$0] == nil }), ContinuousClock.now < deadline else {
                return snapshot
            }
            requestRefresh()
            await nextSnapshot(after: generation, until: deadline)
        }
    }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                var log = ProblemLog(logger: self.logger)
                for await _ in self.requests { await self.refresh(log: &log) }
            }
            group.addTask {
                while (try? await Task.sleep(for: .seconds(10))) != nil { self.requestRefresh() }
            }
            if let events = docker.events {
                group.addTask { await self.followEvents(events) }
                group.addTask { await self.inspectChanged() }
            }
            requestRefresh()
            try? await gracefulShutdown()
            requestContinuation.finish()
            inspectWakeContinuation.finish()
            group.cancelAll()
        }
        // Nobody waits for a snapshot that will not come.
        for waiter in state.withLock({ s in
            defer { s.waiters = [:] }; return s.waiters.values
        }) { waiter.resume() }
    }

    /// Returns once a snapshot after `generation` is published, or at `deadline`, or when cancelled.
    private func nextSnapshot(after generation: UInt64, until deadline: ContinuousClock.Instant) async {
        let id = state.withLock { s in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                try? await Task.sleep(until: deadline)
                self.wake(id)
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s in
                    guard s.generation <= generation else { return true }
                    s.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            group.cancelAll()
        }
    }

    private func wake(_ id: UInt64) {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
    }

    private func refresh(log: inout ProblemLog) async {
        async let fromECS = ecs?.refresh()
        let result = await docker.refresh()
        apply(result, await fromECS, log: &log)
    }

    /// Keeps the tags current between refreshes: a container that starts or is renamed is inspected
    /// at once. Reconnects by itself; a lost stream is logged once and counted.
    private func followEvents(_ events: DockerEventWatcher) async {
        var log = ProblemLog(logger: logger)
        await events.run { update in
            defer {
                let h = events.health
                let c = h.counts
                let status = AgentStatus.Component(
                    h.connected ? "connected" : "disconnected",
                    h.connected ? "following the daemon's container events" : h.lastError ?? "not connected yet",
                    counters: [
                        "events": c.events, "invalid_lines": c.invalidLines, "other_types": c.otherTypes,
                        "other_actions": c.otherActions, "connections": h.connections,
                        "failures": h.failures.values.reduce(0, +), "replayed": h.replayed,
                        "future_times": h.futureTimes, "idle_reconnects": h.idleReconnects,
                        "inspect_overflows": state.withLock { $0.inspectOverflows },
                    ])
                store.updateStatus { $0.dockerEvents = status }
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
                    queueInspect(event.containerID)
                default:
                    break  // a dead container keeps its tags for the grace period
                }
            }
        }
    }

    /// Hands a container to the inspecting task; past `maxWaitingInspects` a refresh takes over.
    private func queueInspect(_ id: String) {
        let overflowed = state.withLock { s in
            guard s.toInspectSet.insert(id).inserted else { return false }
            s.toInspect.append(id)
            guard s.toInspect.count > Self.maxWaitingInspects else { return false }
            s.toInspect = []
            s.toInspectSet = []
            s.inspectOverflows += 1
            return true
        }
        if overflowed {
            requestRefresh()
        } else {
            inspectWakeContinuation.yield()
        }
    }

    /// Inspects the containers events named, one at a time, apart from the events stream. An
    /// inspect that times out means the daemon is stalled: the rest wait for a refresh instead of
    /// a timeout each.
    private func inspectChanged() async {
        var log = ProblemLog(logger: logger)
        for await _ in inspectWake {
            while !Task.isCancelled,
                let id = state.withLock({ s -> String? in
                    guard !s.toInspect.isEmpty else { return nil }
                    let id = s.toInspect.removeFirst()
                    s.toInspectSet.remove(id)
                    return id
                })
            {
                let result = await docker.containerChanged(id: id)
                apply(result, nil, log: &log)
                if result.problem?.kind == "docker_timeout" {
                    let dropped = state.withLock { s in
                        defer {
                            s.toInspect = []
                            s.toInspectSet = []
                        }
                        return !s.toInspect.isEmpty
                    }
                    if dropped { requestRefresh() }
                }
            }
        }
    }

    /// Takes in a refresh's outcome (or one container's, `ecs` nil then) and publishes the snapshot.
    private func apply(_ result: DockerTagger.Result, _ ecsResult: ECSTagger.Result?, log: inout ProblemLog) {
        let waiters = state.withLock { s in
            var snapshot = s.snapshot
            if let tags = result.tags {
                s.docker = tags
                snapshot.excluded = result.excluded
                snapshot.byAddress = result.containerByAddress
                snapshot.published = result.published
            }
            if let tags = ecsResult?.tags {
                s.ecs = tags
                snapshot.taskWideTags = ecsResult?.taskWideTags ?? []
                snapshot.fargateTaskARN = ecsResult?.fargateTaskARN
            }
            snapshot.tags = ContainerSnapshot.merged(docker: s.docker, ecs: s.ecs)
            s.snapshot = snapshot
            s.generation += 1
            defer { s.waiters = [:] }
            return s.waiters.values
        }
        if result.tags != nil {
            log.resolved("docker", "Docker API at \(configuration.dockerHost) answers")
        } else {
            log.report(
                "docker", "no container tags from Docker, flows are still reported: Docker API \(result.status.reason)")
        }
        if let ecsResult {
            if ecsResult.tags != nil {
                log.resolved("ecs", "ECS task metadata endpoint answers")
            } else {
                log.report("ecs", "no task tags, flows are still reported: ECS metadata \(ecsResult.status.reason)")
            }
        }
        store.updateStatus {
            $0.docker = result.status
            if let problem = result.problem { $0.count(problem.kind, detail: problem.detail) }
            if let ecsResult {
                $0.ecs = ecsResult.status
                if let problem = ecsResult.problem { $0.count(problem.kind, detail: problem.detail) }
            }
        }
        // Last: a report that awaited this snapshot finds `/status` saying where it came from.
        for waiter in waiters { waiter.resume() }
    }
}
