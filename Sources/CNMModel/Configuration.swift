import FoundationEssentials

/// Everything the agent is told, read from environment variables in the names Datadog users know;
/// our own live under `DD_CNM_`. Parsing is pure so every rule is testable without a process.
public struct Configuration: Sendable, Equatable {
    public enum LogLevel: String, Sendable, CaseIterable {
        case trace, debug, info, warn, error, critical, off
    }

    /// When to print the table of busiest connections.
    public enum TerminalOutput: String, Sendable, CaseIterable {
        case auto, always, never
    }

    public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: UInt16
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        /// Only this host's own processes (in the same network namespace) can connect.
        public var isLoopback: Bool { host == "localhost" || host == "::1" || host.hasPrefix("127.") }

        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
    }

    public var networkEnabled = true
    public var forceEBPFless = false
    /// Seconds between reports.
    public var intervalSeconds = 30
    /// Seconds between internal socket reads when the kernel's destroy notifications are not available.
    public var sampleSeconds = 2.0
    public var hostname: String?
    /// Host tags: `DD_TAGS`, `DD_EXTRA_TAGS` and `env:` from `DD_ENV`.
    public var hostTags: [String] = []
    public var env: String?
    public var logLevel = LogLevel.info
    public var maxTrackedConnections = 65_536
    public var tcpEnabled = true
    public var udpEnabled = true
    public var ipv6Enabled = true
    public var hostProc = "/proc"
    public var hostSys = "/sys"
    public var dockerHost = "unix:///var/run/docker.sock"
    public var httpAddress = ListenAddress(host: "127.0.0.1", port: 7777)
    /// `DD_CNM_HTTP_ADDR=unix:///path`: the API listens on this unix socket instead of TCP, and
    /// the socket file's directory decides who may connect.
    public var httpSocketPath: String?
    /// Where the API listens, as `DD_CNM_HTTP_ADDR` would say it.
    public var apiListenDescription: String { httpSocketPath.map { "unix://\($0)" } ?? "\(httpAddress)" }
    /// Requests other than `/healthz` must carry `Authorization: Bearer <token>`.
    public var apiToken: APIToken?
    /// `DD_CNM_API_TOKEN_FILE`: where to read the token at start-up (wins over `DD_CNM_API_TOKEN`).
    public var apiTokenFile: String?
    /// Requests the API serves at once; more are answered 503 at once.
    public var apiMaxConcurrent = 8
    /// `DD_CNM_MEMORY_LIMIT`: a limit below the cgroup's (the smaller of the two is kept to).
    public var memoryLimit: MemoryLimit?
    public var terminal = TerminalOutput.auto
    /// Rows in the terminal table.
    public var tableRows = 20
    /// Whether to take closed sockets' final counters from sock_diag destroy notifications.
    public var destroyNotifications = true
    /// Whether eBPF-less mode captures packet headers (AF_PACKET) in the agent's network namespace.
    public var packetCapture = true
    /// Which eBPF strategies may be tried, in order: `auto` probes them all.
    public var ebpfStrategy = EBPFStrategySetting.auto
    /// Container label → tag name (`DD_DOCKER_LABELS_AS_TAGS`).
    public var dockerLabelsAsTags: [String: String] = [:]
    /// Container environment variable → tag name (`DD_DOCKER_ENV_AS_TAGS`).
    public var dockerEnvAsTags: [String: String] = [:]
    /// `DD_CONTAINER_EXCLUDE` / `DD_CONTAINER_INCLUDE`: an included container is kept even when excluded.
    public var containerExclude: [ContainerFilter] = []
    public var containerInclude: [ContainerFilter] = []
    /// The ECS task metadata endpoint v4, set by ECS inside a task.
    public var ecsMetadataURI: String?
    public var ecsMetadataTimeoutMilliseconds = 500
    /// Shipping to Datadog's process intake (`IntakeSettings.variables`); nil without `DD_API_KEY`.
    public var intake: IntakeSettings?

    public enum EBPFStrategySetting: String, Sendable, CaseIterable {
        case auto
        case sockLength = "sock_length"
        case kernelCounters = "kernel_counters"
    }

    public init() {}

    /// A secret: compared, never printed.
    public struct APIToken: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
        public let bytes: [UInt8]
        public var description: String { "(\(bytes.count) bytes, hidden)" }
        public var debugDescription: String { description }

        /// A bearer token (RFC 6750's token68 characters), 16 to 4096 of them; nil otherwise.
        public init?(_ text: String) {
            let allowed = { (c: UInt8) -> Bool in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                    || "-._~+/=".utf8.contains(c)
            }
            let bytes = Array(text.utf8)
            guard (16...4096).contains(bytes.count), bytes.allSatisfy(allowed) else { return nil }
            self.bytes = bytes
        }

        /// Whether `candidate` is the token, in time that depends on the token's length only.
        public func matches(_ candidate: some Collection<UInt8>) -> Bool {
            var difference: UInt8 = candidate.count == bytes.count ? 0 : 1
            var given = candidate.makeIterator()
            for byte in bytes { difference |= byte ^ (given.next() ?? 0) }
            return difference == 0
        }
    }

    /// The variables this agent reads, with what each accepts: the README's table is checked against it.
    public static let variables: [(name: String, accepts: String)] = [
        ("DD_SYSTEM_PROBE_NETWORK_ENABLED", "true or false; false: the agent says so and exits 0"),
        ("DD_NETWORK_CONFIG_ENABLE_EBPFLESS", "true or false"),
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "whole seconds from 1 to 3600 (default 30)"),
        ("DD_HOSTNAME", "host name (default: the system's)"),
        ("DD_TAGS", "key:value tags separated by spaces or commas"),
        ("DD_EXTRA_TAGS", "same as DD_TAGS, appended"),
        ("DD_ENV", "adds env:<value>"),
        ("DD_LOG_LEVEL", "trace, debug, info, warn, error, critical or off"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS", "whole number from 1 to 4194304 (default 65536)"),
        ("DD_DISABLE_TCP_TRACING", "true or false"),
        ("DD_DISABLE_UDP_TRACING", "true or false"),
        ("DD_DISABLE_IPV6_TRACING", "true or false"),
        ("HOST_PROC", "absolute path (default /proc)"),
        ("HOST_SYS", "absolute path (default /sys)"),
        ("DOCKER_HOST", "unix:///path or tcp://host:port"),
        (
            "DD_CNM_HTTP_ADDR",
            "IP:port, [IPv6]:port, localhost:port or unix:///absolute/path (default 127.0.0.1:7777)"
        ),
        ("DD_CNM_API_TOKEN", "16 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / ="),
        ("DD_CNM_API_TOKEN_FILE", "absolute path of a file holding the token (wins over DD_CNM_API_TOKEN)"),
        ("DD_CNM_API_MAX_CONCURRENT", "whole number from 1 to 1024 (default 8)"),
        ("DD_CNM_SAMPLE_INTERVAL", "seconds from 0.1 to 3600, at most the report interval (default 2)"),
        ("DD_CNM_TERMINAL", "auto, always or never"),
        ("DD_CNM_TABLE_ROWS", "whole number from 1 to 10000 (default 20)"),
        ("DD_CNM_DESTROY_NOTIFICATIONS", "true or false (default true; false: sample only)"),
        ("DD_CNM_PACKET_CAPTURE", "true or false (default true; eBPF-less mode only)"),
        ("DD_CNM_EBPF_STRATEGY", "auto, sock_length or kernel_counters (default auto)"),
        ("DD_CNM_MEMORY_LIMIT", "bytes from 16Mi to 1Ti, such as 268435456, 256Mi or 1G (default: the cgroup's limit)"),
        ("DD_DOCKER_LABELS_AS_TAGS", "JSON object: container label → tag name"),
        ("DD_DOCKER_ENV_AS_TAGS", "JSON object: container environment variable → tag name"),
        ("DD_CONTAINER_EXCLUDE", "name:<regex> and image:<regex> separated by spaces"),
        ("DD_CONTAINER_INCLUDE", "same as DD_CONTAINER_EXCLUDE; wins over it"),
        ("ECS_CONTAINER_METADATA_URI_V4", "http://host[:port]/path (set by ECS)"),
        ("DD_ECS_METADATA_TIMEOUT", "whole milliseconds from 1 to 60000 (default 500)"),
    ]

    /// Reads the configuration from an environment. Unset and empty variables take their defaults.
    public init(environment: [String: String]) throws(ConfigurationError) {
        let reader = Reader(environment: environment)
        networkEnabled = try reader.bool("DD_SYSTEM_PROBE_NETWORK_ENABLED") ?? true
        forceEBPFless = try reader.bool("DD_NETWORK_CONFIG_ENABLE_EBPFLESS") ?? false
        intervalSeconds = try reader.integer("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", in: 1...3600) ?? 30
        hostname = reader.string("DD_HOSTNAME")
        env = reader.string("DD_ENV")
        hostTags = Self.splitTags(reader.string("DD_TAGS")) + Self.splitTags(reader.string("DD_EXTRA_TAGS"))
        if let env, !hostTags.contains("env:\(env)") { hostTags.append("env:\(env)") }
        if let level = reader.string("DD_LOG_LEVEL") {
            // Datadog's agent also accepts "warning".
            let normalized = level.lowercased() == "warning" ? "warn" : level.lowercased()
            guard let parsed = LogLevel(rawValue: normalized) else {
                throw reader.invalid("DD_LOG_LEVEL", level)
            }
            logLevel = parsed
        }
        maxTrackedConnections =
            try reader.integer("DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS", in: 1...4_194_304) ?? 65_536
        tcpEnabled = !(try reader.bool("DD_DISABLE_TCP_TRACING") ?? false)
        udpEnabled = !(try reader.bool("DD_DISABLE_UDP_TRACING") ?? false)
        ipv6Enabled = !(try reader.bool("DD_DISABLE_IPV6_TRACING") ?? false)
        hostProc = try reader.absolutePath("HOST_PROC") ?? "/proc"
        hostSys = try reader.absolutePath("HOST_SYS") ?? "/sys"
        if let docker = reader.string("DOCKER_HOST") {
            guard Self.isValidDockerHost(docker) else { throw reader.invalid("DOCKER_HOST", docker) }
            dockerHost = docker
        }
        if let address = reader.string("DD_CNM_HTTP_ADDR") {
            if address.hasPrefix("unix://") {
                let path = String(address.dropFirst("unix://".count))
                // sun_path holds 107 bytes and a NUL.
                guard path.hasPrefix("/"), path.utf8.count < 108, !path.hasSuffix("/") else {
                    throw reader.invalid("DD_CNM_HTTP_ADDR", address)
                }
                httpSocketPath = path
            } else {
                guard let parsed = Self.parseListenAddress(address) else {
                    throw reader.invalid("DD_CNM_HTTP_ADDR", address)
                }
                httpAddress = parsed
            }
        }
        if let text = reader.string("DD_CNM_API_TOKEN") {
            guard let token = APIToken(text) else { throw reader.invalid("DD_CNM_API_TOKEN", "(hidden)") }
            apiToken = token
        }
        apiTokenFile = try reader.absolutePath("DD_CNM_API_TOKEN_FILE")
        apiMaxConcurrent = try reader.integer("DD_CNM_API_MAX_CONCURRENT", in: 1...1024) ?? 8
        if let text = reader.string("DD_CNM_SAMPLE_INTERVAL") {
            // Shorter than 0.1 s, the scheduler would do nothing but sample.
            guard let seconds = Double(text), seconds.isFinite, (0.1...3600).contains(seconds) else {
                throw reader.invalid("DD_CNM_SAMPLE_INTERVAL", text)
            }
            sampleSeconds = seconds
        }
        sampleSeconds = min(sampleSeconds, Double(intervalSeconds))
        if let text = reader.string("DD_CNM_TERMINAL") {
            guard let parsed = TerminalOutput(rawValue: text.lowercased()) else {
                throw reader.invalid("DD_CNM_TERMINAL", text)
            }
            terminal = parsed
        }
        tableRows = try reader.integer("DD_CNM_TABLE_ROWS", in: 1...10_000) ?? 20
        if let text = reader.string("DD_CNM_MEMORY_LIMIT") {
            guard let bytes = MemoryLimit.parseSize(text), ((16 << 20)...(1 << 40)).contains(bytes) else {
                throw reader.invalid("DD_CNM_MEMORY_LIMIT", text)
            }
            memoryLimit = MemoryLimit(bytes: bytes, source: "DD_CNM_MEMORY_LIMIT")
        }
        destroyNotifications = try reader.bool("DD_CNM_DESTROY_NOTIFICATIONS") ?? true
        packetCapture = try reader.bool("DD_CNM_PACKET_CAPTURE") ?? true
        if let text = reader.string("DD_CNM_EBPF_STRATEGY") {
            guard let parsed = EBPFStrategySetting(rawValue: text.lowercased()) else {
                throw reader.invalid("DD_CNM_EBPF_STRATEGY", text)
            }
            ebpfStrategy = parsed
        }
        dockerLabelsAsTags = try reader.stringMap("DD_DOCKER_LABELS_AS_TAGS") ?? [:]
        dockerEnvAsTags = try reader.stringMap("DD_DOCKER_ENV_AS_TAGS") ?? [:]
        containerExclude = try reader.containerFilters("DD_CONTAINER_EXCLUDE")
        containerInclude = try reader.containerFilters("DD_CONTAINER_INCLUDE")
        if let uri = reader.string("ECS_CONTAINER_METADATA_URI_V4") {
            guard uri.hasPrefix("http://") || uri.hasPrefix("https://"), uri.count > 8 else {
                throw reader.invalid("ECS_CONTAINER_METADATA_URI_V4", uri)
            }
            ecsMetadataURI = uri
        }
        ecsMetadataTimeoutMilliseconds = try reader.integer("DD_ECS_METADATA_TIMEOUT", in: 1...60_000) ?? 500
        intake = try IntakeSettings(reader: reader)
    }

    /// Whether a container's flows are left out of the reports.
    /// `images`: the image as given and as normalized; a filter matching either applies.
    public func excludes(containerName name: String, images: [String]) -> Bool {
        func matches(_ filters: [ContainerFilter]) -> Bool {
            filters.contains { $0.matches(name: name, images: images) }
        }
        return matches(containerExclude) && !matches(containerInclude)
    }

    static func splitTags(_ text: String?) -> [String] {
        guard let text else { return [] }
        return text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" || $0 == "\n" }).map(String.init)
    }

    static func isValidDockerHost(_ text: String) -> Bool {
        if text.hasPrefix("unix://") { return text.dropFirst(7).hasPrefix("/") }
        if text.hasPrefix("tcp://") || text.hasPrefix("http://") {
            let rest = text.drop(while: { $0 != "/" }).dropFirst(2)
            return parseListenAddress(String(rest.prefix(while: { $0 != "/" })), allowNames: true) != nil
        }
        return false
    }

    /// `IP:port`, `[IPv6]:port` or `localhost:port`; with `allowNames`, any host name.
    static func parseListenAddress(_ text: String, allowNames: Bool = false) -> ListenAddress? {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":") else { return nil }
            portText = after.dropFirst()
            guard case .v6? = IPAddress(parsing: host) else { return nil }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            let isName =
                !host.isEmpty
                && host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
            guard case .v4? = IPAddress(parsing: host) else {
                guard host == "localhost" || (allowNames && isName) else { return nil }
                return UInt16(portText).flatMap { $0 > 0 ? ListenAddress(host: String(host), port: $0) : nil }
            }
        }
        guard portText.allSatisfy(\.isNumber), let port = UInt16(portText), port > 0 else { return nil }
        return ListenAddress(host: String(host), port: port)
    }
}

