import FoundationEssentials
import Glibc

/// Asks a Docker daemon about its containers over the Engine API. Paths carry no API version, so
/// the daemon answers in its own, and decoding tolerates every version since 1.22.
public struct DockerClient: Sendable {
    /// Docker's own default when `DOCKER_HOST` is unset.
    public static let defaultHost = "unix:///var/run/docker.sock"

    /// The address as given, for messages.
    public let host: String
    private let baseURL: String
    private let socketPath: String?
    private let http: HTTPClient
    private let connectTimeout: Duration
    private let timeout: Duration
    private let maxResponseBytes: Int

    /// `host` is a `DOCKER_HOST` value: `unix:///path/to/socket` or `tcp://host[:port]` (plain
    /// HTTP, port 2375 when none is given); empty means the default socket.
    public init(
        host: String = DockerClient.defaultHost,
        connectTimeout: Duration = .seconds(1),
        timeout: Duration = .seconds(5),
        maxResponseBytes: Int = 16 << 20
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

    /// Lists the running containers and inspects each. A container that is gone by the time it is
    /// inspected (404) is left out; any other failure fails the whole call.
    public func runningContainers() async throws(DockerError) -> [ContainerMetadata] {
        var out: [ContainerMetadata] = []
        for summary in try await listContainers() {
            do {
                let inspect = try await inspectContainer(id: summary.id)
                out.append(ContainerMetadata(inspect: inspect, summary: summary))
            } catch {
                guard error.httpStatus == 404 else { throw error }
            }
        }
        return out
    }

    private func decode<T: Decodable>(_ type: T.Type, path: String) async throws(DockerError) -> T {
        let body = try await get(path)
        do {
            return try JSONDecoder().decode(type, from: body)
        } catch {
            throw DockerError(
                kind: .undecodableBody,
                message: "GET \(path) on \(host): body is not the JSON expected (\(Self.describe(error)))")
        }
    }

    /// The body of a 2xx response to `GET path`.
    private func get(_ path: String) async throws(DockerError) -> Data {
        let request = HTTPRequest(
            url: baseURL + path,
            unixSocketPath: socketPath,
            headers: [("Accept", "application/json")],
            connectTimeout: connectTimeout,
            timeout: timeout,
            maxResponseBytes: maxResponseBytes
        )
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

    private func dockerError(_ error: HTTPError, request: String) -> DockerError {
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
    private static func daemonMessage(_ body: Data) -> String {
        struct ErrorBody: Decodable { var message: String }
        if let decoded = try? JSONDecoder().decode(ErrorBody.self, from: body) {
            return decoded.message
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self)
        return text.isEmpty ? "(empty body)" : text
    }

    /// One line saying where decoding failed, instead of DecodingError's long dump.
    private static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func at(_ context: DecodingError.Context) -> String {
            let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return path.isEmpty ? "" : " at \(path)"
        }
        switch error {
        case .keyNotFound(let key, let context): return "no \(key.stringValue)\(at(context))"
        case .typeMismatch(let type, let context): return "expected \(type)\(at(context))"
        case .valueNotFound(let type, let context): return "null for \(type)\(at(context))"
        case .dataCorrupted(let context): return "not valid JSON\(at(context))"
        @unknown default: return "\(error)"
        }
    }
}
