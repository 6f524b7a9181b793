import Glibc

/// An AF_UNIX stream socket bound to `path`, not yet listening: connecting to it is refused.
public func unixSocket(boundTo path: String) throws -> Int32 {
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

/// A TCP socket bound to a local IPv4 `address` on a free port, not listening, and that port.
public func tcpSocket(boundTo address: String) throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SystemCallError("socket") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else {
        close(fd)
        throw SystemCallError("not an IPv4 address: '\(address)'", errno: EINVAL)
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 ? getsockname(fd, $0, &length) : -1
        }
    }
    guard bound == 0 else {
        let code = errno
        close(fd)
        throw SystemCallError("bind \(address):0", errno: code)
    }
    return (fd, UInt16(bigEndian: sa.sin_port))
}

/// A TCP socket bound to 127.0.0.1 on a free port, not listening, and that port.
public func tcpSocketBoundToLoopback() throws -> (fd: Int32, port: UInt16) { try tcpSocket(boundTo: "127.0.0.1") }

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
