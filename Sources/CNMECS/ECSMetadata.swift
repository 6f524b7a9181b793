import CNMModel

// The fields of task metadata endpoint v4 responses the agent uses. Every field is optional but a
// container's DockerId, and unknown fields are ignored: ECS agents and Fargate platform versions
// each add or leave out fields.

/// The response of `${ECS_CONTAINER_METADATA_URI_V4}/task` and `/taskWithTags`.
public struct ECSTaskMetadata: Decodable, Sendable, Equatable {
    /// A short name on EC2, a full ARN on Fargate.
    public var cluster: String?
    public var taskARN: String?
    public var family: String?
    /// The task definition revision, a string of digits.
    public var revision: String?
    public var desiredStatus: String?
    public var knownStatus: String?
    /// Absent before Fargate platform version 1.4.
    public var availabilityZone: String?
    /// Absent before ECS agent 1.45.
    public var launchType: ECSLaunchType?
    /// Only on EC2 and ECS Anywhere, for a task a service started, from ECS agent 1.63.1.
    public var serviceName: String?
    public var vpcID: String?
    public var containers: [ECSContainerMetadata]?
    /// `/taskWithTags` only.
    public var taskTags: [String: String]?
    /// `/taskWithTags` on EC2 only.
    public var containerInstanceTags: [String: String]?
    /// Why `/taskWithTags` could not add some of its tags; the rest of the response is still whole.
    public var errors: [ECSMetadataResponseError]?

    public init(
        cluster: String? = nil,
        taskARN: String? = nil,
        family: String? = nil,
        revision: String? = nil,
        desiredStatus: String? = nil,
        knownStatus: String? = nil,
        availabilityZone: String? = nil,
        launchType: ECSLaunchType? = nil,
        serviceName: String? = nil,
        vpcID: String? = nil,
        containers: [ECSContainerMetadata]? = nil,
        taskTags: [String: String]? = nil,
        containerInstanceTags: [String: String]? = nil,
        errors: [ECSMetadataResponseError]? = nil
    ) {
        self.cluster = cluster
        self.taskARN = taskARN
        self.family = family
        self.revision = revision
        self.desiredStatus = desiredStatus
        self.knownStatus = knownStatus
        self.availabilityZone = availabilityZone
        self.launchType = launchType
        self.serviceName = serviceName
        self.vpcID = vpcID
        self.containers = containers
        self.taskTags = taskTags
        self.containerInstanceTags = containerInstanceTags
        self.errors = errors
    }

    enum CodingKeys: String, CodingKey {
        case cluster = "Cluster"
        case taskARN = "TaskARN"
        case family = "Family"
        case revision = "Revision"
        case desiredStatus = "DesiredStatus"
        case knownStatus = "KnownStatus"
        case availabilityZone = "AvailabilityZone"
        case launchType = "LaunchType"
        case serviceName = "ServiceName"
        case vpcID = "VPCID"
        case containers = "Containers"
        case taskTags = "TaskTags"
        case containerInstanceTags = "ContainerInstanceTags"
        case errors = "Errors"
    }

    /// The container whose DockerId is `id`, in either of the forms `normalizedECSContainerID` accepts.
    public func container(withID id: some StringProtocol) -> ECSContainerMetadata? {
        guard let wanted = normalizedECSContainerID(id) else { return nil }
        return containers?.first { normalizedECSContainerID($0.dockerID) == wanted }
    }
}

/// One entry of `Containers`, and the response of `${ECS_CONTAINER_METADATA_URI_V4}` itself.
public struct ECSContainerMetadata: Decodable, Sendable, Equatable {
    /// 64 hex on EC2, `<32 hex task id>-<digits>` on Fargate; empty for a container not created yet.
    public var dockerID: String
    /// The name in the task definition.
    public var name: String?
    /// The Docker container name: `ecs-<family>-<revision>-<name>-<hash>` on EC2, the plain name on Fargate.
    public var dockerName: String?
    public var image: String?
    public var imageID: String?
    public var labels: [String: String]?
    public var desiredStatus: String?
    public var knownStatus: String?
    /// `NORMAL`, or `CNI_PAUSE` for the pause container that holds an awsvpc task's network on EC2.
    public var type: String?
    public var containerARN: String?
    public var networks: [Network]?
    /// Bridge and host mode only.
    public var ports: [Port]?

