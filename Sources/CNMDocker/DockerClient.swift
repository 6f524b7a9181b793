import CNMHTTP
import FoundationEssentials
import Glibc
import Synchronization

/// An Engine API version, such as 1.41.
public struct DockerAPIVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// Parses `major.minor`, as in `/version`'s `ApiVersion`.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let major = Int(parts[0]), let minor = Int(parts[1]), major >= 0, minor >= 0 else {
            return nil
        }
        self.init(major: major, minor: minor)
    }

    public static func < (a: Self, b: Self) -> Bool { (a.major, a.minor) < (b.major, b.minor) }

    public var description: String { "\(major).\(minor)" }
}

/// Which API version request paths name.
public enum DockerAPIVersioning: Sendable, Equatable {
    /// No version in the path: the daemon answers in its own.
    case unversioned
    /// Asks `/version` once and uses the lower of the daemon's version and
    /// `DockerClient.maxAPIVersion`; a daemon without `/version` (404) or whose reply names no
    /// version gets unversioned paths.
    case negotiate
    case fixed(DockerAPIVersion)
}

/// Asks a Docker daemon about its containers over the Engine API. Decoding tolerates every API
/// version since 1.22, so unversioned paths, answered in the daemon's own version, work too.
public struct DockerClient: Sendable {
    /// Docker's own default when `DOCKER_HOST` is unset.
    public static let defaultHost = "unix:///var/run/docker.sock"
    /// The newest API version whose responses this client has been checked against.
    public static let maxAPIVersion = DockerAPIVersion(major: 1, minor: 45)

    /// The address as given, for messages.
    public let host: String
    private let baseURL: String
    private let socketPath: String?
    private let http: HTTPClient
    private let connectTimeout: Duration
    private let timeout: Duration
    private let maxResponseBytes: Int
    private let versioning: DockerAPIVersioning
    private let negotiation = Negotiation()

    /// `host` is a `DOCKER_HOST` value: `unix:///path/to/socket` or `tcp://host[:port]` (plain
    /// HTTP, port 2375 when none is given); empty means the default socket.
    public init(
        host: String = DockerClient.defaultHost,
        connectTimeout: Duration = .seconds(1),
        timeout: Duration = .seconds(5),
        maxResponseBytes: Int = 16 << 20,
        apiVersion: DockerAPIVersioning = .unversioned
    ) throws(DockerError) {
        let host = host.isEmpty ? Self.defaultHost : host
        if host.hasPrefix("unix://") {
            let path = String(host.dropFirst("unix://".count))
            socketPath = path.isEmpty ? String(Self.defaultHost.dropFirst("unix://".count)) : path
            baseURL = "http://localhost"
        } else if host.hasPrefix("tcp://") {
            let rest = host.dropFirst("tcp://".count).drop { $0 == "/" }
            let authority = rest.prefix { $0 != "/" }
            guard !authority.isEmpty else {
                throw DockerError(kind: .invalidHost, message: "no host in DOCKER_HOST \(host)")
            }
            // A port follows the last colon, unless that colon is inside an IPv6 literal.
            let hasPort = authority.last != "]" && authority.contains(":")
            var basePath = rest.dropFirst(authority.count)
            while basePath.hasSuffix("/") { basePath = basePath.dropLast() }
            socketPath = nil
            baseURL = "http://\(authority)\(hasPort ? "" : ":2375")\(basePath)"
        } else {
            let message = "DOCKER_HOST \(host) is neither unix:///path nor tcp://host:port"
            throw DockerError(kind: .invalidHost, message: message)
        }
        do {
            http = try HTTPClient(label: "cnm.docker")
        } catch {
            throw DockerError(kind: .transport, message: error.message)
        }
        self.host = host
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.maxResponseBytes = maxResponseBytes
        self.versioning = apiVersion
    }

    /// The version request paths name, nil for unversioned; negotiates first if that is the policy
    /// and has not happened yet. A failed negotiation is not kept: the next request tries again.
    public func apiVersion() async throws(DockerError) -> DockerAPIVersion? {
        switch versioning {
        case .unversioned: return nil
        case .fixed(let version): return version
        case .negotiate: break
        }
        // One negotiation for every request that needs it, however many arrive at once.
        let task = negotiation.task.withLock { task in
            if let task { return task }
            let started = Task { await self.negotiate() }
            task = started
            return started
        }
        let result = await task.value
        if case .failure = result {
            negotiation.task.withLock { if $0 == task { $0 = nil } }
        }
        return try result.get()
    }

    private func negotiate() async -> Result<DockerAPIVersion?, DockerError> {
        struct Version: Decodable {
            var apiVersion: String?
            enum CodingKeys: String, CodingKey { case apiVersion = "ApiVersion" }
        }
        do throws(DockerError) {
            let body = try await get("/version", versioned: false)
            let reply = try? JSONDecoder().decode(Version.self, from: body)
            let daemon = reply?.apiVersion.flatMap(DockerAPIVersion.init)
            return .success(daemon.map { min($0, Self.maxAPIVersion) })
        } catch let error where error.httpStatus == 404 {
            return .success(nil)
        } catch {
            return .failure(error)
        }
    }

