import CNMModel
import CNMReport
import CNMTestSupport
import Foundation
import Glibc
import Hummingbird
import Logging
import Synchronization
import Testing

@testable import CNMServer

/// Who the API answers: the bearer token, the concurrency cap and the unix-socket listener. Each
/// test runs the real server on a unix socket and speaks HTTP/1.1 to it.
@Suite(.timeLimit(.minutes(1)))
struct APIAccessTests {
    static let token = Configuration.APIToken("s3cret-token-0123456789")!

    static func store() -> StatusStore {
        StatusStore(
            status: AgentStatus(
                version: "0", hostname: "h", startedAt: Timestamp(nanoseconds: 0), intervalSeconds: 30, mode: .ebpf,
                modeReason: "test"))
    }

    /// Runs `router` on a new unix socket for `body`.
    static func serving(
        _ router: Router<BasicRequestContext>, _ body: (String) async throws -> Void
    ) async throws {
        let path = try makeTemporaryDirectory() + "/api.sock"
        let app = Application(
            router: router, configuration: .init(address: .unixDomainSocket(path: path)),
            logger: Logger(label: "test"))
        let server = Task { try await app.runService() }
        defer { server.cancel() }
        _ = try await waitFor("the server on \(path)", timeout: .seconds(20), every: .milliseconds(20)) {
            try? await get("/healthz", on: path)
        }
        try await body(path)
    }

    static func api(_ store: StatusStore, token: Configuration.APIToken?) -> Router<BasicRequestContext> {
        APIServer.router(
            store: store, intervals: IntervalHistory(status: store),
            access: .init(address: .init(host: "127.0.0.1", port: 1), token: token),
            clock: { Timestamp(nanoseconds: 0) })
    }

    @Test func withATokenEveryPathButHealthzNeedsIt() async throws {
        let store = Self.store()
        try await Self.serving(Self.api(store, token: Self.token)) { path in
            let before = store.status.problems["api_unauthorized"]?.count ?? 0
            for target in ["/status", "/api/v1/connections", "/api/v1/intervals", "/nowhere"] {
                let reply = try await Self.get(target, on: path)
                #expect(reply.status == 401, "\(target)")
                #expect(reply.head.contains("\r\nwww-authenticate: Bearer realm=\"cnm-agent\"\r\n"), "\(reply.head)")
            }
            for wrong in [
                "Bearer s3cret-token-012345678", "Bearer s3cret-token-01234567890", "Basic czNjcmV0", "Bearer",
            ] {
                #expect(try await Self.get("/status", on: path, authorization: wrong).status == 401, "\(wrong)")
            }
            for right in ["Bearer s3cret-token-0123456789", "bearer s3cret-token-0123456789"] {
                #expect(try await Self.get("/status", on: path, authorization: right).status == 200)
            }
            // The health check answers without it: 503 "starting", since no collection has run.
            #expect(try await Self.get("/healthz", on: path).status == 503)
            #expect(store.status.problems["api_unauthorized"]?.count == before + 8)
        }
    }

    @Test func withoutATokenTheAPIAnswersEveryone() async throws {
        try await Self.serving(Self.api(Self.store(), token: nil)) { path in
            let reply = try await Self.get("/status", on: path)
            #expect(reply.status == 200)
            #expect(reply.body.contains("\"hostname\":\"h\""))
        }
    }

    /// `/status` says what the process holds, read at the request.
    @Test func statusCarriesTheProcessMemory() async throws {
        let store = Self.store()
        let router = APIServer.router(
            store: store, intervals: IntervalHistory(status: store),
            access: .init(address: .init(host: "127.0.0.1", port: 1)),
            memory: { MemoryUsage(residentBytes: 3 << 20, heapInUseBytes: 2 << 20, heapFreeBytes: 1 << 20) },
            clock: { Timestamp(nanoseconds: 0) })
        try await Self.serving(router) { path in
            let reply = try await Self.get("/status", on: path)
            #expect(reply.status == 200)
            for field in ["\"rss_bytes\":3145728", "\"heap_in_use_bytes\":2097152", "\"heap_free_bytes\":1048576"] {
                #expect(reply.body.contains(field), "\(field) not in \(reply.body)")
            }
        }
    }

