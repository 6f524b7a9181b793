import CNMModel
import CNMReport
import FoundationEssentials
import Glibc
import Hummingbird
import Logging
import NIOCore

/// The local HTTP API: `/api/v1/connections`, `/api/v1/intervals`, `/status`, `/healthz`.
public enum APIServer {
    /// Where and to whom the API answers.
    public struct Access: Sendable {
        public var address: Configuration.ListenAddress
        /// A unix socket to listen on instead of `address`.
        public var socketPath: String?
        public var token: Configuration.APIToken?
        public var maxConcurrent: Int

        public init(
            address: Configuration.ListenAddress, socketPath: String? = nil, token: Configuration.APIToken? = nil,
            maxConcurrent: Int = 8
        ) {
            self.address = address
            self.socketPath = socketPath
            self.token = token
            self.maxConcurrent = maxConcurrent
        }
    }

    public static func application(
        store: StatusStore,
        intervals: IntervalHistory,
        access: Access,
        logger: Logger,
        memory: @escaping @Sendable () -> MemoryUsage? = { nil },
        memoryBudget: MemoryBudget? = nil,
        clock: @escaping @Sendable () -> Timestamp
    ) -> some ApplicationProtocol {
        let address: BindAddress =
            access.socketPath.map { .unixDomainSocket(path: $0) }
            ?? .hostname(access.address.host, port: Int(access.address.port))
        return Application(
            router: router(
                store: store, intervals: intervals, access: access, memory: memory, memoryBudget: memoryBudget,
                clock: clock),
            configuration: .init(address: address, serverName: "cnm-agent"),
            logger: logger
        )
    }

    /// The routes behind the concurrency cap and, when there is a token, the token check.
    static func router(
        store: StatusStore, intervals: IntervalHistory, access: Access,
        memory: @escaping @Sendable () -> MemoryUsage? = { nil },
        memoryBudget: MemoryBudget? = nil,
        clock: @escaping @Sendable () -> Timestamp
    ) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ConcurrencyLimitMiddleware(limit: access.maxConcurrent, store: store))
        if let token = access.token { router.add(middleware: BearerTokenMiddleware(token: token, store: store)) }

        // The intervals' JSON was written once, when each was published: a read copies no bytes.
        router.get("/api/v1/connections") { _, _ in
            guard let latest = intervals.latest else {
                return try json(["error": "no interval completed yet"], status: .serviceUnavailable)
            }
            return Response(status: .ok, headers: jsonHeaders, body: .init(byteBuffer: intervals.json(latest)))
        }
        router.get("/api/v1/intervals") { request, _ in
            let after = request.uri.queryParameters.get("after", as: UInt64.self) ?? 0
            var parts = [ByteBuffer(string: #"{"intervals":["#)]
            for (index, interval) in intervals.intervals(after: after).enumerated() {
                if index > 0 { parts.append(ByteBuffer(string: ",")) }
                parts.append(intervals.json(interval))
            }
            parts.append(ByteBuffer(string: "]}"))
            return Response(status: .ok, headers: jsonHeaders, body: .init(contentsOf: parts))
        }
        router.get("/status") { _, _ in
            try json(
                StatusJSON(
                    s: store.status, connectionsInLastReport: intervals.latest?.connections ?? 0, memory: memory(),
                    memoryBudget: memoryBudget,
                    retained: .init(
                        count: intervals.count, bytes: intervals.bytes,
                        decompressionFailures: intervals.decompressionFailures),
                    now: clock())
            )
        }
        router.get("/healthz") { _, _ in
            store.status.firstCollectionDone
                ? try json(["status": "ok"]) : try json(["status": "starting"], status: .serviceUnavailable)
        }
        return router
    }

    static let jsonHeaders: HTTPFields = [.contentType: "application/json"]

    static func json(_ value: any Encodable, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) throws
        -> Response
    {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension APIServer {
    /// Whether a start-up error is the listen address being taken (EADDRINUSE), a configuration error.
    public static func isAddressInUse(_ error: any Error) -> Bool {
        (error as? IOError)?.errnoCode == EADDRINUSE
    }
}