    /// `GET /_ping`: whether a daemon answers at all.
    public func ping() async throws(DockerError) {
        _ = try await get("/_ping")
    }

    /// `GET /containers/json?all=1`: every container, exited ones too, so one that started and
    /// exited between two refreshes still has its tags for the flows it left.
    public func listContainers() async throws(DockerError) -> [DockerContainerSummary] {
        try await decode([DockerContainerSummary].self, path: "/containers/json?all=1")
    }

    /// Every byte but ASCII letters and digits as `%XX`: an id or name is one path segment, whatever it holds.
    static func percentEncoded(_ segment: String) -> String {
        var out = ""
        for byte in segment.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80 && (c.isLetter || c.isNumber) {
                out.append(c)
            } else {
                out +=
                    "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 0xF, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// `GET /containers/{id}/json`.
    public func inspectContainer(id: String) async throws(DockerError) -> DockerContainerInspect {
        return try await decode(DockerContainerInspect.self, path: "/containers/\(Self.percentEncoded(id))/json")
    }

    private func decode<T: Decodable>(_ type: T.Type, path: String) async throws(DockerError) -> T {
        let body = try await get(path)
        do {
            return try JSONDecoder().decode(type, from: body)
        } catch {
            throw DockerError(
                kind: .undecodableBody,
                message: "GET \(path) on \(host): body is not the JSON expected (\(describeDecodingError(error)))")
        }
    }

    /// `baseURL` with the version prefix, then `path`.
    func url(_ path: String, versioned: Bool = true) async throws(DockerError) -> String {
        guard versioned, let version = try await apiVersion() else { return baseURL + path }
        return "\(baseURL)/v\(version)\(path)"
    }

    /// A request to `url` with this client's socket and headers.
    func request(_ url: String, timeout: Duration? = nil) -> HTTPRequest {
        HTTPRequest(
            url: url,
            unixSocketPath: socketPath,
            headers: [("Accept", "application/json")],
            connectTimeout: connectTimeout,
            timeout: timeout ?? self.timeout,
            maxResponseBytes: maxResponseBytes
        )
    }

    /// The body of a 2xx response to `GET path`.
    private func get(_ path: String, versioned: Bool = true) async throws(DockerError) -> Data {
        let request = self.request(try await url(path, versioned: versioned))
        let response: HTTPResponse
        do {
            response = try await http.perform(request)
        } catch {
            throw dockerError(error, request: "GET \(path)")
        }
        guard (200..<300).contains(response.status) else {
            let message = "GET \(path) on \(host): HTTP \(response.status): \(Self.daemonMessage(response.body))"
            throw DockerError(kind: .httpStatus, message: message, httpStatus: response.status)
        }
        return response.body
    }

    /// The parts of a streamed `GET` of `url`.
    func stream(_ request: HTTPRequest) -> AsyncThrowingStream<HTTPStreamPart, any Error> {
        http.stream(request)
    }

    func dockerError(_ error: HTTPError, request: String) -> DockerError {
        let context = "\(request) on \(host)"
        switch error.kind {
        case .connectFailed where error.osErrno == ENOENT:
            return DockerError(kind: .socketMissing, message: "no socket at \(socketPath ?? host): is dockerd running?")
        case .connectFailed where error.osErrno == ECONNREFUSED:
            return DockerError(kind: .connectionRefused, message: "\(context): connection refused")
        case .connectFailed where error.osErrno == EACCES || error.osErrno == EPERM:
            let message = "\(context): permission denied (root or the docker group needed)"
            return DockerError(kind: .permissionDenied, message: message)
        case .timedOut:
            return DockerError(kind: .timeout, message: "\(context): \(error.message)")
        case .connectionClosed:
            return DockerError(kind: .connectionClosed, message: "\(context): \(error.message)")
        case .badResponse:
            return DockerError(kind: .badResponse, message: "\(context): \(error.message)")
        case .responseTooLarge:
            return DockerError(kind: .responseTooLarge, message: "\(context): \(error.message)")
        case .connectFailed, .failed:
            return DockerError(kind: .transport, message: "\(context): \(error.message)")
        }
    }

    /// The daemon's `{"message": "..."}`, or the start of whatever body came instead.
    static func daemonMessage(_ body: Data) -> String {
        struct ErrorBody: Decodable { var message: String }
        if let decoded = try? JSONDecoder().decode(ErrorBody.self, from: body) {
            return decoded.message
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self)
        return text.isEmpty ? "(empty body)" : text
    }
}

/// The negotiation shared by every copy of one client.
private final class Negotiation: Sendable {
    let task = Mutex<Task<Result<DockerAPIVersion?, DockerError>, Never>?>(nil)
}