    /// With a memory limit, `/status` says what it is, where it came from and what the agent keeps under;
    /// without one, the three are null.
    @Test(arguments: [true, false])
    func statusCarriesTheMemoryLimit(limited: Bool) async throws {
        let store = Self.store()
        let router = APIServer.router(
            store: store, intervals: IntervalHistory(status: store),
            access: .init(address: .init(host: "127.0.0.1", port: 1)),
            memory: { MemoryUsage(residentBytes: 3 << 20, heapInUseBytes: 2 << 20, heapFreeBytes: 1 << 20) },
            memoryBudget: MemoryBudget(
                limit: limited ? MemoryLimit(bytes: 100 << 20, source: "DD_CNM_MEMORY_LIMIT") : nil),
            clock: { Timestamp(nanoseconds: 0) })
        try await Self.serving(router) { path in
            let reply = try await Self.get("/status", on: path)
            let fields =
                limited
                ? [
                    "\"limit_bytes\":104857600", "\"limit_source\":\"DD_CNM_MEMORY_LIMIT\"",
                    "\"budget_bytes\":83886080",
                ]
                : ["\"limit_bytes\":null", "\"limit_source\":null", "\"budget_bytes\":null"]
            for field in fields {
                #expect(reply.body.contains(field), "\(field) not in \(reply.body)")
            }
        }
    }

    /// Each interval's bytes, written once at publication, are what every reader gets.
    @Test func intervalsAreServedAsTheyWereEncoded() async throws {
        let store = Self.store()
        let intervals = IntervalHistory(status: store)
        let router = APIServer.router(
            store: store, intervals: intervals, access: .init(address: .init(host: "127.0.0.1", port: 1)),
            clock: { Timestamp(nanoseconds: 0) })
        try await Self.serving(router) { path in
            #expect(try await Self.get("/api/v1/connections", on: path).status == 503)
            let empty = try await Self.get("/api/v1/intervals", on: path)
            #expect(empty.status == 200 && empty.body == #"{"intervals":[]}"#, "\(empty.body)")
            for sequence in 1...3 as ClosedRange<UInt64> {
                intervals.receive(IntervalJSONTests.report(sequence, connections: Int(sequence) * 10))
            }
            let latest = try await Self.get("/api/v1/connections", on: path)
            #expect(latest.status == 200 && latest.head.contains("\r\ncontent-type: application/json\r\n"))
            #expect(latest.body == String(buffer: intervals.json(try #require(intervals.latest))))
            let all = try await Self.get("/api/v1/intervals?after=1", on: path)
            let object = try JSONSerialization.jsonObject(with: Data(all.body.utf8)) as? [String: [[String: Any]]]
            let read = try #require(object?["intervals"])
            #expect(read.map { ($0["sequence"] as? NSNumber)?.intValue } == [2, 3])
            #expect(read.map { ($0["connections"] as? [Any])?.count } == [20, 30])
            let status = try await Self.get("/status", on: path)
            #expect(status.body.contains(#""connections_in_last_report":30"#), "\(status.body)")
        }
    }

    @Test func theTokenComparisonLooksAtEveryByte() {
        let token = Self.token
        #expect(token.matches(Array("s3cret-token-0123456789".utf8)))
        #expect(!token.matches(Array("s3cret-token-0123456788".utf8)))
        #expect(!token.matches(Array("x3cret-token-0123456789".utf8)))
        #expect(!token.matches(Array("s3cret-token-0123456789x".utf8)))
        #expect(!token.matches([UInt8]()))
        #expect(Configuration.APIToken("short") == nil)
        #expect(Configuration.APIToken("has a space in it, so no") == nil)
        #expect("\(token)" == "(23 bytes, hidden)")
    }

