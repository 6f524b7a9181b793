import CNMHTTP
import FoundationEssentials
import Synchronization

/// Why the task metadata endpoint could not be asked or understood.
public struct ECSMetadataError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// The base URI is empty or not an `http://` or `https://` URL.
        case invalidEndpoint
        /// Nothing answered the connection.
        case connectionFailed
        case timeout
        /// The connection closed before a whole response arrived.
        case connectionClosed
        /// Something answered, but not in HTTP.
        case badResponse
        case responseTooLarge
        /// A status other than 2xx.
        case httpStatus(Int)
        /// A whole response whose body is not a metadata response: not JSON, cut short, or JSON of
        /// another shape.
        case invalidJSON
        /// Any other failure of the HTTP client.
        case transport
    }

    public var reason: Reason
    /// What happened, naming the URL: meant for one log line.
    public var message: String

    public init(reason: Reason, message: String) {
        self.reason = reason
        self.message = message
    }

    /// The name `/status` counts this problem by: `ecs_timeout`, `ecs_http_500`, `ecs_invalid_json`, ...
    public var kind: String {
        switch reason {
        case .invalidEndpoint: "ecs_invalid_endpoint"
        case .connectionFailed: "ecs_connection_failed"
        case .timeout: "ecs_timeout"
        case .connectionClosed: "ecs_connection_closed"
        case .badResponse: "ecs_bad_response"
        case .responseTooLarge: "ecs_response_too_large"
        case .httpStatus(let status): "ecs_http_\(status)"
        case .invalidJSON: "ecs_invalid_json"
        case .transport: "ecs_transport"
        }
    }

    public var description: String { "\(kind): \(message)" }
}

/// A task metadata response and the path that gave it.
public struct ECSTaskFetch: Sendable, Equatable {
    public enum Path: String, Sendable {
        case taskWithTags = "/taskWithTags"
        case task = "/task"
    }

    public var task: ECSTaskMetadata
    public var path: Path
    /// Why `/taskWithTags` was not used, when `/task` answered instead.
    public var taskWithTagsFailure: ECSMetadataError?

    public init(task: ECSTaskMetadata, path: Path, taskWithTagsFailure: ECSMetadataError? = nil) {
        self.task = task
        self.path = path
        self.taskWithTagsFailure = taskWithTagsFailure
    }
}

/// Asks the ECS task metadata endpoint v4, which the ECS agent (or Fargate) serves to the containers
/// of a task at the URI in their `ECS_CONTAINER_METADATA_URI_V4`.
public struct ECSMetadataClient: Sendable {
    /// The variable ECS sets in every container of a task.
    public static let environmentVariable = "ECS_CONTAINER_METADATA_URI_V4"
    /// Datadog's default for `DD_ECS_METADATA_TIMEOUT`.
    public static let defaultTimeoutMilliseconds = 500

    /// The base URI, without a trailing `/`.
    public let baseURI: String
    private let http: HTTPClient
    private let timeout: Duration
    private let maxResponseBytes: Int
    /// Set once `/taskWithTags` answered 404 (an ECS agent too old for it): every copy of this
    /// client then asks `/task` alone instead of two requests per fetch.
    private let taskWithTagsMissing = Flag()

    private final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// `timeoutMilliseconds` bounds each request, connecting included (at least 1 ms); a longer
    /// body than `maxResponseBytes` fails the request.
    public init(
        baseURI: String,
        timeoutMilliseconds: Int = ECSMetadataClient.defaultTimeoutMilliseconds,
        maxResponseBytes: Int = 4 << 20
    ) throws(ECSMetadataError) {
        var uri = Substring(baseURI)
        while uri.hasSuffix("/") { uri = uri.dropLast() }
        let scheme = uri.prefix { $0 != ":" }.lowercased()
        guard scheme == "http" || scheme == "https", uri.count > scheme.count + 3 else {
            let shown = baseURI.isEmpty ? "(empty)" : baseURI
            throw ECSMetadataError(
                reason: .invalidEndpoint, message: "\(Self.environmentVariable) \(shown) is not an http or https URL")
        }
        do {
            http = try HTTPClient(label: "cnm.ecs")
        } catch {
            throw ECSMetadataError(reason: .transport, message: error.message)
        }
        self.baseURI = String(uri)
        timeout = .milliseconds(max(1, timeoutMilliseconds))
        self.maxResponseBytes = maxResponseBytes
    }