/// A variable with a value the agent cannot use; its description is the one line printed at start-up.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var variable: String
    public var value: String
    public var accepted: String

    public init(variable: String, value: String, accepted: String) {
        self.variable = variable
        self.value = value
        self.accepted = accepted
    }

    public var description: String { "invalid \(variable)=\"\(value)\": expected \(accepted)" }
}

struct Reader {
    let environment: [String: String]

    func string(_ name: String) -> String? {
        guard let raw = environment[name] else { return nil }
        let trimmed = raw.trimmingWhitespace()
        return trimmed.isEmpty ? nil : trimmed
    }

    func invalid(_ name: String, _ value: String) -> ConfigurationError {
        let known = Configuration.variables + IntakeSettings.variables
        let accepted = known.first { $0.name == name }?.accepts ?? "a valid value"
        return ConfigurationError(variable: name, value: value, accepted: accepted)
    }

    func bool(_ name: String) throws(ConfigurationError) -> Bool? {
        guard let text = string(name) else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes", "on", "t": return true
        case "false", "0", "no", "off", "f": return false
        default: throw invalid(name, text)
        }
    }

    /// A whole number in `range`: every number the agent reads has an upper bound too, so that no
    /// value, however large, can overflow what is computed from it.
    func integer(_ name: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let text = string(name) else { return nil }
        guard let value = Int(text), range.contains(value) else { throw invalid(name, text) }
        return value
    }

    /// A JSON object of strings; a tag name's leading `+` (Datadog's high-cardinality marker) is dropped.
    func stringMap(_ name: String) throws(ConfigurationError) -> [String: String]? {
        guard let text = string(name) else { return nil }
        guard let map = try? JSONDecoder().decode([String: String].self, from: Data(text.utf8)) else {
            throw invalid(name, text)
        }
        return map.mapValues { $0.hasPrefix("+") ? String($0.dropFirst()) : $0 }.filter { !$0.value.isEmpty }
    }

    func containerFilters(_ name: String) throws(ConfigurationError) -> [ContainerFilter] {
        guard let text = string(name) else { return [] }
        var filters: [ContainerFilter] = []
        for item in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) {
            guard let filter = ContainerFilter(parsing: String(item)) else { throw invalid(name, text) }
            filters.append(filter)
        }
        return filters
    }

    func absolutePath(_ name: String) throws(ConfigurationError) -> String? {
        guard let text = string(name) else { return nil }
        guard text.hasPrefix("/") else { throw invalid(name, text) }
        return text.count > 1 && text.hasSuffix("/") ? String(text.dropLast()) : text
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}

