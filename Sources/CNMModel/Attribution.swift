/// A host port published to a container (Docker's `-p`): a flow to it is a flow to that container.
public struct PublishedPort: Sendable, Hashable {
    public var transport: TransportProtocol
    public var hostPort: UInt16
    /// nil: every host address.
    public var hostAddress: IPAddress?

    public init(transport: TransportProtocol, hostPort: UInt16, hostAddress: IPAddress? = nil) {
        self.transport = transport
        self.hostPort = hostPort
        self.hostAddress = hostAddress
    }
}

/// What the container metadata (Docker and the ECS endpoint) said at one moment. Immutable: a
/// report is attributed with one snapshot, never with one changing under it.
public struct ContainerSnapshot: Sendable, Equatable {
    /// Container id → its tags, Docker's and the ECS endpoint's merged.
    public var tags: [String: [String]]
    /// The Fargate task's tags: on Fargate the task is the host, so flows of no known container get them too.
    public var taskWideTags: [String]
    public var fargateTaskARN: String?
    /// Containers whose flows are left out (`DD_CONTAINER_EXCLUDE`, the agent's own).
    public var excluded: Set<String>
    /// Running containers by their addresses (Docker networks, and awsvpc namespaces Docker does not know).
    public var byAddress: [IPAddress: String]
    public var published: [PublishedPort: String]

    public init(
        tags: [String: [String]] = [:], taskWideTags: [String] = [], fargateTaskARN: String? = nil,
        excluded: Set<String> = [], byAddress: [IPAddress: String] = [:], published: [PublishedPort: String] = [:]
    ) {
        self.tags = tags
        self.taskWideTags = taskWideTags
        self.fargateTaskARN = fargateTaskARN
        self.excluded = excluded
        self.byAddress = byAddress
        self.published = published
    }

    /// Docker's tags of each container, followed by those only the ECS endpoint gives.
    public static func merged(docker: [String: [String]], ecs: [String: [String]]) -> [String: [String]] {
        docker.merging(ecs) { docker, ecs in docker + ecs.filter { !docker.contains($0) } }
    }
}

/// Says who is at each end of an interval's connections: leaves out excluded containers, finds the
/// remote container of a flow whose peer socket was not seen, and puts on the tags.
public enum Attribution {
    /// - Parameters:
    ///   - hostTags: `DD_TAGS` and the like, first on every connection.
    public static func attribute(
        _ connections: inout [Connection], with snapshot: ContainerSnapshot, hostTags: [String]
    ) {
        if !snapshot.excluded.isEmpty {
            connections.removeAll { $0.localContainerID.map(snapshot.excluded.contains) ?? false }
        }
        // A peer whose socket was not seen (it only listened, or closed unseen) is still a local
        // container when its address is one, or when the flow went to a port published to it.
        for i in connections.indices where connections[i].remoteContainerID == nil {
            let key = connections[i].key
            let remote = key.remote.address.unmappedV4 ?? key.remote.address
            if let id = snapshot.byAddress[remote] {
                connections[i].remoteContainerID = id
                connections[i].intraHost = true
            } else if key.direction == .outgoing && (remote.isLoopback || connections[i].intraHost) {
                let any = PublishedPort(transport: key.transport, hostPort: key.remote.port)
                var exact = any
                exact.hostAddress = remote
                connections[i].remoteContainerID = snapshot.published[exact] ?? snapshot.published[any]
            }
        }
        let hostWide = hostTags + snapshot.taskWideTags.filter { !hostTags.contains($0) }
        // One tag array per container, shared by all its connections.
        var localTags: [String: [String]] = [:]
        for i in connections.indices {
            if let id = connections[i].localContainerID {
                if localTags[id] == nil { localTags[id] = hostTags + (snapshot.tags[id] ?? []) }
                connections[i].tags = localTags[id]!
            } else {
                connections[i].tags = hostWide
            }
            connections[i].remoteTags = connections[i].remoteContainerID.flatMap { snapshot.tags[$0] } ?? []
        }
    }
}
