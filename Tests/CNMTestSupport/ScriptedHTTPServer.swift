import Foundation
import Glibc
import Synchronization

/// A scripted HTTP/1.1 server, standing in for an endpoint that cannot run here (a Docker daemon,
/// the ECS task metadata endpoint, Datadog's intake). It records every request it read. Two ways
/// to run:
/// - scripted (`init(_:replies:)`), on a unix socket in a temporary directory (as dockerd listens)
///   or on 127.0.0.1: one connection per reply, in order, each closed after its reply; after the
///   last reply, or 10 s without a connection, its thread ends (`finish`).
/// - responding (`init(on:respond:)`, or `init(answering:on:)` for one reply to everything), on any
///   local IPv4 address: every connection on its own thread, request after request (keep-alive,
///   `Expect: 100-continue`), each answered by `respond`, until the client closes or the server is
///   released. It can stop listening (connecting is then refused) and listen again on its port.
public final class ScriptedHTTPServer: Sendable {
    public enum Listen: Sendable {
        case unixSocket
        case loopback
    }

    public enum Reply: Sendable {
        /// A whole response with a correct Content-Length.
        case http(status: Int, body: String)
        /// These bytes as they are, then close.
        case raw(String)
        case closeWithoutAnswer
        /// Keep the connection open without answering for this long, then close.
        case stall(milliseconds: UInt32)
        /// Read nothing more and answer nothing until the client gives up and closes.
        case holdUntilClientCloses
        /// Hands the connection to a script (chunked streams, waiting for the client to close).
        case script(@Sendable (Connection) -> Void)

        public static func http(_ status: Int, _ body: String) -> Reply { .http(status: status, body: body) }
        public static func http(_ status: Int, _ body: Data) -> Reply {
            .http(status: status, body: String(decoding: body, as: UTF8.self))
        }
    }

    public struct Request: Sendable {
        /// Request line and headers.
        public var head: String
        public var bodyBytes: [UInt8]
        public var body: String { String(decoding: bodyBytes, as: UTF8.self) }
        public var requestLine: String { String(head.prefix { !$0.isNewline }) }
        /// The request target, such as `/v4/abc/task`.
        public var path: String { requestLine.split(separator: " ").dropFirst().first.map(String.init) ?? "" }

        /// The value of the first header called `name` (any case), trimmed.
        public func header(_ name: String) -> String? {
            let wanted = name.lowercased()
            for line in head.split(separator: "\r\n").dropFirst() {
                guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == wanted else { continue }
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            return nil
        }
    }

    /// A connection handed to a `.script` reply.
    public final class Connection {
        public let fd: Int32

        init(fd: Int32) { self.fd = fd }

        /// A chunked 200 head, as dockerd streams events.
        public func head() {
            send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        }

        public func chunk(_ text: String) { send(String(text.utf8.count, radix: 16) + "\r\n" + text + "\r\n") }

        /// The last chunk: the response is complete.
        public func end() { send("0\r\n\r\n") }

        public func send(_ text: String) { sendAll(text.utf8, to: fd) }

        /// Whether the client closed its end within `timeout`.
        public func waitForClientToClose(timeout: Duration) -> Bool {
            let deadline = ContinuousClock.now + timeout
            var buffer = [UInt8](repeating: 0, count: 512)
            while ContinuousClock.now < deadline {
                var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&waiting, 1, 100) >= 0 else { return false }
                if waiting.revents != 0 && recv(fd, &buffer, buffer.count, 0) <= 0 { return true }
            }
            return false
        }
    }

    /// The unix socket's path (`.unixSocket`), else empty.
    public let socketPath: String
    /// `http://<address>:<port>` on TCP, else `http://localhost`.
    public let baseURL: String
    /// The TCP port, 0 on a unix socket.
    public let port: UInt16
    private let address: String
    private let directory: String?
    private let finished = DispatchSemaphore(value: 0)
    private let shared: Shared

