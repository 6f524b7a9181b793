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
    }

    private let client: DockerClient
    private let state = Mutex(State())
    /// The environment variables kept of each container: those the tag rules name.
    private let keepingEnv: Set<String>

    public init(client: DockerClient, keepingEnv: Set<String> = ContainerMetadata.unifiedServiceVariables) {
        self.client = client
        self.keepingEnv = keepingEnv
    }

    /// Lists and inspects the running containers and replaces the map with them. A failure is
    /// counted in `health` and thrown for the caller to log; nothing is logged here.
    public func refresh() async throws(DockerError) {
        let ticket = state.withLock { state in
            state.started += 1
            state.health.refreshes += 1
            return state.started
        }
        do {
            let found = try await client.runningContainers(keepingEnv: keepingEnv)
            state.withLock { state in
                state.health.consecutiveFailures = 0
                guard ticket > state.applied else { return }
                state.applied = ticket
                state.containers = Dictionary(found.map { ($0.id, $0) }, uniquingKeysWith: { $1 })
                state.health.containers = state.containers.count
            }
        } catch {
            state.withLock { state in
                state.health.failures[error.kind, default: 0] += 1
                state.health.consecutiveFailures += 1
                state.health.lastError = error.description
            }
            throw error
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
                state.health.containers = state.containers.count
            }
        } catch {
            if error.httpStatus == 404 {
                state.withLock { $0.containers[id] = nil }
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