    public init(
        dockerID: String,
        name: String? = nil,
        dockerName: String? = nil,
        image: String? = nil,
        imageID: String? = nil,
        labels: [String: String]? = nil,
        desiredStatus: String? = nil,
        knownStatus: String? = nil,
        type: String? = nil,
        containerARN: String? = nil,
        networks: [Network]? = nil,
        ports: [Port]? = nil
    ) {
        self.dockerID = dockerID
        self.name = name
        self.dockerName = dockerName
        self.image = image
        self.imageID = imageID
        self.labels = labels
        self.desiredStatus = desiredStatus
        self.knownStatus = knownStatus
        self.type = type
        self.containerARN = containerARN
        self.networks = networks
        self.ports = ports
    }

    enum CodingKeys: String, CodingKey {
        case dockerID = "DockerId"
        case name = "Name"
        case dockerName = "DockerName"
        case image = "Image"
        case imageID = "ImageID"
        case labels = "Labels"
        case desiredStatus = "DesiredStatus"
        case knownStatus = "KnownStatus"
        case type = "Type"
        case containerARN = "ContainerARN"
        case networks = "Networks"
        case ports = "Ports"
    }

    public struct Network: Decodable, Sendable, Equatable {
        /// `awsvpc`, `bridge`, `host`, ...
        public var networkMode: String?
        public var ipv4Addresses: [String]?
        public var ipv6Addresses: [String]?

        public init(networkMode: String? = nil, ipv4Addresses: [String]? = nil, ipv6Addresses: [String]? = nil) {
            self.networkMode = networkMode
            self.ipv4Addresses = ipv4Addresses
            self.ipv6Addresses = ipv6Addresses
        }

        enum CodingKeys: String, CodingKey {
            case networkMode = "NetworkMode"
            case ipv4Addresses = "IPv4Addresses"
            case ipv6Addresses = "IPv6Addresses"
        }
    }

    public struct Port: Decodable, Sendable, Equatable {
        public var containerPort: Int?
        /// `tcp` or `udp`.
        public var transportProtocol: String?
        public var hostPort: Int?
        public var hostIP: String?

        public init(
            containerPort: Int? = nil,
            transportProtocol: String? = nil,
            hostPort: Int? = nil,
            hostIP: String? = nil
        ) {
            self.containerPort = containerPort
            self.transportProtocol = transportProtocol
            self.hostPort = hostPort
            self.hostIP = hostIP
        }

        enum CodingKeys: String, CodingKey {
            case containerPort = "ContainerPort"
            case transportProtocol = "Protocol"
            case hostPort = "HostPort"
            case hostIP = "HostIp"
        }
    }

    /// Every address of every network, parsed, sorted, without duplicates; unparsable ones are left out.
    public var ipAddresses: [IPAddress] {
        let texts = (networks ?? []).flatMap { ($0.ipv4Addresses ?? []) + ($0.ipv6Addresses ?? []) }
        return Set(texts.compactMap { IPAddress(parsing: $0) }).sorted()
    }
}

/// One entry of `/taskWithTags`'s `Errors`: a tag lookup the ECS agent could not make.
public struct ECSMetadataResponseError: Decodable, Sendable, Equatable {
    /// The response field left out: `TaskTags` or `ContainerInstanceTags`.
    public var errorField: String?
    public var errorCode: String?
    public var errorMessage: String?
    public var statusCode: Int?
    public var resourceARN: String?

    public init(
        errorField: String? = nil,
        errorCode: String? = nil,
        errorMessage: String? = nil,
        statusCode: Int? = nil,
        resourceARN: String? = nil
    ) {
        self.errorField = errorField
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.statusCode = statusCode
        self.resourceARN = resourceARN
    }

    enum CodingKeys: String, CodingKey {
        case errorField = "ErrorField"
        case errorCode = "ErrorCode"
        case errorMessage = "ErrorMessage"
        case statusCode = "StatusCode"
        case resourceARN = "ResourceARN"
    }
}

/// The task's `LaunchType`, matched without regard to case (some ECS agents send `ec2`).
public enum ECSLaunchType: Sendable, Equatable, Hashable, Decodable, CustomStringConvertible {
    case ec2
    case fargate
    /// ECS Anywhere.
    case external
    /// Any other value, as sent (`MANAGED_INSTANCES`, or one added after this was written).
    case unknown(String)

    public init(_ text: String) {
        switch text.lowercased() {
        case "ec2": self = .ec2
        case "fargate": self = .fargate
        case "external": self = .external
        default: self = .unknown(text)
        }
    }

    public init(from decoder: any Decoder) throws {
        self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public var description: String {
        switch self {
        case .ec2: "EC2"
        case .fargate: "FARGATE"
        case .external: "EXTERNAL"
        case .unknown(let text): text
        }
    }
}
