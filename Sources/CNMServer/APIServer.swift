import CNMModel
import CNMReport
import FoundationEssentials
import Glibc
import Hummingbird
import Logging
import NIOCore

/// The local HTTP API: `/api/v1/connections`, `/api/v1/intervals`, `/status`, `/healthz`.
public enum APIServer {
    public static func application(
        store: ReportStore,
        address: Configuration.ListenAddress,
        logger: Logger,
        clock: @escaping @Sendable () -> Timestamp
    ) -> some ApplicationProtocol {
        let router = Router()

        router.get("/api/v1/connections") { _, _ in
            let status = store.status
            guard let report = store.latest else {
                return try json(["error": "no interval completed yet"], status: .serviceUnavailable)
            }
            return try json(ReportJSON(report, host: status.hostname, mode: status.mode))
        }
        router.get("/api/v1/intervals") { request, _ in
            let after = request.uri.queryParameters.get("after", as: UInt64.self) ?? 0
            let status = store.status
            let reports = store.reports(after: after).map { ReportJSON($0, host: status.hostname, mode: status.mode) }
            return try json(["intervals": reports])
        }
        router.get("/status") { _, _ in
            try json(
                StatusJSON(s: store.status, connectionsInLastReport: store.latest?.connections.count ?? 0, now: clock())
            )
        }
        router.get("/healthz") { _, _ in
            store.status.firstCollectionDone
                ? try json(["status": "ok"]) : try json(["status": "starting"], status: .serviceUnavailable)
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(address.host, port: Int(address.port)), serverName: "cnm-agent"),
            logger: logger
        )
    }

    static func json(_ value: any Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}

extension APIServer {
    /// Whether a start-up error is the listen address being taken (EADDRINUSE), a configuration error.
    public static func isAddressInUse(_ error: any Error) -> Bool {
        (error as? IOError)?.errnoCode == EADDRINUSE
    }
}
