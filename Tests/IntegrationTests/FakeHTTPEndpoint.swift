import Foundation
import Glibc
import Synchronization

/// A plain HTTP/1.1 server (on 127.0.0.1 unless told otherwise) standing in for an endpoint that cannot run here (ECS task
/// metadata, a broken Docker API). What it answers can be changed while it runs; every request's
/// path is recorded.
final class FakeHTTPEndpoint: @unchecked Sendable {
    struct Answer: Sendable {
        var status: Int
        var body: String
    }

    let port: UInt16
    private let listener: Int32
    private final class State: Sendable {
        let current: Mutex<(answer: Answer, paths: [String])>
        init(_ answer: Answer) { current = Mutex((answer, [])) }
    }
    private let state: State

    /// Listens on `address`: a container reaches the host on its bridge's gateway address.
    init(_ answer: Answer, address: String = "127.0.0.1") throws {
        // No accept timeout: the thread waits for requests for as long as the endpoint lives.
        let (listener, port) = try LabSocket.listener(on: address, timeout: .zero)
        self.listener = listener
        self.port = port
        state = State(answer)
        let thread = Thread { [state] in
            // Ends when the listener is shut down in deinit: accept then fails.
            while case let fd = accept(listener, nil, nil), fd >= 0 {
                var request = [UInt8](repeating: 0, count: 8192)
                let n = request.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                let line = String(decoding: request.prefix(max(n, 0)), as: UTF8.self).split(separator: "\r\n").first
                let path = line.map { $0.split(separator: " ").dropFirst().first.map(String.init) ?? "" } ?? ""
                let answer = state.current.withLock { s in
                    s.paths.append(path)
                    return s.answer
                }
                let response = Array(
                    ("HTTP/1.1 \(answer.status) X\r\nContent-Type: application/json\r\n"
                        + "Content-Length: \(answer.body.utf8.count)\r\nConnection: close\r\n\r\n\(answer.body)").utf8)
                _ = response.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(fd)
            }
        }
        thread.start()
    }

    deinit {
        _ = shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    func answer(_ answer: Answer) { state.current.withLock { $0.answer = answer } }
    var paths: [String] { state.current.withLock { $0.paths } }
}