/// One `name:<regex>` or `image:<regex>` item of `DD_CONTAINER_EXCLUDE` / `DD_CONTAINER_INCLUDE`.
/// The pattern matches anywhere in the value, as Datadog's does; `image:` is tried against the image
/// as given and as normalized (`docker_image`).
public struct ContainerFilter: Sendable, Equatable, CustomStringConvertible {
    public enum Field: String, Sendable {
        case name, image
    }

    public let field: Field
    public let pattern: String
    private nonisolated(unsafe) let regex: Regex<AnyRegexOutput>

    public init?(parsing text: String) {
        guard let colon = text.firstIndex(of: ":"), let field = Field(rawValue: String(text[..<colon])) else {
            return nil
        }
        let pattern = String(text[text.index(after: colon)...])
        guard !pattern.isEmpty, let regex = try? Regex(pattern) else { return nil }
        self.field = field
        self.pattern = pattern
        self.regex = regex
    }

    public func matches(name: String, images: [String]) -> Bool {
        switch field {
        case .name: (try? regex.firstMatch(in: name)) != nil
        case .image: images.contains { (try? regex.firstMatch(in: $0)) != nil }
        }
    }

    public var description: String { "\(field.rawValue):\(pattern)" }

    public static func == (a: ContainerFilter, b: ContainerFilter) -> Bool {
        a.field == b.field && a.pattern == b.pattern
    }
}
