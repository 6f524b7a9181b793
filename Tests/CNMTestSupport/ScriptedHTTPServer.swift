import Foundation
import Glibc
import Synchronization

/// A scripted HTTP/1.1 server, standing in for an endpoint that cannot run here (a Docker daemon,
/// the ECS task metadata endpoint). It reads one request per connection (the head, and a body of
/// the announced Content-Length), answers and closes it, and records every request it read. Two
/// ways to run:
/// - scripted (`init(_:replies:)`), on a unix socket in a temporary directory (as dockerd listens)
///   or on 127.0.0.1: one connection per reply, in order; after the last reply, or 10 s without a
///   connection, its thread ends (`finish`).
/// - answering (`init(answering:on:)`), on any local IPv4 address: every connection gets the
///   current reply (`answer(with:)`) until the server is released.
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
        public var body: String
        public var requestLine: String { String(head.prefix { !$0.isNewline }) }
        /// The request target, such as `/v4/abc/task`.
        public var path: String { requestLine.split(separator: " ").dropFirst().first.map(String.init) ?? "" }
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
    /// `http://127.0.0.1:<port>` (`.loopback`), else `http://localhost`.
    public let baseURL: String
    /// The TCP port, 0 on a unix socket.
    public let port: UInt16
    private let directory: String?
    private let listener: Int32
    private let finished = DispatchSemaphore(value: 0)
    private let shared = Shared()
    private let answering: Bool

    /// What the server's thread and its users share.
    private final class Shared: Sendable {
        let received = Mutex<[Request]>([])
        /// What an answering server replies now; nil for a scripted one.
        let current = Mutex<Reply?>(nil)
    }

    public init(_ listen: Listen = .unixSocket, replies: [Reply]) throws {
        switch listen {
        case .unixSocket:
            let directory = try makeTemporaryDirectory()
            self.directory = directory
            socketPath = directory + "/docker.sock"
            baseURL = "http://localhost"
            port = 0
            listener = try unixSocket(boundTo: socketPath)
        case .loopback:
            let (fd, port) = try tcpSocket(boundTo: "127.0.0.1")
            directory = nil
            socketPath = ""
            baseURL = "http://127.0.0.1:\(port)"
            self.port = port
            listener = fd
        }
        answering = false
        guard Glibc.listen(listener, 8) == 0 else {
            close(listener)
            throw SystemCallError("listen")
        }
        Thread { [self] in serve(replies) }.start()
    }

    /// Answers every connection with `reply` (until `answer(with:)` changes it) on `address`: a
    /// container reaches the host on its default gateway's address.
    public init(answering reply: Reply, on address: String = "127.0.0.1") throws {
        let (fd, port) = try tcpSocket(boundTo: address)
        guard Glibc.listen(fd, 16) == 0 else {
            close(fd)
            throw SystemCallError("listen")
        }
        listener = fd
        self.port = port
        directory = nil
        socketPath = ""
        baseURL = "http://\(address):\(port)"
        answering = true
        shared.current.withLock { $0 = reply }
        Self.answerAll(fd, shared)
    }

    deinit {
        // An answering server's thread ends when accept fails on the shut-down listener.
        if answering {
            _ = shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
        }
    }

    /// What an answering server replies from now on.
    public func answer(with reply: Reply) { shared.current.withLock { $0 = reply } }

    /// The requests read so far, in order.
    public var requests: [Request] { shared.received.withLock { $0 } }

    /// One `.script` reply per connection, on a unix socket.
    public convenience init(scripts: [@Sendable (Connection) -> Void]) throws {
        try self.init(.unixSocket, replies: scripts.map { .script($0) })
    }

    /// Waits for the server's thread to end and returns the requests it read, in order.
    public func finish() -> [Request] {
        _ = finished.wait(timeout: .now() + 15)
        if let directory { try? FileManager.default.removeItem(atPath: directory) }
        return shared.received.withLock { $0 }
    }

    /// The answering thread holds only what it needs, not the server: releasing the server shuts
    /// the listener down, and that ends the thread.
    private static func answerAll(_ listener: Int32, _ shared: Shared) {
        Thread.detachNewThread {
            while case let connection = accept(listener, nil, nil), connection >= 0 {
                var readTimeout = timeval(tv_sec: 5, tv_usec: 0)
                setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &readTimeout, socklen_t(MemoryLayout<timeval>.size))
                let request = Self.readRequest(connection)
                // Recorded before answering: once the client has its answer, the test may look.
                if let request { shared.received.withLock { $0.append(request) } }
                if let reply = shared.current.withLock({ $0 }) { Self.send(reply, request: request, connection) }
                close(connection)
            }
        }
    }

    private func serve(_ replies: [Reply]) {
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
            var readTimeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &readTimeout, socklen_t(MemoryLayout<timeval>.size))
            let request = Self.readRequest(connection)
            if let request { shared.received.withLock { $0.append(request) } }
            Self.send(reply, request: request, connection)
        }
    }

    private static func send(_ reply: Reply, request: Request?, _ connection: Int32) {
        switch reply {
        case .http(let status, let body):
            let head = "HTTP/1.1 \(status) Scripted\r\nContent-Type: application/json\r\nConnection: close\r\n"
            sendAll((head + "Content-Length: \(body.utf8.count)\r\n\r\n" + body).utf8, to: connection)
        case .raw(let bytes):
            sendAll(bytes.utf8, to: connection)
        case .closeWithoutAnswer:
            break
        case .stall(let milliseconds):
            usleep(milliseconds * 1000)
        case .script(let script):
            if request != nil { script(Connection(fd: connection)) }
        }
    }

    /// Reads the head and, when it announces one, the body (bounded by the read timeout).
    private static func readRequest(_ fd: Int32) -> Request? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var headEnd: Int?
        var bodyLength = 0
        while headEnd.map({ bytes.count < $0 + bodyLength }) ?? true {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return nil }
            bytes += buffer[0..<n]
            if headEnd == nil, let end = bytes.firstRange(of: Array("\r\n\r\n".utf8))?.upperBound {
                headEnd = end
                let lines = String(decoding: bytes[..<end], as: UTF8.self).lowercased().split(separator: "\r\n")
                if let line = lines.first(where: { $0.hasPrefix("content-length:") }) {
                    bodyLength = Int(line.dropFirst(15).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
        guard let headEnd else { return nil }
        return Request(
            head: String(decoding: bytes[..<headEnd], as: UTF8.self),
            body: String(decoding: bytes[headEnd...], as: UTF8.self)
        )
    }
}