    /// Requests beyond the cap are answered 503 at once instead of queueing; `/healthz` still answers.
    @Test func requestsBeyondTheCapAreTurnedAway() async throws {
        let store = Self.store()
        let gate = Gate()
        let router = Router()
        router.add(middleware: ConcurrencyLimitMiddleware(limit: 2, store: store))
        router.get("/slow") { _, _ in
            await gate.wait()
            return "done"
        }
        router.get("/healthz") { _, _ in "ok" }
        try await Self.serving(router) { path in
            // Blocking clients on threads of their own: the handlers need the concurrency pool.
            let held = Mutex<[Int]>([])
            let finished = DispatchGroup()
            for _ in 0..<2 {
                finished.enter()
                Thread.detachNewThread {
                    defer { finished.leave() }
                    let status = (try? Self.blockingGet("/slow", on: path, authorization: nil).status) ?? -1
                    held.withLock { $0.append(status) }
                }
            }
            try await waitFor("two requests in flight", timeout: .seconds(20), every: .milliseconds(5)) {
                gate.waiting >= 2 ? () : nil
            }
            let turnedAway = try await Self.get("/slow", on: path)
            #expect(turnedAway.status == 503)
            #expect(turnedAway.head.contains("\r\nretry-after: 1\r\n"), "\(turnedAway.head)")
            #expect(try await Self.get("/healthz", on: path).status == 200)
            gate.open()
            try await waitFor("the held requests", timeout: .seconds(20), every: .milliseconds(5)) {
                held.withLock { $0.count } == 2 ? () : nil
            }
            #expect(held.withLock { $0 } == [200, 200])
            #expect(try await Self.get("/slow", on: path).status == 200)
        }
        #expect(store.status.problems["api_busy"]?.count == 1)
    }

    /// The agent's own application on `DD_CNM_HTTP_ADDR=unix:///path`.
    @Test func theAPIListensOnAUnixSocket() async throws {
        let path = try makeTemporaryDirectory() + "/api.sock"
        let store = Self.store()
        let app = APIServer.application(
            store: store, intervals: IntervalHistory(status: store),
            access: .init(address: .init(host: "127.0.0.1", port: 1), socketPath: path),
            logger: Logger(label: "test"), clock: { Timestamp(nanoseconds: 0) })
        let server = Task { try await app.runService() }
        defer { server.cancel() }
        let reply = try await waitFor("an answer on \(path)", timeout: .seconds(20), every: .milliseconds(20)) {
            try? await Self.get("/status", on: path)
        }
        #expect(reply.status == 200)
        #expect(reply.body.contains("\"hostname\":\"h\""))
    }

    struct Reply {
        var status: Int
        /// Status line and headers, header names in lower case.
        var head: String
        var body: String
    }

    /// One HTTP/1.1 GET over the unix socket at `path`, on a thread of its own: blocking calls must
    /// stay off the concurrency pool the server's handlers run on.
    static func get(_ target: String, on path: String, authorization: String? = nil) async throws -> Reply {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try blockingGet(target, on: path, authorization: authorization) })
            }
        }
    }

    static func blockingGet(_ target: String, on path: String, authorization: String?) throws -> Reply {
        let fd = try unixSocket(connectedTo: path)
        defer { close(fd) }
        var request = "GET \(target) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if let authorization { request += "Authorization: \(authorization)\r\n" }
        sendAll((request + "\r\n").utf8, to: fd)
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while case let n = recv(fd, &buffer, buffer.count, 0), n > 0 { bytes += buffer[..<n] }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n"), let code = Int(text.split(separator: " ").dropFirst().first ?? "")
        else { throw TestFailure("not an HTTP response: \(text)") }
        let head = text[..<split.lowerBound].split(separator: "\r\n", omittingEmptySubsequences: false).enumerated().map
        {
            guard $0.offset > 0, let colon = $0.element.firstIndex(of: ":") else { return String($0.element) }
            return $0.element[..<colon].lowercased() + $0.element[colon...]
        }
        return Reply(
            status: code, head: head.joined(separator: "\r\n") + "\r\n", body: String(text[split.upperBound...]))
    }
}

/// Holds requests until opened.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var waiting: Int { state.withLock { $0.waiters.count } }

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { s in
                if s.open { return true }
                s.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { s in
            s.open = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
