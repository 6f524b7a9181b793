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
    /// Fails the request once nothing has arrived for about this long (whole seconds; libcurl
    /// averages its speed over its last few seconds, so the cut comes up to ~5 s later); `.zero`
    /// means never. For streams that have no overall bound.
    public var idleTimeout: Duration = .zero
    /// A longer body fails the request instead of growing memory without bound.
    public var maxResponseBytes: Int
    /// Whether an https server's certificate and name are checked.
    public var verifyTLS: Bool
    /// `http://host:port` of a proxy to go through; nil lets libcurl follow `https_proxy` and the like.
    public var proxy: String?

    public init(
        method: Method = .get,
        url: String,
        unixSocketPath: String? = nil,
        headers: [(name: String, value: String)] = [],
        connectTimeout: Duration = .seconds(2),
        timeout: Duration = .seconds(10),
        maxResponseBytes: Int = 16 << 20,
        verifyTLS: Bool = true,
        proxy: String? = nil
    ) {
        self.verifyTLS = verifyTLS
        self.proxy = proxy
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

/// A piece of a streamed response, in the order it arrives.
public enum HTTPStreamPart: Sendable, Equatable {
    /// The response head, once, before any body.
    case head(status: Int)
    /// Body bytes as they came off the connection (chunked encoding already removed).
    case body(Data)
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

    /// Makes the request on a connection and thread of its own, so the client's other requests go
    /// on meanwhile, and hands the response over piece by piece as it arrives. The stream ends when
    /// the server ends the response and throws an `HTTPError` when the transfer fails; a non-2xx
    /// status is a `.head` like any other. `request.timeout` still bounds the whole transfer (use
    /// `.zero` for a long-lived stream) and `maxResponseBytes` does not apply. Cancelling the
    /// consuming task, or dropping the stream, stops the transfer within milliseconds.
    public func stream(_ request: HTTPRequest) -> AsyncThrowingStream<HTTPStreamPart, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: HTTPStreamPart.self)
        guard let handle = cnm_curl_create() else {
            continuation.finish(throwing: HTTPError(kind: .failed, message: "libcurl could not be initialised"))
            return stream
        }
        let transfer = StreamingTransfer(handle: handle, continuation: continuation)
        continuation.onTermination = { _ in cnm_curl_cancel(transfer.handle) }
        // A queue of its own gets a thread of its own: the transfer blocks it for as long as it lasts.
        DispatchQueue(label: queue.label + ".stream").async { transfer.run(request) }
        return stream
    }

    private func performOnQueue(_ request: HTTPRequest) -> Result<HTTPResponse, HTTPError> {
        dispatchPrecondition(condition: .onQueue(queue))
        cnm_curl_reset(handle)
        if let failure = configure(handle, for: request) {
            return .failure(HTTPError(kind: .failed, message: failure))
        }
        var status = 0
        let result = cnm_curl_perform(handle, &status)
        guard result == CNM_CURL_OK else {
            return .failure(HTTPError(handle, result: result))
        }
        var length = 0
        let bytes = cnm_curl_response_body(handle, &length)
        let body = bytes.map { Data(bytes: $0, count: length) } ?? Data()
        return .success(HTTPResponse(status: status, body: body))
    }
}

/// One streamed request: owns its handle, which lives until both the transfer and the stream's
/// termination handler (which may still cancel it) are done with it.
private final class StreamingTransfer: @unchecked Sendable {
    // Only the transfer's thread uses the handle, but for cnm_curl_cancel, which is thread-safe.
    let handle: OpaquePointer
    let continuation: AsyncThrowingStream<HTTPStreamPart, any Error>.Continuation

    init(handle: OpaquePointer, continuation: AsyncThrowingStream<HTTPStreamPart, any Error>.Continuation) {
        self.handle = handle
        self.continuation = continuation
    }

    deinit {
        cnm_curl_destroy(handle)
    }

    func run(_ request: HTTPRequest) {
        if let failure = configure(handle, for: request) {
            continuation.finish(throwing: HTTPError(kind: .failed, message: failure))
            return
        }
        let onHead: cnm_curl_head_fn = { context, status in
            let transfer = Unmanaged<StreamingTransfer>.fromOpaque(context!).takeUnretainedValue()
            transfer.continuation.yield(.head(status: status))
        }
        let onBody: cnm_curl_body_fn = { context, bytes, length in
            let transfer = Unmanaged<StreamingTransfer>.fromOpaque(context!).takeUnretainedValue()
            guard let bytes, length > 0 else { return }
            transfer.continuation.yield(.body(Data(bytes: bytes, count: length)))
        }
        // Unretained is enough: `self` stays alive until this method returns.
        let context = Unmanaged.passUnretained(self).toOpaque()
        guard cnm_curl_set_stream(handle, onHead, onBody, context) == 0 else {
            continuation.finish(throwing: HTTPError(kind: .failed, message: "cannot stream the response"))
            return
        }
        var status = 0
        let result = cnm_curl_perform_cancellable(handle, &status)
        switch result {
        case CNM_CURL_OK, CNM_CURL_CANCELLED: continuation.finish()
        default: continuation.finish(throwing: HTTPError(handle, result: result))
        }
    }
}

extension HTTPError {
    /// The failure the handle's last transfer ended with.
    fileprivate init(_ handle: OpaquePointer, result: cnm_curl_result) {
        let kind: Kind =
            switch result {
            case CNM_CURL_CONNECT_FAILED: .connectFailed
            case CNM_CURL_TIMED_OUT: .timedOut
            case CNM_CURL_CONNECTION_CLOSED: .connectionClosed
            case CNM_CURL_BAD_RESPONSE: .badResponse
            case CNM_CURL_TOO_LARGE: .responseTooLarge
            default: .failed
            }
        self.init(kind: kind, message: String(cString: cnm_curl_error_text(handle)), osErrno: cnm_curl_os_errno(handle))
    }
}

/// Sets the handle up for `request`; returns what could not be set, or nil.
private func configure(_ handle: OpaquePointer, for request: HTTPRequest) -> String? {
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
    guard cnm_curl_set_idle_timeout_s(handle, Int(request.idleTimeout.components.seconds)) == 0 else {
        return "invalid idle timeout"
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
    guard cnm_curl_set_tls_verify(handle, request.verifyTLS ? 1 : 0) == 0 else {
        return "cannot set TLS verification"
    }
    guard cnm_curl_set_proxy(handle, request.proxy) == 0 else {
        return "cannot use proxy \(request.proxy ?? "")"
    }
    cnm_curl_set_max_response_bytes(handle, max(0, request.maxResponseBytes))
    return nil
}

extension Duration {
    /// Whole milliseconds, at least 1 for any positive duration: libcurl reads 0 as "no limit".
    fileprivate var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return self > .zero ? max(1, Int(ms)) : Int(ms)
    }
}
