import CNMModel

/// What the agent knows of one running container, from its inspect (and list entry).
public struct ContainerMetadata: Sendable, Equatable {
    /// The full 64-hex id.
    public var id: String
    /// Without Docker's leading `/`.
    public var name: String
    /// `Config.Image`: the image as given at creation, which may be an image id.
    public var image: String?
    /// The parsed image name; nil when the container was created from an image id, so its tags
    /// are unknown.
    public var imageReference: ImageReference?
    public var labels: [String: String]
    /// `Config.Env` as a map; a later duplicate wins, as it does for the process.
    public var env: [String: String]
    /// Every address the container has on any network, sorted, without duplicates.
    public var ipAddresses: [IPAddress]
    /// Its ports published on the host (from the container list).
    public var publishedPorts: [PublishedPort] = []
    /// Its main process in the daemon's pid namespace, while it runs.
    public var pid: Int32?

    /// An ECS task's pause container, which only holds the task's network namespace (awsvpc on EC2).
    public var isECSPause: Bool { labels["com.amazonaws.ecs.container-name"] == "~internal~ecs~pause" }

    /// A host port that leads to the container.
    public typealias PublishedPort = CNMModel.PublishedPort

    public init(
        id: String,
        name: String,
        image: String? = nil,
        imageReference: ImageReference? = nil,
        labels: [String: String] = [:],
        env: [String: String] = [:],
        ipAddresses: [IPAddress] = []
    ) {
        self.id = id
        self.name = name
        self.image = image
        self.imageReference = imageReference
        self.labels = labels
        self.env = env
        self.ipAddresses = ipAddresses
    }

    /// The environment variables the unified service tags come from.
    public static let unifiedServiceVariables: Set<String> = ["DD_SERVICE", "DD_ENV", "DD_VERSION"]

    /// Builds the metadata from an inspect, falling back to the list entry for what it lacks.
    /// The image name is `Config.Image`, else the list's `Image`, whichever is a name and not an
    /// image id or a prefix of the container's image id. Of `Config.Env` only the variables in
    /// `keepingEnv` are kept: the rest (passwords, keys) is nobody's business here.
    public init(
        inspect: DockerContainerInspect, summary: DockerContainerSummary? = nil,
        keepingEnv: Set<String> = unifiedServiceVariables
    ) {
        let imageID = inspect.image ?? summary?.imageID
        let given = [inspect.config?.image, summary?.image].compactMap { $0 }
        var env: [String: String] = [:]
        for entry in inspect.config?.env ?? [] {
            guard let equals = entry.firstIndex(of: "="), keepingEnv.contains(String(entry[..<equals])) else {
                continue
            }
            env[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        let settings = inspect.networkSettings ?? summary?.networkSettings
        let texts =
            [settings?.ipAddress, settings?.globalIPv6Address]
            + (settings?.networks ?? [:]).values.flatMap { [$0.ipAddress, $0.globalIPv6Address] }
        let addresses = Set(texts.compactMap { $0.flatMap { IPAddress(parsing: $0) } })
        let name = inspect.name ?? summary?.names?.first ?? ""
        self.init(
            id: inspect.id,
            name: name.hasPrefix("/") ? String(name.dropFirst()) : name,
            image: given.first,
            imageReference: given.lazy
                .filter { !Self.isPrefix($0, ofImageID: imageID) }
                .compactMap { ImageReference(parsing: $0) }
                .first,
            labels: inspect.config?.labels ?? summary?.labels ?? [:],
            env: env,
            ipAddresses: addresses.sorted()
        )
        pid = inspect.state?.pid.flatMap { $0 > 0 ? $0 : nil }
        func published(_ type: String?, _ hostPort: UInt16?, _ ip: String?) -> PublishedPort? {
            guard let hostPort, hostPort > 0 else { return nil }
            let transport: TransportProtocol
            switch type?.lowercased() {
            case "tcp", nil: transport = .tcp
            case "udp": transport = .udp
            default: return nil
            }
            let address = ip.flatMap { IPAddress(parsing: $0) }
            return PublishedPort(
                transport: transport, hostPort: hostPort, hostAddress: address.flatMap { $0.isUnspecified ? nil : $0 })
        }
        // The inspect's bindings (`"8080/tcp": [{"HostIp", "HostPort"}]`), else the list's ports.
        var ports = Set<PublishedPort>()
        for (spec, bindings) in inspect.networkSettings?.ports ?? [:] {
            let type = spec.split(separator: "/").dropFirst().first.map(String.init)
            for binding in bindings ?? [] {
                if let p = published(type, binding.hostPort.flatMap { UInt16($0) }, binding.hostIP) { ports.insert(p) }
            }
        }
        for port in summary?.ports ?? [] {
            if let p = published(port.type, port.publicPort, port.ip) { ports.insert(p) }
        }
        publishedPorts = ports.sorted { ($0.hostPort, $0.transport.rawValue) < ($1.hostPort, $1.transport.rawValue) }
    }

    /// Datadog's container tags: `container_name`, `container_id`, then the image tags when the
    /// image name is known.
    public var tags: [String] { tags() }

    /// The container tags, then the unified service tags (`service`, `env`, `version`: from the
    /// `com.datadoghq.tags.*` labels, else the container's `DD_SERVICE` / `DD_ENV` / `DD_VERSION`),
    /// the Compose service and project, and the labels and environment variables asked for as tags.
    /// A value that is absent or empty gives no tag: tags are never guessed.
    public func tags(labelsAsTags: [String: String] = [:], envAsTags: [String: String] = [:]) -> [String] {
        var out =
            (name.isEmpty ? [] : ["container_name:\(name)"]) + ["container_id:\(id)"] + (imageReference?.tags ?? [])
        func add(_ tag: String, _ value: String?) {
            guard let value, !value.isEmpty else { return }
            let text = "\(tag):\(value)"
            if !out.contains(text) { out.append(text) }
        }
        for (tag, variable) in [("service", "DD_SERVICE"), ("env", "DD_ENV"), ("version", "DD_VERSION")] {
            add(tag, labels["com.datadoghq.tags.\(tag)"].flatMap { $0.isEmpty ? nil : $0 } ?? env[variable])
        }
        add("compose_service", labels["com.docker.compose.service"])
        add("compose_project", labels["com.docker.compose.project"])
        for (label, tag) in labelsAsTags.sorted(by: { $0.key < $1.key }) { add(tag, labels[label]) }
        for (variable, tag) in envAsTags.sorted(by: { $0.key < $1.key }) { add(tag, env[variable]) }
        return out
    }

    /// Whether `text` is the start of the image id, which is how `docker run 0cb40641836c`
    /// records an image given by short id.
    private static func isPrefix(_ text: String, ofImageID imageID: String?) -> Bool {
        guard let imageID, !text.isEmpty, text.allSatisfy(\.isHexDigit) else { return false }
        let hex = imageID.hasPrefix("sha256:") ? imageID.dropFirst(7) : Substring(imageID)
        return hex.hasPrefix(text.lowercased())
    }
}
