import Synchronization

/// How talking to Docker has gone, for `/status`.
public struct DockerHealth: Sendable, Equatable {
    /// Refreshes attempted, failed ones included.
    public var refreshes: UInt64 = 0
    public var failures: [DockerError.Kind: UInt64] = [:]
    /// Failures since the last success: 0 while the daemon answers.
    public var consecutiveFailures: UInt64 = 0
    /// The most recent failure, kept after a later success so a flapping daemon can be diagnosed.
    public var lastError: String?
    /// Containers in the map now.
    public var containers = 0
    /// Inspects that failed (not a 404) during a refresh: that container is named from the list
    /// until a later refresh inspects it.
    public var inspectFailures: UInt64 = 0
    /// Containers in the map known only from the list (not inspected yet, or their inspect failed).
    public var listedOnly = 0

    public init() {}
}

/// Container metadata by full 64-hex id, replaced as a whole by each successful refresh. Lookups
/// are synchronous and cheap; a failed refresh leaves the previous map in place, since containers
/// seldom change in the time the daemon takes to come back.
public final class DockerMetadataCache: Sendable {
    private struct State {
        var containers: [String: ContainerMetadata] = [:]
        var health = DockerHealth()
        /// Refreshes started, and the newest one whose result is in `containers`: two refreshes
        /// that overlap must not let the older view overwrite the newer.
        var started: UInt64 = 0
        var applied: UInt64 = 0
        /// When each container in the map was last inspected (a refresh number); none for those
        /// known only from the list.
        var inspectedAt: [String: UInt64] = [:]
    }

    /// A refresh inspects at most this many containers, those never inspected first, then those
    /// inspected longest ago; the others keep what their last inspect said, with the list's name
    /// and addresses. So one refresh's cost is bounded however many containers run; a daemon whose
    /// inspects stall delays a refresh by one timeout, after which it asks no more.
    public static let maxInspectsPerRefresh = 32

    private let client: DockerClient
    private let state = Mutex(State())
    /// The environment variables kept of each container: those the tag rules name.
    private let keepingEnv: Set<String>

    public init(client: DockerClient, keepingEnv: Set<String> = ContainerMetadata.unifiedServiceVariables) {
        self.client = client
        self.keepingEnv = keepingEnv
    }

    /// Lists the running containers, inspects up to `maxInspectsPerRefresh` of them, and replaces
    /// the map with them all. A failed list is counted in `health` and thrown for the caller to
    /// log (nothing is logged here); a failed inspect only counts, and that container is named from
    /// the list meanwhile.
    public func refresh() async throws(DockerError) {
        let ticket = state.withLock { state in
            state.started += 1
            state.health.refreshes += 1
            return state.started
        }
        let summaries: [DockerContainerSummary]
        do {
            summaries = try await client.listContainers()
        } catch {
            state.withLock { state in
                state.health.failures[error.kind, default: 0] += 1
                state.health.consecutiveFailures += 1
                state.health.lastError = error.description
            }
            throw error
        }
        let (known, inspectedAt) = state.withLock { ($0.containers, $0.inspectedAt) }
        let chosen = Set(
            summaries.map(\.id).sorted { (inspectedAt[$0] ?? 0, $0) < (inspectedAt[$1] ?? 0, $1) }
                .prefix(Self.maxInspectsPerRefresh))
        var found: [String: ContainerMetadata] = [:]
        var inspected: Set<String> = []
        var inspectFailures: UInt64 = 0
        var lastInspectError: DockerError?
        // After one inspect timed out the daemon is stalled: this refresh asks it nothing more.
        var inspecting = true
        for summary in summaries {
            if inspecting && chosen.contains(summary.id) {
                do {
                    let inspect = try await client.inspectContainer(id: summary.id)
                    found[summary.id] = ContainerMetadata(inspect: inspect, summary: summary, keepingEnv: keepingEnv)
                    inspected.insert(summary.id)
                    continue
                } catch {
                    if error.httpStatus == 404 { continue }  // gone since the list
                    inspectFailures += 1
                    lastInspectError = error
                    if error.kind == .timeout { inspecting = false }
                }
            }
            if var metadata = known[summary.id], inspectedAt[summary.id] != nil {
                // What can change without a start: the name and the networks.
                let listed = ContainerMetadata(inspect: DockerContainerInspect(id: summary.id), summary: summary)
                metadata.name = listed.name
                if !listed.ipAddresses.isEmpty { metadata.ipAddresses = listed.ipAddresses }
                if !listed.publishedPorts.isEmpty { metadata.publishedPorts = listed.publishedPorts }
                found[summary.id] = metadata
            } else {
                found[summary.id] = ContainerMetadata(
                    inspect: DockerContainerInspect(id: summary.id), summary: summary, keepingEnv: keepingEnv)
            }
        }
        state.withLock { state in
            state.health.consecutiveFailures = 0
            state.health.inspectFailures += inspectFailures
            if let lastInspectError { state.health.lastError = lastInspectError.description }
            guard ticket > state.applied else { return }
            state.applied = ticket
            state.containers = found
            var times = state.inspectedAt.filter { found[$0.key] != nil }
            for id in inspected { times[id] = ticket }
            state.inspectedAt = times
            state.health.containers = found.count
            state.health.listedOnly = found.keys.filter { times[$0] == nil }.count
        }
    }

    /// Inspects one container (one that just started or was renamed) and puts it in the map; one
    /// already gone (404) is removed from it.
    public func update(containerID id: String) async throws(DockerError) {
        do {
            let inspect = try await client.inspectContainer(id: id)
            var metadata = ContainerMetadata(inspect: inspect, keepingEnv: keepingEnv)
            state.withLock { state in
                // Old daemons give published ports only in the list: keep the ones it gave.
                if metadata.publishedPorts.isEmpty, let known = state.containers[metadata.id] {
                    metadata.publishedPorts = known.publishedPorts
                }
                state.containers[metadata.id] = metadata
                state.inspectedAt[metadata.id] = state.started
                state.health.containers = state.containers.count
                state.health.listedOnly = state.containers.keys.filter { state.inspectedAt[$0] == nil }.count
            }
        } catch {
            if error.httpStatus == 404 {
                state.withLock {
                    $0.containers[id] = nil
                    $0.inspectedAt[id] = nil
                }
                return
            }
            state.withLock { state in
                state.health.failures[error.kind, default: 0] += 1
                state.health.lastError = error.description
            }
            throw error
        }
    }

    /// The container with this full 64-hex id, as of the last successful refresh.
    public func metadata(forContainerID id: String) -> ContainerMetadata? {
        state.withLock { $0.containers[id] }
    }

    public var containers: [String: ContainerMetadata] {
        state.withLock { $0.containers }
    }

    public var health: DockerHealth {
        state.withLock { $0.health }
    }
}
