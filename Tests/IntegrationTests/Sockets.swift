import Glibc

/// Plain blocking sockets for tests: the ground truth is what these calls moved.
struct TestSocket {
    let fd: Int32

    static func listener(v6: Bool) throws -> (TestSocket, UInt16) {
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        let s = TestSocket(fd: fd)
        try s.bindLoopback(v6: v6, port: 0)
        guard listen(fd, 16) == 0 else { throw TestFailure("listen: errno \(errno)") }
        return (s, try s.localPort())
    }

    static func connect(v6: Bool, port: UInt16) throws -> TestSocket {
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
        let rc = withLoopback(v6: v6, port: port) { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else { throw TestFailure("connect: errno \(errno)") }
        return TestSocket(fd: fd)
    }

    func accept() throws -> TestSocket {
        let c = Glibc.accept(fd, nil, nil)
        guard c >= 0 else { throw TestFailure("accept: errno \(errno)") }
        return TestSocket(fd: c)
    }

    func bindLoopback(v6: Bool, port: UInt16) throws {
        let rc = Self.withLoopback(v6: v6, port: port) { bind(fd, $0, $1) }
        guard rc == 0 else { throw TestFailure("bind: errno \(errno)") }
    }

    static func withLoopback(v6: Bool, port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        // Both literals parse, so this never throws.
        (try? LabSocket.withAddress(v6 ? "::1" : "127.0.0.1", port: port, body)) ?? -1
    }

    func localPort() throws -> UInt16 {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { throw TestFailure("getsockname: errno \(errno)") }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    /// Writes exactly `count` bytes.
    func send(_ count: Int) throws {
        let chunk = [UInt8](repeating: 0x5A, count: min(count, 16_384))
        var left = count
        while left > 0 {
            let n = chunk.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, min(left, chunk.count), Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw TestFailure("send: errno \(errno)") }
            left -= n
        }
    }

    /// Reads exactly `count` bytes.
    func receive(_ count: Int) throws {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        var left = count
        while left > 0 {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min(left, $0.count), 0) }
            guard n > 0 else { throw TestFailure("recv: \(n == 0 ? "EOF" : "errno \(errno)") with \(left) left") }
            left -= n
        }
    }

    /// Reads until the peer closes; returns how many bytes came.
    func receiveToEOF() throws -> Int {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        var total = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return total }
            guard n > 0 else { throw TestFailure("recv: errno \(errno)") }
            total += n
        }
    }

    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }
    func close() { _ = Glibc.close(fd) }
}