    /// What the server's threads and its users share; the threads hold this, never the server, so
    /// that releasing the server shuts its listener down and that ends them.
    private final class Shared: Sendable {
        let received = Mutex<[Request]>([])
        /// The listening socket, -1 while not listening.
        let listener = Mutex<Int32>(-1)
        /// Set when the server is released: held connections end too.
        let released = Atomic<Bool>(false)
        /// Whether connections are served by `respond` (or `current`) rather than a script.
        let responding: Bool
        /// What a responding server replies; when nil, `current`.
        let respond: (@Sendable (Request) -> Reply)?
        /// The reply of `init(answering:on:)`, which `answer(with:)` changes.
        let current = Mutex<Reply>(.closeWithoutAnswer)

        init(respond: (@Sendable (Request) -> Reply)?, responding: Bool) {
            self.respond = respond
            self.responding = responding
        }

        func stopListening() {
            let fd = listener.withLock { fd in
                defer { fd = -1 }
                return fd
            }
            guard fd >= 0 else { return }
            _ = shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    public init(_ listen: Listen = .unixSocket, replies: [Reply]) throws {
        let listener: Int32
        switch listen {
        case .unixSocket:
            let directory = try makeTemporaryDirectory()
            self.directory = directory
            socketPath = directory + "/docker.sock"
            baseURL = "http://localhost"
            port = 0
            address = ""
            listener = try unixSocket(boundTo: socketPath)
        case .loopback:
            let (fd, port) = try TestSocket.listener(on: "127.0.0.1", timeout: nil)
            directory = nil
            socketPath = ""
            address = "127.0.0.1"
            baseURL = "http://127.0.0.1:\(port)"
            self.port = port
            listener = fd
        }
        shared = Shared(respond: nil, responding: false)
        if case .unixSocket = listen, Glibc.listen(listener, 8) != 0 {
            close(listener)
            throw SystemCallError("listen")
        }
        Thread { [self] in serve(replies, on: listener) }.start()
    }

    /// Answers every request with what `respond` returns, on `address` (a container reaches the
    /// host on its default gateway's address). `respond` runs before the reply is sent, so what it
    /// records is there once the client has its answer.
    public convenience init(on address: String = "127.0.0.1", respond: @escaping @Sendable (Request) -> Reply) throws {
        try self.init(responding: respond, first: .closeWithoutAnswer, on: address)
    }

    /// Answers every request with `reply`, until `answer(with:)` changes it.
    public convenience init(answering reply: Reply, on address: String = "127.0.0.1") throws {
        try self.init(responding: nil, first: reply, on: address)
    }

    private init(responding respond: (@Sendable (Request) -> Reply)?, first: Reply, on address: String) throws {
        let (fd, port) = try TestSocket.listener(on: address, timeout: nil)
        self.address = address
        self.port = port
        directory = nil
        socketPath = ""
        baseURL = "http://\(address):\(port)"
        shared = Shared(respond: respond, responding: true)
        shared.current.withLock { $0 = first }
        serve(fd)
    }

    deinit {
        if shared.responding {
            shared.released.store(true, ordering: .relaxed)
            shared.stopListening()
        }
    }

    /// What an `init(answering:on:)` server replies from now on.
    public func answer(with reply: Reply) { shared.current.withLock { $0 = reply } }

    /// The requests read so far, in order.
    public var requests: [Request] { shared.received.withLock { $0 } }

    /// One `.script` reply per connection, on a unix socket.
    public convenience init(scripts: [@Sendable (Connection) -> Void]) throws {
        try self.init(.unixSocket, replies: scripts.map { .script($0) })
    }

    /// Waits for a scripted server's thread to end and returns the requests it read, in order.
    public func finish() -> [Request] {
        _ = finished.wait(timeout: .now() + 15)
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
        return shared.received.withLock { $0 }
    }

    /// A responding server stops listening: connecting is refused; open connections stay.
    public func stopListening() { shared.stopListening() }

    /// A responding server listens again on the same port.
    public func listenAgain() throws {
        serve(try TestSocket.listener(on: address, port: port, timeout: nil).fd)
    }

    /// Accepts on `fd`, a listening socket, each connection on its own thread.
    private func serve(_ fd: Int32) {
        shared.listener.withLock { $0 = fd }
        let shared = self.shared
        Thread.detachNewThread {
            // Ends when the listener is shut down: accept then fails.
            while case let connection = accept(fd, nil, nil), connection >= 0 {
                Thread.detachNewThread { Self.respond(on: connection, shared) }
            }
        }
    }

    /// Serves one connection of a responding server, request after request.
    private static func respond(on connection: Int32, _ shared: Shared) {
        defer { close(connection) }
        var reader = RequestReader(fd: connection)
        while !shared.released.load(ordering: .relaxed), let request = reader.next() {
            // Recorded before answering: once the client has its answer, the test may look.
            shared.received.withLock { $0.append(request) }
            let answer = shared.respond.map { $0(request) } ?? shared.current.withLock { $0 }
            switch answer {
            case .http(let status, let body):
                sendAll(response(status, body, keepAlive: true), to: connection)
            case .holdUntilClientCloses:
                reader.waitForClose { shared.released.load(ordering: .relaxed) }
                return
            default:
                send(answer, request: request, connection)
                return
            }
        }
    }

    private func serve(_ replies: [Reply], on listener: Int32) {
        defer {
            close(listener)
            finished.signal()
        }
        for reply in replies {
            var waiting = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, 10_000) == 1 else { return }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            defer { close(connection) }
            var reader = RequestReader(fd: connection)
            let request = reader.next()
            if let request { shared.received.withLock { $0.append(request) } }
            Self.send(reply, request: request, connection)
        }
    }

