import Glibc

/// Plain blocking sockets for tests, on numeric IPv4 or IPv6 addresses (loopback, a lab namespace's,
/// a container's): the ground truth of a test is what these calls moved. Created inside a network
/// namespace (`withNetworkNamespace`), a socket lives there. Every blocking call has a kernel
/// timeout unless asked otherwise, so a test that waits for the wrong thing fails instead of hanging.
public enum TestSocket {
    public static func loopback(v6: Bool) -> String { v6 ? "::1" : "127.0.0.1" }

    /// A socket for `address`'s family; `timeout` bounds each blocking call (nil: no bound).
    public static func make(
        for address: String, _ type: __socket_type = SOCK_STREAM, timeout: Duration? = .seconds(10)
    ) throws -> Int32 {
        let family = address.contains(":") ? AF_INET6 : AF_INET
        let fd = try check("socket", socket(family, Int32(type.rawValue | SOCK_CLOEXEC.rawValue), 0))
        guard let timeout else { return fd }
        let (seconds, attoseconds) = timeout.components
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        for option in [SO_RCVTIMEO, SO_SNDTIMEO]
        where setsockopt(fd, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size)) != 0 {
            let error = SystemCallError("setsockopt(timeout)")
            close(fd)
            throw error
        }
        return fd
    }

    /// Binds `fd` to `address` and `port` (0: the kernel chooses), with SO_REUSEADDR.
    public static func bind(_ fd: Int32, to address: String, port: UInt16 = 0) throws {
        try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        _ = try check("bind \(address) port \(port)", withAddress(address, port: port) { Glibc.bind(fd, $0, $1) })
    }

    /// A TCP socket bound to `address` on a free port but not listening (connecting to it is
    /// refused), and that port.
    public static func bound(to address: String = "127.0.0.1") throws -> (fd: Int32, port: UInt16) {
        let fd = try make(for: address, timeout: nil)
        do {
            try bind(fd, to: address)
            return (fd, try localPort(fd))
        } catch {
            close(fd)
            throw error
        }
    }

    /// A listening TCP socket on `address` and its port. `accept` waits at most `timeout`.
    public static func listener(
        on address: String = "127.0.0.1", port: UInt16 = 0, timeout: Duration? = .seconds(10)
    ) throws -> (fd: Int32, port: UInt16) {
        let fd = try make(for: address, timeout: timeout)
        do {
            try bind(fd, to: address, port: port)
            _ = try check("listen", listen(fd, 64))
            return (fd, try localPort(fd))
        } catch {
            close(fd)
            throw error
        }
    }

    /// A TCP socket connected to `address` and `port`. The connect gives up after `timeout` at the
    /// latest (the kernel's own SYN retries may end it sooner with ETIMEDOUT).
    public static func connect(
        to address: String = "127.0.0.1", port: UInt16, timeout: Duration? = .seconds(10)
    ) throws -> Int32 {
        let fd = try make(for: address, timeout: timeout)
        do {
            try connect(fd, to: address, port: port)
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    /// Connects an existing socket (TCP or UDP).
    public static func connect(_ fd: Int32, to address: String, port: UInt16) throws {
        _ = try check(
            "connect \(address) port \(port)", withAddress(address, port: port) { Glibc.connect(fd, $0, $1) })
    }

    /// The next connection of a listener, within the listener's timeout.
    public static func accept(_ listener: Int32) throws -> Int32 {
        try check("accept", Glibc.accept(listener, nil, nil))
    }

    /// The local port, from getsockname (sockaddr_in and sockaddr_in6 both keep it at offset 2).
    public static func localPort(_ fd: Int32) throws -> UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try check(
            "getsockname",
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            })
        return withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
    }

    /// The socket's inode, as sock_diag and /proc name it.
    public static func inode(_ fd: Int32) throws -> UInt64 {
        var status = stat()
        _ = try check("fstat", fstat(fd, &status))
        return UInt64(status.st_ino)
    }

    public static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws {
        var value = value
        _ = try check("setsockopt", setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)))
    }

    /// Writes exactly `count` bytes.
    public static func send(_ fd: Int32, count: Int) throws {
        let chunk = [UInt8](repeating: 0x5A, count: 65_536)
        var left = count
        while left > 0 {
            left -= try check(
                "send with \(left) bytes left",
                chunk.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, min(left, $0.count), Int32(MSG_NOSIGNAL)) })
        }
    }

    /// Reads exactly `count` bytes; the peer's end of stream before that is an error.
    public static func receive(_ fd: Int32, count: Int) throws {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var left = count
        while left > 0 {
            let n = try check("recv with \(left) bytes left", recv(fd, &buffer, min(left, buffer.count), 0))
            guard n > 0 else { throw SystemCallError("recv: end of stream with \(left) bytes left", errno: 0) }
            left -= n
        }
    }

    /// Sends `clientBytes` from `client` to `server`, then `serverBytes` back, each read in full.
    public static func exchange(_ client: Int32, _ server: Int32, clientBytes: Int, serverBytes: Int) throws {
        try send(client, count: clientBytes)
        try receive(server, count: clientBytes)
        try send(server, count: serverBytes)
        try receive(client, count: serverBytes)
    }

    /// Reads until the peer's end of stream and returns how many bytes came before it.
    public static func receiveToEOF(_ fd: Int32) throws -> Int {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var total = 0
        while true {
            let n = try check("recv after \(total) bytes", recv(fd, &buffer, buffer.count, 0))
            if n == 0 { return total }
            total += n
        }
    }

    /// Sends exactly `count` bytes from `sender` to `receiver` on this one thread, then shuts the
    /// sender's write side and reads to end of stream. Returns the bytes received; throws if it takes
    /// longer than `timeout`. Leaves both sockets non-blocking.
    public static func transfer(_ count: Int, from sender: Int32, to receiver: Int32, timeout: Duration) throws -> Int {
        for fd in [sender, receiver] {
            _ = try check("fcntl(O_NONBLOCK)", fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
        }
        let chunk = [UInt8](repeating: 0x5A, count: 65_536)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var sent = 0
        var received = 0
        if count == 0 { _ = shutdown(sender, Int32(SHUT_WR)) }
        let deadline = ContinuousClock.now + timeout
        while true {
            guard ContinuousClock.now < deadline else {
                throw SystemCallError(
                    "transfer of \(count) bytes timed out after \(timeout): \(sent) sent, \(received) received",
                    errno: ETIMEDOUT)
            }
            var fds = [
                pollfd(fd: sender, events: sent < count ? Int16(POLLOUT) : 0, revents: 0),
                pollfd(fd: receiver, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&fds, 2, 100) >= 0 else {
                if errno == EINTR { continue }
                throw SystemCallError("poll")
            }
            if sent < count, fds[0].revents != 0 {
                let n = chunk.withUnsafeBytes {
                    Glibc.send(sender, $0.baseAddress, min(count - sent, $0.count), Int32(MSG_NOSIGNAL))
                }
                if n > 0 {
                    sent += n
                    if sent == count { _ = shutdown(sender, Int32(SHUT_WR)) }
                } else if errno != EAGAIN && errno != EINTR {
                    throw SystemCallError("send after \(sent) bytes")
                }
            }
            if fds[1].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, 0) }
                if n == 0 { return received }
                if n > 0 {
                    received += n
                } else if errno != EAGAIN && errno != EINTR {
                    throw SystemCallError("recv after \(received) bytes")
                }
            }
        }
    }

    /// The kernel's `tcp_info` for `fd`, cut to `length` bytes the way an older kernel would send it.
    public static func tcpInfoBytes(_ fd: Int32, length: Int = 512) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        var size = socklen_t(length)
        _ = try check("getsockopt(TCP_INFO)", getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &bytes, &size))
        return Array(bytes[..<Int(size)])
    }

    /// Calls `body` with the socket address of a numeric IPv4 or IPv6 literal.
    public static func withAddress<T>(
        _ address: String, port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T
    ) throws -> T {
        if address.contains(":") {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, address, &a.sin6_addr) == 1 else {
                throw SystemCallError("not an IPv6 address: '\(address)'", errno: EINVAL)
            }
            return try withUnsafePointer(to: &a) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &a.sin_addr) == 1 else {
            throw SystemCallError("not an IPv4 address: '\(address)'", errno: EINVAL)
        }
        return try withUnsafePointer(to: &a) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    private static func check<T: FixedWidthInteger>(_ call: String, _ result: T) throws -> T {
        guard result >= 0 else { throw SystemCallError(call) }
        return result
    }
}

