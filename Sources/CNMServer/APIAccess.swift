import CNMModel
import CNMReport
import Hummingbird
import NIOCore
import Synchronization

/// Requests other than `/healthz` need `Authorization: Bearer <token>`; the comparison takes the
/// same time wherever a wrong token differs. A refusal is counted in `/status`, not logged: a
/// scanner must not fill the log.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: Configuration.APIToken
    let store: StatusStore

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        if request.uri.path == "/healthz" || Self.authorizes(request.headers[.authorization], token) {
            return try await next(request, context)
        }
        store.updateStatus { $0.count("api_unauthorized", detail: "a request without the API token was refused") }
        return try APIServer.json(
            ["error": "this API needs Authorization: Bearer <DD_CNM_API_TOKEN>"], status: .unauthorized,
            headers: [.wwwAuthenticate: #"Bearer realm="cnm-agent""#])
    }

    /// RFC 6750: the scheme is case-insensitive, the token follows one space.
    static func authorizes(_ header: String?, _ token: Configuration.APIToken) -> Bool {
        guard let header, header.utf8.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        return token.matches(header.utf8.dropFirst(7))
    }
}

/// At most `limit` requests are served at once; one more is answered 503 at once, so that readers
/// that pile up cannot make the agent queue work without bound.
struct ConcurrencyLimitMiddleware<Context: RequestContext>: RouterMiddleware {
    final class Counter: Sendable {
        let inFlight = Atomic<Int>(0)
    }

    let limit: Int
    let counter = Counter()
    let store: StatusStore

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response
    {
        let now = counter.inFlight.wrappingAdd(1, ordering: .relaxed).newValue
        defer { counter.inFlight.wrappingSubtract(1, ordering: .relaxed) }
        guard now <= limit || request.uri.path == "/healthz" else {
            store.updateStatus {
                $0.count("api_busy", detail: "more than DD_CNM_API_MAX_CONCURRENT=\(limit) requests at once")
            }
            return try APIServer.json(
                ["error": "busy: more than \(limit) requests at once"], status: .serviceUnavailable,
                headers: [.retryAfter: "1"])
        }
        return try await next(request, context)
    }
}