    private static func response(_ status: Int, _ body: String, keepAlive: Bool) -> [UInt8] {
        var head = "HTTP/1.1 \(status) Scripted\r\nContent-Type: application/json\r\n"
        if !keepAlive { head += "Connection: close\r\n" }
        return Array((head + "Content-Length: \(body.utf8.count)\r\n\r\n" + body).utf8)
    }

    private static func send(_ reply: Reply, request: Request?, _ connection: Int32) {
        switch reply {
        case .http(let status, let body):
            sendAll(response(status, body, keepAlive: false), to: connection)
        case .raw(let bytes):
            sendAll(bytes.utf8, to: connection)
        case .closeWithoutAnswer:
            break
        case .stall(let milliseconds):
            usleep(milliseconds * 1000)
        case .holdUntilClientCloses:
            _ = Connection(fd: connection).waitForClientToClose(timeout: .seconds(60))
        case .script(let script):
            if request != nil { script(Connection(fd: connection)) }
        }
    }
}

/// Reads requests one after another from a connection: the head, then a body of the announced
/// Content-Length; answers `Expect: 100-continue` before the body. Each read waits at most 5 s.
struct RequestReader {
    let fd: Int32
    private var buffered: [UInt8] = []

    init(fd: Int32) {
        self.fd = fd
        var readTimeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &readTimeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next whole request, or nil when the connection closes (or stays silent) first.
    mutating func next() -> ScriptedHTTPServer.Request? {
        var headEnd: Int?
        var bodyLength = 0
        var continued = false
        while true {
            if headEnd == nil, let end = buffered.firstRange(of: Array("\r\n\r\n".utf8))?.upperBound {
                headEnd = end
                let head = ScriptedHTTPServer.Request(
                    head: String(decoding: buffered[..<end], as: UTF8.self), bodyBytes: [])
                bodyLength = max(0, Int(head.header("content-length") ?? "0") ?? 0)
                continued = head.header("expect")?.lowercased() != "100-continue"
            }
            if let end = headEnd {
                if buffered.count >= end + bodyLength {
                    let request = ScriptedHTTPServer.Request(
                        head: String(decoding: buffered[..<end], as: UTF8.self),
                        bodyBytes: Array(buffered[end..<end + bodyLength]))
                    buffered.removeFirst(end + bodyLength)
                    return request
                }
                if !continued {
                    sendAll("HTTP/1.1 100 Continue\r\n\r\n".utf8, to: fd)
                    continued = true
                }
            }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { return nil }
            buffered += chunk[..<n]
        }
    }

    /// Discards whatever arrives until the client closes its end or `stop()` says so.
    func waitForClose(until stop: () -> Bool) {
        var sink = [UInt8](repeating: 0, count: 4096)
        while !stop() {
            var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, 100) >= 0 else { return }
            if waiting.revents != 0 && recv(fd, &sink, sink.count, 0) <= 0 { return }
        }
    }
}