/// An AF_UNIX stream socket bound to `path`, not yet listening: connecting to it is refused.
public func unixSocket(boundTo path: String) throws -> Int32 {
    try unixSocket(path, "bind", timeout: nil) { bind($0, $1, $2) }
}

/// An AF_UNIX stream socket connected to `path`, with 10 s send and receive timeouts.
public func unixSocket(connectedTo path: String) throws -> Int32 {
    try unixSocket(path, "connect", timeout: 10) { connect($0, $1, $2) }
}

/// A new AF_UNIX stream socket on which `call` (bind or connect) was made with `path`.
private func unixSocket(
    _ path: String, _ name: String, timeout seconds: Int?, _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SystemCallError("socket") }
    if let seconds {
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            setsockopt(fd, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size))
        }
    }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let pathBytes = Array(path.utf8)
    guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
        close(fd)
        throw SystemCallError("socket path \(path)", errno: ENAMETOOLONG)
    }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard result == 0 else {
        let error = SystemCallError("\(name) \(path)")
        close(fd)
        throw error
    }
    return fd
}

/// A new private directory under /tmp, short enough for socket paths (108 bytes at most).
public func makeTemporaryDirectory() throws -> String {
    var template = Array("/tmp/cnm-test-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw SystemCallError("mkdtemp") }
    return String(cString: made)
}

/// Writes all of `bytes`; a peer that went away ends it quietly (MSG_NOSIGNAL: no SIGPIPE).
public func sendAll(_ bytes: some Collection<UInt8>, to fd: Int32) {
    let bytes = Array(bytes)
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { return }
        sent += n
    }
}

/// A listening TCP socket, a client connected to it and the server end the listener accepted: the
/// ground truth of most accounting tests.
public struct TestConnection: Sendable {
    public let listener: Int32
    public let client: Int32
    public let server: Int32
    public let listenPort: UInt16
    public let clientPort: UInt16

    /// On `address` (loopback by default); `clientReceiveBuffer` sets the client's SO_RCVBUF first.
    public init(on address: String = "127.0.0.1", clientReceiveBuffer: Int32? = nil) throws {
        (listener, listenPort) = try TestSocket.listener(on: address)
        client = try TestSocket.make(for: address)
        if let clientReceiveBuffer {
            try TestSocket.setOption(client, SOL_SOCKET, SO_RCVBUF, clientReceiveBuffer)
        }
        try TestSocket.connect(client, to: address, port: listenPort)
        server = try TestSocket.accept(listener)
        clientPort = try TestSocket.localPort(client)
    }

    /// Sends `clientBytes` from the client and `serverBytes` from the server, each read in full by
    /// the other end.
    public func exchange(clientBytes: Int, serverBytes: Int) throws {
        try TestSocket.exchange(client, server, clientBytes: clientBytes, serverBytes: serverBytes)
    }

    public func closeAll() {
        for fd in [client, server, listener] { close(fd) }
    }
}
