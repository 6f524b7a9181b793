import Foundation
import Glibc
import Synchronization

/// A scripted HTTP/1.1 server on 127.0.0.1. It takes one connection per reply, reads one request
/// from it, answers as scripted and closes it; after the last reply, or 10 s without a connection,
/// its thread ends.
final class FakeMetadataEndpoint: Sendable {
    enum Reply: Sendable {
        /// A whole response with a correct Content-Length.
        case http(status: Int, body: Data)
        /// These bytes as they are, then close.
        case raw(String)
    }

    /// `http://127.0.0.1:<port>`.
    let baseURL: String
    private let listener: Int32
    private let replies: [Reply]
    private let requestLines = Mutex<[String]>([])
    private let finished = DispatchSemaphore(value: 0)

    init(replies: [Reply]) throws {
        let (fd, port) = try tcpSocketBoundToLoopback()
        guard listen(fd, 8) == 0 else {
            close(fd)
            throw SystemCallError("listen")
        }
        listener = fd
        baseURL = "http://127.0.0.1:\(port)"
        self.replies = replies
        Thread { [self] in serve() }.start()
    }

    static func http(_ status: Int, _ body: String) -> Reply { .http(status: status, body: Data(body.utf8)) }

    /// Waits for the server's thread to end and returns the request lines it read, in order.
    func finish() -> [String] {
        _ = finished.wait(timeout: .now() + 15)
        return requestLines.withLock { $0 }
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
            if let line = Self.readRequestLine(connection) {
                requestLines.withLock { $0.append(line) }
            }
            switch reply {
            case .http(let status, let body):
                let head =
                    "HTTP/1.1 \(status) Fake\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + "Content-Length: \(body.count)\r\n\r\n"
                Self.send(Data(head.utf8) + body, connection)
            case .raw(let text):
                Self.send(Data(text.utf8), connection)
            }
            close(connection)
        }
    }

    /// Reads up to the end of a GET request's head and returns its first line.
    private static func readRequestLine(_ fd: Int32) -> String? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.firstRange(of: Array("\r\n\r\n".utf8)) == nil {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return nil }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n").first
    }

    private static func send(_ data: Data, _ fd: Int32) {
        let bytes = [UInt8](data)
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

/// A failed system call, with errno's text.
struct SystemCallError: Error, CustomStringConvertible {
    var description: String

    init(_ call: String, errno code: Int32 = errno) {
        description = "\(call): \(String(cString: strerror(code)))"
    }
}
