// The few fields of Engine API responses the agent uses. Everything but the id is optional and
// unknown fields are ignored, so responses from API 1.22 to today decode alike.

/// One entry of `GET /containers/json`.
public struct DockerContainerSummary: Decodable, Sendable, Equatable {
    public var id: String
    /// Names prefixed with `/`; more than one only with legacy links.
    public var names: [String]?
    /// The image as given at creation, or the image id once that name was moved to another image.
    public var image: String?
    public var imageID: String?
    public var labels: [String: String]?
    public var networkSettings: DockerNetworkSettings?
    public var ports: [Port]?

    /// A container port, and where it is published on the host if it is.
    public struct Port: Decodable, Sendable, Equatable {
        public var privatePort: UInt16?
        public var publicPort: UInt16?
        /// `tcp`, `udp` or `sctp`.
        public var type: String?
        /// The host address it is published on (`0.0.0.0` or `::` for all).
        public var ip: String?

        enum CodingKeys: String, CodingKey {
            case privatePort = "PrivatePort"
            case publicPort = "PublicPort"
            case type = "Type"
            case ip = "IP"
        }
    }

    enum CodingKeys: String, CodingKey {
        case id = "Id"
        case names = "Names"
        case image = "Image"
        case imageID = "ImageID"
        case labels = "Labels"
        case networkSettings = "NetworkSettings"
        case ports = "Ports"
    }
}

/// The part of `GET /containers/{id}/json` the agent uses.
public struct DockerContainerInspect: Decodable, Sendable, Equatable {
    public struct Config: Decodable, Sendable, Equatable {
        /// The image exactly as given when the container was created (a name, or an id).
        public var image: String?
        public var labels: [String: String]?
        /// `NAME=value` entries.
        public var env: [String]?

        enum CodingKeys: String, CodingKey {
            case image = "Image"
            case labels = "Labels"
            case env = "Env"
        }
    }

    public var id: String
    /// Prefixed with `/`.
    public var name: String?
    /// The image id (`sha256:…`, bare hex before API 1.22).
    public var image: String?
    public var config: Config?
    public var networkSettings: DockerNetworkSettings?
    public var state: State?

    /// An inspect that says nothing but the id: what is known of a container only listed.
    public init(id: String) { self.id = id }

    public struct State: Decodable, Sendable, Equatable {
        /// The main process in the daemon's pid namespace; 0 once the container stopped.
        public var pid: Int32?

        enum CodingKeys: String, CodingKey {
            case pid = "Pid"
        }
    }

    enum CodingKeys: String, CodingKey {
        case id = "Id"
        case name = "Name"
        case image = "Image"
        case config = "Config"
        case networkSettings = "NetworkSettings"
        case state = "State"
    }
}

public struct DockerNetworkSettings: Decodable, Sendable, Equatable {
    /// One endpoint per network the container is attached to, by network name.
    public struct Endpoint: Decodable, Sendable, Equatable {
        public var ipAddress: String?
        public var globalIPv6Address: String?

        enum CodingKeys: String, CodingKey {
            case ipAddress = "IPAddress"
            case globalIPv6Address = "GlobalIPv6Address"
        }
    }

    /// The default bridge's addresses, duplicated here by daemons before API 1.44.
    public var ipAddress: String?
    public var globalIPv6Address: String?
    public var networks: [String: Endpoint]?
    /// Inspect only: `"8080/tcp"` → where it is published (null when only exposed).
    public var ports: [String: [PortBinding]?]?

    public struct PortBinding: Decodable, Sendable, Equatable {
        public var hostIP: String?
        public var hostPort: String?

        enum CodingKeys: String, CodingKey {
            case hostIP = "HostIp"
            case hostPort = "HostPort"
        }
    }

    enum CodingKeys: String, CodingKey {
        case ipAddress = "IPAddress"
        case globalIPv6Address = "GlobalIPv6Address"
        case networks = "Networks"
        case ports = "Ports"
    }
}
