import CNMIntake
import CNMIntakeProto
import Foundation
import Glibc
import Synchronization

/// A real HTTP/1.1 server on 127.0.0.1 standing in for Datadog's process intake. It reads whole
/// requests (head and Content-Length body), decodes every body as the intake would (16-byte header,
/// zstd, protobuf) and answers as its current mode says. Modes can change while it runs, and it can
/// close its port (connections are then refused) and open it again.
final class FakeIntake: @unchecked Sendable {
    enum Mode: Sendable, Equatable {
        case status(Int)
        /// Reads the request and never answers, until the client gives up.
        case hang
    }

    struct Request: Sendable {
        var headers: [String: String]
        var body: [UInt8]
        /// What it was answered; nil when it was left hanging.
        var answered: Int?
        var decoded: Datadog_ProcessAgent_CollectorConnections?
        var decodeError: String?

        func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    let port: UInt16
    var baseURL: String { "http://127.0.0.1:\(port)" }
    private struct State {
        var mode: Mode
        var requests: [Request] = []
        var listener: Int32 = -1
    }
    private let state: Mutex<State>

    init(_ mode: Mode) throws {
        let (fd, port) = try LabSocket.listener(on: "127.0.0.1", timeout: .zero)
        self.port = port
        state = Mutex(State(mode: mode, listener: fd))
        startAccepting(fd)
    }

    deinit { closePort() }

    func set(_ mode: Mode) { state.withLock { $0.mode = mode } }

    /// Every request so far, in arrival order.
    var requests: [Request] { state.withLock { $0.requests } }
    /// The requests answered 2xx: what the intake took.
    var accepted: [Request] { requests.filter { ($0.answered ?? 0) / 100 == 2 } }

    /// Stops listening: connecting now fails with ECONNREFUSED.
    func closePort() {
        let fd = state.withLock { s in
            defer { s.listener = -1 }
            return s.listener
        }
        guard fd >= 0 else { return }
        _ = shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    /// Listens again on the same port.
    func reopenPort() throws {
        let (fd, _) = try LabSocket.listener(on: "127.0.0.1", port: port, timeout: .zero)
        state.withLock { $0.listener = fd }
        startAccepting(fd)
    }

    private func startAccepting(_ listener: Int32) {
        Thread { [self] in
            // Ends when the listener is shut down: accept then fails.
            while case let fd = accept(listener, nil, nil), fd >= 0 {
                Thread { [self] in serve(fd) }.start()
            }
        }.start()
    }

    /// Serves requests on one connection until the client closes it.
    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var buffered: [UInt8] = []
        while let (headers, body) = Self.readRequest(fd, buffered: &buffered) {
            let mode = state.withLock { $0.mode }
            var request = Request(headers: headers, body: body)
            do {
                request.decoded = try IntakeMessage.decode(body).message
            } catch {
                request.decodeError = "\(error)"
            }
            guard case .status(let status) = mode else {
                state.withLock { $0.requests.append(request) }
                // Hold the connection without a word until the client gives up and closes it.
                var sink = [UInt8](repeating: 0, count: 4096)
                while sink.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
                return
            }
            request.answered = status
            // Recorded before answering: once the client has its answer, the test may look.
            state.withLock { $0.requests.append(request) }
            let reply = "{\"status\":\(status)}"
            let response = Array(
                ("HTTP/1.1 \(status) X\r\nContent-Type: application/json\r\nContent-Length: \(reply.utf8.count)\r\n\r\n"
                    + reply).utf8)
            guard response.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) > 0 else {
                return
            }
        }
    }

    /// One whole request from the connection, or nil when it closes first.
    private static func readRequest(_ fd: Int32, buffered: inout [UInt8]) -> ([String: String], [UInt8])? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while true {
            if headEnd == nil, let range = buffered.firstRange(of: separator) { headEnd = range.upperBound }
            if let end = headEnd {
                let head = String(decoding: buffered[..<end], as: UTF8.self)
                var headers: [String: String] = [:]
                for line in head.split(separator: "\r\n").dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...]
                        .trimmingCharacters(in: .whitespaces)
                }
                let length = Int(headers["content-length"] ?? "0") ?? 0
                if headers["expect"]?.lowercased() == "100-continue" && buffered.count == end {
                    let go = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                    _ = go.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                }
                if buffered.count >= end + length {
                    let body = Array(buffered[end..<end + length])
                    buffered.removeFirst(end + length)
                    return (headers, body)
                }
            }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return nil }
            buffered.append(contentsOf: chunk[..<n])
        }
    }
}
