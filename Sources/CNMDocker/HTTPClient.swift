import CCurl
import Dispatch
import FoundationEssentials

/// One HTTP request as libcurl will make it.
public struct HTTPRequest: Sendable {
    public enum Method: Sendable, Equatable {
        case get
        case post(body: Data)
    }

    public var method: Method
    /// `http://` or `https://`; with a unix socket the host part only fills the `Host` header.
    public var url: String
    /// Connect to this AF_UNIX socket instead of the URL's host.
    public var unixSocketPath: String?
    public var headers: [(name: String, value: String)]
    /// `.zero` leaves libcurl's default of 300 s.
    public var connectTimeout: Duration
    /// Bounds the whole request, so a silent peer cannot hold the client's thread forever;
    /// `.zero` means no limit.
    public var timeout: Duration
    /// A longer body fails the request instead of growing memory without bound.
    public var maxResponseBytes: Int

    public init(
        method: Method = .get,
        url: String,
        unixSocketPath: String? = nil,
        headers: [(name: String, value: String)] = [],
        connectTimeout: Duration = .seconds(2),
        timeout: Duration = .seconds(10),
        maxResponseBytes: Int = 16 << 20
    ) {
        self.method = method
        self.url = url
        self.unixSocketPath = unixSocketPath
        self.headers = headers
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.maxResponseBytes = maxResponseBytes
    }
}

public struct HTTPResponse: Sendable, Equatable {
    /// Any status the server sent: 4xx and 5xx are responses, not errors, at this level.
    public var status: Int
    public var body: Data

    public init(status: Int, body: Data) {
        self.status = status
        self.body = body
    }
}

/// Why a request got no HTTP response.
public struct HTTPError: Error, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// No connection; `osErrno` says why (ENOENT: no such socket, ECONNREFUSED, EACCES, ...).
        case connectFailed
        case timedOut
        /// Closed or reset by the peer before a whole response arrived.
        case connectionClosed
        /// The reply was not well-formed HTTP.
        case badResponse
        case responseTooLarge
        /// The request could not be set up (a malformed URL, memory) or libcurl failed otherwise.
        case failed
    }

    public var kind: Kind
    /// curl's description, or ours for set-up failures.
    public var message: String
    /// errno of the failing system call when libcurl reports one, else 0.
    public var osErrno: Int32

    public init(kind: Kind, message: String, osErrno: Int32 = 0) {
        self.kind = kind
        self.message = message
        self.osErrno = osErrno
    }
}

/// A libcurl handle that makes one request at a time. Requests run on the client's own serial
/// queue, never on Swift's cooperative pool: a blocking transfer there would starve other tasks.
/// Reusing one client keeps its connections open between requests.
public final class HTTPClient: @unchecked Sendable {
    // The handle is only touched on `queue`, which is what makes the class safe to share.
    private let handle: OpaquePointer
    private let queue: DispatchQueue

    public init(label: String = "cnm.http") throws(HTTPError) {
        guard let handle = cnm_curl_create() else {
            throw HTTPError(kind: .failed, message: "libcurl could not be initialised")
        }
        self.handle = handle
        self.queue = DispatchQueue(label: label)
    }

    deinit {
        cnm_curl_destroy(handle)
    }

    /// Blocks the calling thread until the request ends; from async code use the async overload.
    public func perform(_ request: HTTPRequest) throws(HTTPError) -> HTTPResponse {
        try queue.sync { performOnQueue(request) }.get()
    }

    /// Runs the blocking transfer on the client's queue and resumes when it ends. Cancelling the
    /// task does not interrupt a transfer: the request's timeouts bound it.
    public func perform(_ request: HTTPRequest) async throws(HTTPError) -> HTTPResponse {
        try await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.performOnQueue(request)) }
        }.get()
    }

    private func performOnQueue(_ request: HTTPRequest) -> Result<HTTPResponse, HTTPError> {
        dispatchPrecondition(condition: .onQueue(queue))
        cnm_curl_reset(handle)
        if let failure = configure(request) {
            return .failure(HTTPError(kind: .failed, message: failure))
        }
        var status = 0
        let result = cnm_curl_perform(handle, &status)
        guard result == CNM_CURL_OK else {
            let message = String(cString: cnm_curl_error_text(handle))
            let kind: HTTPError.Kind =
                switch result {
                case CNM_CURL_CONNECT_FAILED: .connectFailed
                case CNM_CURL_TIMED_OUT: .timedOut
                case CNM_CURL_CONNECTION_CLOSED: .connectionClosed
                case CNM_CURL_BAD_RESPONSE: .badResponse
                case CNM_CURL_TOO_LARGE: .responseTooLarge
                default: .failed
                }
            return .failure(HTTPError(kind: kind, message: message, osErrno: cnm_curl_os_errno(handle)))
        }
        var length = 0
        let bytes = cnm_curl_response_body(handle, &length)
        let body = bytes.map { Data(bytes: $0, count: length) } ?? Data()
        return .success(HTTPResponse(status: status, body: body))
    }

    /// Sets the handle up for `request`; returns what could not be set, or nil.
    private func configure(_ request: HTTPRequest) -> String? {
        guard cnm_curl_set_url(handle, request.url) == 0 else {
            return "invalid URL \(request.url) (http or https only)"
        }
        guard cnm_curl_set_unix_socket_path(handle, request.unixSocketPath) == 0 else {
            return "cannot use unix socket \(request.unixSocketPath ?? "")"
        }
        guard
            cnm_curl_set_timeouts_ms(
                handle, request.connectTimeout.wholeMilliseconds, request.timeout.wholeMilliseconds) == 0
        else {
            return "invalid timeouts"
        }
        for header in request.headers {
            guard cnm_curl_add_header(handle, "\(header.name): \(header.value)") == 0 else {
                return "cannot add header \(header.name)"
            }
        }
        if case .post(let body) = request.method {
            let added = body.withUnsafeBytes { cnm_curl_set_post_body(handle, $0.baseAddress, $0.count) }
            guard added == 0 else { return "cannot set the request body" }
        }
        cnm_curl_set_max_response_bytes(handle, max(0, request.maxResponseBytes))
        return nil
    }
}

extension Duration {
    /// Whole milliseconds, at least 1 for any positive duration: libcurl reads 0 as "no limit".
    fileprivate var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return self > .zero ? max(1, Int(ms)) : Int(ms)
    }
}