    /// The task and all its containers: `/taskWithTags`, or `/task` when that fails in any way but
    /// a failed connection (after which `/task` would fail alike). `/taskWithTags` makes the ECS
    /// agent call the AWS API for the tags, so it can be slow or fail where `/task` answers; an
    /// answer that reports its tag lookups in `Errors` but holds the task is used as it is. Each
    /// request has the whole timeout, so this takes at most twice that. When both fail, the error
    /// is `/task`'s.
    public func fetchTask() async throws(ECSMetadataError) -> ECSTaskFetch {
        if taskWithTagsMissing.value.load(ordering: .relaxed) {
            return ECSTaskFetch(task: try await task(at: .task), path: .task)
        }
        let tagged: ECSMetadataError
        do {
            return ECSTaskFetch(task: try await task(at: .taskWithTags), path: .taskWithTags)
        } catch {
            guard error.reason != .connectionFailed else { throw error }
            if error.reason == .httpStatus(404) { taskWithTagsMissing.value.store(true, ordering: .relaxed) }
            tagged = error
        }
        return ECSTaskFetch(task: try await task(at: .task), path: .task, taskWithTagsFailure: tagged)
    }

    /// The calling container, from the base URI itself.
    public func fetchContainer() async throws(ECSMetadataError) -> ECSContainerMetadata {
        let url = baseURI
        return try decode(ECSContainerMetadata.self, from: try await get(url), url: url)
    }

    private func task(at path: ECSTaskFetch.Path) async throws(ECSMetadataError) -> ECSTaskMetadata {
        let url = baseURI + path.rawValue
        let task = try decode(ECSTaskMetadata.self, from: try await get(url), url: url)
        // `{}` or a body of `Errors` alone decodes too, but says nothing about the task.
        guard task.taskARN != nil || task.containers != nil else {
            throw ECSMetadataError(
                reason: .invalidJSON, message: "GET \(url): neither TaskARN nor Containers in the response")
        }
        return task
    }

    private func decode<T: Decodable>(_ type: T.Type, from body: Data, url: String) throws(ECSMetadataError) -> T {
        do {
            return try JSONDecoder().decode(type, from: body)
        } catch {
            throw ECSMetadataError(
                reason: .invalidJSON,
                message: "GET \(url): body is not the JSON expected (\(describeDecodingError(error)))")
        }
    }

    /// The body of a 2xx response.
    private func get(_ url: String) async throws(ECSMetadataError) -> Data {
        let request = HTTPRequest(
            url: url,
            headers: [("Accept", "application/json")],
            connectTimeout: timeout,
            timeout: timeout,
            maxResponseBytes: maxResponseBytes
        )
        let response: HTTPResponse
        do {
            response = try await http.perform(request)
        } catch {
            let reason: ECSMetadataError.Reason =
                switch error.kind {
                case .connectFailed: .connectionFailed
                case .timedOut: .timeout
                case .connectionClosed: .connectionClosed
                case .badResponse: .badResponse
                case .responseTooLarge: .responseTooLarge
                case .failed: .transport
                }
            throw ECSMetadataError(reason: reason, message: "GET \(url): \(error.message)")
        }
        guard (200..<300).contains(response.status) else {
            let text = String(decoding: response.body.prefix(200), as: UTF8.self)
            let message = "GET \(url): HTTP \(response.status): \(text.isEmpty ? "(empty body)" : text)"
            throw ECSMetadataError(reason: .httpStatus(response.status), message: message)
        }
        return response.body
    }
}
