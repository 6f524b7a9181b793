import CNMIntake
import CNMIntakeProto
import CNMTestSupport
import Synchronization

/// Datadog's process intake, standing in on 127.0.0.1: a scripted HTTP server that decodes every
/// body as the intake would (16-byte header, zstd, protobuf) and answers as its current mode says.
/// Modes can change while it runs, and it can close its port (connections are then refused) and
/// open it again.
final class FakeIntake: Sendable {
    enum Mode: Sendable, Equatable {
        case status(Int)
        /// Reads the request and never answers, until the client gives up.
        case hang
    }

    struct Request: Sendable {
        var http: ScriptedHTTPServer.Request
        var body: [UInt8] { http.bodyBytes }
        /// What it was answered; nil when it was left hanging.
        var answered: Int?
        var decoded: Datadog_ProcessAgent_CollectorConnections?
        var decodeError: String?

        func header(_ name: String) -> String? { http.header(name) }
    }

    private final class State: Sendable {
        let mode: Mutex<Mode>
        let requests = Mutex<[Request]>([])
        init(_ mode: Mode) { self.mode = Mutex(mode) }
    }
    private let state: State
    private let server: ScriptedHTTPServer

    var port: UInt16 { server.port }
    var baseURL: String { server.baseURL }

    init(_ mode: Mode) throws {
        let state = State(mode)
        self.state = state
        server = try ScriptedHTTPServer { http in
            var request = Request(http: http)
            do {
                request.decoded = try IntakeMessage.decode(http.bodyBytes).message
            } catch {
                request.decodeError = "\(error)"
            }
            let mode = state.mode.withLock { $0 }
            if case .status(let status) = mode { request.answered = status }
            state.requests.withLock { $0.append(request) }
            switch mode {
            case .status(let status): return .http(status, "{\"status\":\(status)}")
            case .hang: return .holdUntilClientCloses
            }
        }
    }

    func set(_ mode: Mode) { state.mode.withLock { $0 = mode } }

    /// Every request so far, in arrival order.
    var requests: [Request] { state.requests.withLock { $0 } }
    /// The requests answered 2xx: what the intake took.
    var accepted: [Request] { requests.filter { ($0.answered ?? 0) / 100 == 2 } }

    /// Stops listening: connecting now fails with ECONNREFUSED.
    func closePort() { server.stopListening() }

    /// Listens again on the same port.
    func reopenPort() throws { try server.listenAgain() }
}
