/// Why the Docker daemon could not be asked or understood; `kind` is what `/status` counts by.
public struct DockerError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// `DOCKER_HOST` is not a `unix://` or `tcp://` address.
        case invalidHost = "invalid_host"
        /// Nothing at the socket path: dockerd not running, or the socket not mounted in.
        case socketMissing = "socket_missing"
        case connectionRefused = "connection_refused"
        /// The socket exists but this process may not open it (not root, not in the docker group).
        case permissionDenied = "permission_denied"
        case timeout
        /// The daemon answered with a non-2xx status (`httpStatus`).
        case httpStatus = "http_status"
        /// A complete response whose body is not the JSON expected.
        case undecodableBody = "undecodable_body"
        /// The connection closed before a whole response arrived.
        case connectionClosed = "connection_closed"
        /// An open event stream was silent for longer than its idle timeout.
        case idle
        /// Something answered, but not in HTTP.
        case badResponse = "bad_response"
        case responseTooLarge = "response_too_large"
        /// Any other transport failure.
        case transport
    }

    public var kind: Kind
    /// What happened, naming the endpoint and request: meant for one log line.
    public var message: String
    /// The response status, for `.httpStatus`.
    public var httpStatus: Int?

    public init(kind: Kind, message: String, httpStatus: Int? = nil) {
        self.kind = kind
        self.message = message
        self.httpStatus = httpStatus
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
