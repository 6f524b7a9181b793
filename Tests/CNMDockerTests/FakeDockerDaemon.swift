import Foundation
import Glibc
import Synchronization

/// A scripted HTTP/1.1 server on a unix socket in a temporary directory. It takes one connection
/// per reply, reads one request from it, answers as scripted and closes it; after the last reply,
/// or 10 s without a connection, its thread ends.
final class FakeDockerDaemon: Sendable {
    enum Reply: Sendable {
        /// A whole response with a correct Content-Length.
        case http(status: Int, body: String)
        /// These bytes as they are, then close.
        case raw(String)
        case closeWithoutAnswer
        /// Keep the connection open without answering for this long, then close.
        case stall(milliseconds: UInt32)
    }

    struct Request: Sendable {
        /// Request line and headers.
        var head: String
        var body: String
        var requestLine: String { String(head.prefix { !$0.isNewline }) }
    }

    let socketPath: String
    private let directory: String
    private let listener: Int32
    private let replies: [Reply]
    private let received = Mutex<[Request]>([])
    private let finished = DispatchSemaphore(value: 0)

    init(replies: [Reply]) throws {
        directory = try makeTemporaryDirectory()
        socketPath = directory + "/docker.sock"
        listener = try unixSocket(boundTo: socketPath)
        guard listen(listener, 8) == 0 else { throw SystemCallError("listen") }
        self.replies = replies
        Thread { [self] in serve() }.start()
    }

    /// Waits for the server's thread to end and returns the requests it read, in order.
    func finish() -> [Request] {
        _ = finished.wait(timeout: .now() + 15)
        try? FileManager.default.removeItem(atPath: directory)
        return received.withLock { $0 }
    }

    private func serve() {
        defer {
            close(listener)
            finished.signal()
        }
        for reply in replies {
            var waiting = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, 10_000) == 1 else { return }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            var readTimeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &readTimeout, socklen_t(MemoryLayout<timeval>.size))
            if let request = Self.readRequest(connection) {
                received.withLock { $0.append(request) }
            }
            switch reply {
            case .http(let status, let body):
                let head = "HTTP/1.1 \(status) Fake\r\nContent-Type: application/json\r\nConnection: close\r\n"
                Self.send(head + "Content-Length: \(body.utf8.count)\r\n\r\n" + body, connection)
            case .raw(let bytes):
                Self.send(bytes, connection)
            case .closeWithoutAnswer:
                break
            case .stall(let milliseconds):
                usleep(milliseconds * 1000)
            }
            close(connection)
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

    private static func send(_ text: String, _ fd: Int32) {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            // MSG_NOSIGNAL: a client that already gave up must not kill the test process with SIGPIPE.
            let n = bytes[sent...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { return }
            sent += n
        }
    }
}

/// An AF_UNIX stream socket bound to `path`, not yet listening: connecting to it is refused.
func unixSocket(boundTo path: String) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SystemCallError("socket") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let pathBytes = Array(path.utf8)
    guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
        close(fd)
        throw SystemCallError("socket path \(path)", errno: ENAMETOOLONG)
    }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard bound == 0 else {
        let code = errno
        close(fd)
        throw SystemCallError("bind \(path)", errno: code)
    }
    return fd
}

/// A TCP socket bound to 127.0.0.1 on a free port, not listening, and that port.
func tcpSocketBoundToLoopback() throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SystemCallError("socket") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1
        }
    }
    guard bound == 0 else {
        let code = errno
        close(fd)
        throw SystemCallError("bind 127.0.0.1:0", errno: code)
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// A new private directory under /tmp, short enough for socket paths (108 bytes at most).
func makeTemporaryDirectory() throws -> String {
    var template = Array("/tmp/cnm-docker-test-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw SystemCallError("mkdtemp") }
    return String(cString: made)
}

/// A failed system call, with errno's text.
struct SystemCallError: Error, CustomStringConvertible {
    var description: String

    init(_ call: String, errno code: Int32 = errno) {
        description = "\(call): \(String(cString: strerror(code)))"
    }
}
