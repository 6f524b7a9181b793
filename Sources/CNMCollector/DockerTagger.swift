import CNMDocker
import CNMECS
import CNMModel
import CNMProcfs
import CNMReport
import CNMSystem
import Logging
import Synchronization

/// Container tags from the Docker API. A missing socket or failing daemon costs the tags, never the
/// flows: the previous tags stay, the problem is logged once and retried at the next refresh.
final class DockerTagger: Sendable {
    struct Result: Sendable {
        var tags: [String: [String]]?
        /// Containers whose flows are left out (`DD_CONTAINER_EXCLUDE`, the agent's own).
        var excluded: Set<String> = []
        /// Running containers by their addresses on Docker networks; an address two containers
        /// claim (overlapping networks) is left out rather than guessed.
        var containerByAddress: [IPAddress: String] = [:]
        /// Running containers by the host ports published to them.
        var published: [ContainerMetadata.PublishedPort: String] = [:]
        var status: AgentStatus.Component
        var problem: (kind: String, detail: String)?
    }

    /// How long a container's tags outlive it, so the last report of its connections is still named.
    static let graceSeconds: UInt64 = 300

    private let cache: DockerMetadataCache?
    /// The daemon's container events, which name a container the moment it starts.
    let events: DockerEventWatcher?
    /// Tags of every container seen, with when it was last listed (monotonic µs).
    private let known = Mutex<[String: (tags: [String], excluded: Bool, lastSeen: UInt64)]>([:])
    private let configuration: Configuration
    /// The container the agent itself runs in, if any: its own API traffic is not what users watch.
    private let ownContainerID: String?
    private let invalidHost: DockerError?
    private let host: String

    init(configuration: Configuration, ownContainerID: String?) {
        let host = configuration.dockerHost
        self.host = host
        self.configuration = configuration
        self.ownContainerID = ownContainerID
        do {
            let client = try DockerClient(host: host, apiVersion: .negotiate)
            let variables = Set(configuration.dockerEnvAsTags.keys).union(ContainerMetadata.unifiedServiceVariables)
            self.cache = DockerMetadataCache(client: client, keepingEnv: variables)
            self.events = DockerEventWatcher(client: client)
            self.invalidHost = nil
        } catch {
            self.cache = nil
            self.events = nil
            self.invalidHost = error
        }
    }

    /// Lists and inspects every container.
    func refresh() async -> Result {
        await update { (cache) async throws(DockerError) in try await cache.refresh() }
    }

    /// One container started or was renamed: inspects just it, at once, so a container that lives
    /// under a second is still named.
    func containerChanged(id: String) async -> Result {
        await update { (cache) async throws(DockerError) in try await cache.update(containerID: id) }
    }

    private func update(_ change: (DockerMetadataCache) async throws(DockerError) -> Void) async -> Result {
        guard let cache else {
            let detail = invalidHost.map { "\($0)" } ?? "unknown"
            return Result(
                status: .init("invalid_host", "unusable DOCKER_HOST: \(detail)"),
                problem: ("docker_invalid_host", detail))
        }
        do {
            try await change(cache)
        } catch {
            return Result(
                status: .init("unavailable", "\(error)"), problem: ("docker_\(error.kind.rawValue)", "\(error)"))
        }
        return snapshot(cache.containers)
    }

    /// Tags, exclusions and addresses of the containers in the cache; tags of containers gone from it
    /// are kept for the grace period.
    private func snapshot(_ listed: [String: ContainerMetadata]) -> Result {
        let now = monotonicMicros()
        let (tags, excluded) = known.withLock { known in
            for (id, c) in listed {
                // An ECS task's containers carry the task in their labels (the EC2 daemon case).
                let tags =
                    c.tags(labelsAsTags: configuration.dockerLabelsAsTags, envAsTags: configuration.dockerEnvAsTags)
                    + ecsTags(fromDockerLabels: c.labels)
                let images = [c.image, c.imageReference?.dockerImage].compactMap { $0 }
                let excluded = id == ownContainerID || configuration.excludes(containerName: c.name, images: images)
                known[id] = (tags, excluded, now)
            }
            known = known.filter { now - $0.value.lastSeen < Self.graceSeconds * 1_000_000 }
            return (known.mapValues(\.tags), Set(known.filter(\.value.excluded).keys))
        }
        var byAddress: [IPAddress: String?] = [:]
        var published: [ContainerMetadata.PublishedPort: String?] = [:]
        for (id, c) in listed {
            for address in c.ipAddresses where !address.isUnspecified {
                byAddress[address] = byAddress[address] == nil ? .some(id) : .some(nil)
            }
            for port in Set(c.publishedPorts) {
                published[port] = published[port] == nil ? .some(id) : .some(nil)
            }
        }
        var containerByAddress = byAddress.compactMapValues { $0 }
        for (address, id) in namespaceAddresses(listed) where byAddress[address] == nil {
            containerByAddress[address] = id
        }
        return Result(
            tags: tags, excluded: excluded, containerByAddress: containerByAddress,
            published: published.compactMapValues { $0 },
            status: .init(
                "ok", "\(listed.count) containers from \(host)",
                counters: [
                    "containers": UInt64(listed.count), "listed_only": UInt64(cache?.health.listedOnly ?? 0),
                    "inspect_failures": cache?.health.inspectFailures ?? 0,
                ]))
    }

    /// Addresses Docker does not report, read from the containers' own network namespaces: an awsvpc
    /// task's ENI lives in its pause container's namespace, which Docker thinks has no network. An
    /// address belongs to a container only when it is the one container (pause aside) in that
    /// namespace; a namespace several share is left unresolved, and the host's is never read.
    private func namespaceAddresses(_ listed: [String: ContainerMetadata]) -> [IPAddress: String] {
        let procRoot = configuration.hostProc
        let hostNamespace = NamespaceAddresses.namespace(ofProcess: 1, procRoot: procRoot)
        var members: [UInt64: [String]] = [:]
        var addresses: [UInt64: [IPAddress]] = [:]
        for (id, c) in listed {
            guard let pid = c.pid, let namespace = NamespaceAddresses.namespace(ofProcess: pid, procRoot: procRoot),
                namespace != hostNamespace
            else { continue }
            if !c.isECSPause { members[namespace, default: []].append(id) }
            if addresses[namespace] == nil {
                addresses[namespace] = NamespaceAddresses.of(process: pid, procRoot: procRoot)?.addresses ?? []
            }
        }
        var result: [IPAddress: String?] = [:]
        for (namespace, ids) in members where ids.count == 1 {
            for address in addresses[namespace] ?? [] {
                result[address] = result[address] == nil ? .some(ids[0]) : .some(nil)
            }
        }
        return result.compactMapValues { $0 }
    }
}
