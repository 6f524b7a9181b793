import CNMModel
import CNMNetlink
import CNMSystem
import CNMTestSupport
import Glibc
import Testing

@discardableResult
func check<T: FixedWidthInteger>(_ call: String, _ result: T) throws -> T {
    if result == -1 { throw SystemCallError(call, errno: errno) }
    return result
}

// MARK: - Files and the environment

/// `../shared/fixtures` beside the repository root, three levels up from this file.
func fixturePath(_ relative: String, file: String = #filePath) -> String {
    var root = file.split(separator: "/", omittingEmptySubsequences: false)
    root.removeLast(3)
    return root.joined(separator: "/") + "/../shared/fixtures/" + relative
}

/// The whole file, or nil if it cannot be opened.
func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return bytes
}

/// The output of a shell command, or nil if it failed.
func runShell(_ command: String) -> [UInt8]? {
    guard let pipe = popen(command, "r") else { return nil }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = fread(&chunk, 1, chunk.count, pipe)
        if count <= 0 { break }
        bytes += chunk[..<count]
    }
    return pclose(pipe) == 0 ? bytes : nil
}

enum Capability: Int {
    case sysAdmin = 21

    /// Whether the process holds it in its effective set (`CapEff` in /proc/self/status).
    var isHeld: Bool {
        guard let status = readFile("/proc/self/status").map({ String(decoding: $0, as: UTF8.self) }),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
            let mask = UInt64(line.dropFirst("CapEff:".count).trimmingPrefix(while: \.isWhitespace), radix: 16)
        else { return false }
        return mask >> UInt64(rawValue) & 1 == 1
    }
}

/// Whether `ip` can add network namespaces here.
let canAddNetworkNamespaces = Capability.sysAdmin.isHeld && runShell("command -v ip >/dev/null") != nil

// MARK: - Hand-cut netlink bytes (native byte order, as the kernel writes them)

extension Array where Element == UInt8 {
    mutating func append<T: FixedWidthInteger>(native value: T) {
        Swift.withUnsafeBytes(of: value) { append(contentsOf: $0) }
    }

    mutating func pad() {
        while count % 4 != 0 { append(0) }
    }
}

enum Wire {
    static let sockDiagByFamily: UInt16 = 20
    static let error: UInt16 = 2
    static let done: UInt16 = 3
    static let multi: UInt16 = 2

    /// One netlink message, padded to 4 bytes.
    static func message(type: UInt16, flags: UInt16 = multi, seq: UInt32, pid: UInt32, _ payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.append(native: UInt32(16 + payload.count))
        bytes.append(native: type)
        bytes.append(native: flags)
        bytes.append(native: seq)
        bytes.append(native: pid)
        bytes += payload
        bytes.pad()
        return bytes
    }

    static func attribute(_ type: UInt16, _ value: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.append(native: UInt16(4 + value.count))
        bytes.append(native: type)
        bytes += value
        bytes.pad()
        return bytes
    }

    /// An `inet_diag_msg` for an IPv4 socket, followed by `attributes`.
    static func inetDiag(
        state: UInt8 = 1, local: (UInt32, UInt16), remote: (UInt32, UInt16), cookie: UInt64, inode: UInt32,
        attributes: [UInt8] = []
    ) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(AF_INET), state, 0, 0]
        bytes.append(native: local.1.bigEndian)
        bytes.append(native: remote.1.bigEndian)
        bytes.append(native: local.0.bigEndian)
        bytes += [UInt8](repeating: 0, count: 12)
        bytes.append(native: remote.0.bigEndian)
        bytes += [UInt8](repeating: 0, count: 12)
        bytes.append(native: UInt32(0))  // interface
        bytes.append(native: UInt32(truncatingIfNeeded: cookie))
        bytes.append(native: UInt32(truncatingIfNeeded: cookie >> 32))
        bytes += [UInt8](repeating: 0, count: 16)  // expires, rqueue, wqueue, uid
        bytes.append(native: inode)
        return bytes + attributes
    }

    static func doneMessage(seq: UInt32, pid: UInt32) -> [UInt8] {
        message(type: done, seq: seq, pid: pid, [0, 0, 0, 0])
    }

    static func errorMessage(_ errno: Int32, seq: UInt32, pid: UInt32) -> [UInt8] {
        var payload: [UInt8] = []
        payload.append(native: -errno)
        payload += [UInt8](repeating: 0, count: 16)  // the request's header, echoed
        return message(type: error, flags: 0, seq: seq, pid: pid, payload)
    }
}

/// Replays hand-cut or recorded datagrams in place of the kernel.
final class MockTransport: NetlinkTransport {
    let portID: UInt32
    private(set) var requests: [[UInt8]] = []
    /// Handed out one per receive, in order: bytes, or an error to throw.
    var pending: [Result<[UInt8], NetlinkError>]
    /// Appended to `pending` when a request is sent, the way the kernel answers.
    var onRequest: [Result<[UInt8], NetlinkError>]

    init(
        portID: UInt32 = 4242, pending: [Result<[UInt8], NetlinkError>] = [],
        onRequest: [Result<[UInt8], NetlinkError>] = []
    ) {
        self.portID = portID
        self.pending = pending
        self.onRequest = onRequest
    }

    func send(_ request: UnsafeRawBufferPointer) throws(NetlinkError) {
        requests.append(Array(request))
        pending += onRequest
        onRequest = []
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(NetlinkError) -> Int? {
        guard !pending.isEmpty else { return nil }
        let bytes = try pending.removeFirst().get()
        guard bytes.count <= buffer.count else {
            throw NetlinkError(.truncated, "mock datagram too long")
        }
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return bytes.count
    }
}

// MARK: - Real sockets on loopback

enum Net {
    static func socket(_ family: AddressFamily, _ type: __socket_type) throws -> Int32 {
        try check(
            "socket", Glibc.socket(family == .v4 ? AF_INET : AF_INET6, Int32(type.rawValue | SOCK_CLOEXEC.rawValue), 0))
    }

    /// Runs `body` with the loopback address (or the wildcard address) of `family` at `port`.
    static func withAddress<T>(
        _ family: AddressFamily, port: UInt16, wildcard: Bool = false,
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> T
    ) rethrows -> T {
        switch family {
        case .v4:
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = (wildcard ? UInt32(0) : 0x7F00_0001).bigEndian
            return try withUnsafePointer(to: &address) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        case .v6:
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_addr = wildcard ? in6addr_any : in6addr_loopback
            return try withUnsafePointer(to: &address) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
    }

    static func bind(_ fd: Int32, _ family: AddressFamily, wildcard: Bool = false) throws {
        try withAddress(family, port: 0, wildcard: wildcard) {
            _ = try check("bind", Glibc.bind(fd, $0, $1))
        }
    }

    static func connect(_ fd: Int32, _ family: AddressFamily, port: UInt16) throws {
        try withAddress(family, port: port) { _ = try check("connect", Glibc.connect(fd, $0, $1)) }
    }

    /// The local port, from getsockname (both sockaddr_in and sockaddr_in6 keep it at offset 2).
    static func port(_ fd: Int32) throws -> UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        try withUnsafeMutablePointer(to: &storage) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = try check("getsockname", getsockname(fd, $0, &length))
            }
        }
        return withUnsafeBytes(of: storage) {
            UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        }
    }

    static func inode(_ fd: Int32) throws -> UInt64 {
        var status = stat()
        try check("fstat", fstat(fd, &status))
        return UInt64(status.st_ino)
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws {
        var value = value
        try check("setsockopt", setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)))
    }

    static func sendAll(_ fd: Int32, count: Int) throws {
        let bytes = [UInt8](repeating: 0x5A, count: count)
        var sent = 0
        while sent < count {
            sent += try bytes[sent...].withUnsafeBytes {
                try check("send", Glibc.send(fd, $0.baseAddress, $0.count, 0))
            }
        }
    }

    /// Reads exactly `count` bytes.
    static func receive(_ fd: Int32, count: Int) throws {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var received = 0
        while received < count {
            let n = try check("recv", recv(fd, &buffer, min(buffer.count, count - received), 0))
            guard n > 0 else { throw SystemCallError("recv: early EOF", errno: 0) }
            received += n
        }
    }

    /// Reads until the peer's FIN and returns how many bytes came before it.
    static func readToEOF(_ fd: Int32) throws -> Int {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var total = 0
        while true {
            let n = try check("recv", recv(fd, &buffer, buffer.count, 0))
            if n == 0 { return total }
            total += n
        }
    }

    /// The kernel's `tcp_info` for `fd`, cut to `length` bytes the way an older kernel would send it.
    static func tcpInfoBytes(_ fd: Int32, length: Int = 512) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: length)
        var size = socklen_t(length)
        try check("getsockopt(TCP_INFO)", getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &bytes, &size))
        return Array(bytes[..<Int(size)])
    }
}

/// A listening TCP socket on loopback, a client connected to it, and the server end the listener accepted.
struct TCPConnection {
    let family: AddressFamily
    let listener: Int32
    let client: Int32
    let server: Int32
    let listenPort: UInt16
    let clientPort: UInt16

    init(_ family: AddressFamily, clientReceiveBuffer: Int32? = nil) throws {
        self.family = family
        listener = try Net.socket(family, SOCK_STREAM)
        try Net.bind(listener, family)
        try check("listen", listen(listener, 16))
        listenPort = try Net.port(listener)
        client = try Net.socket(family, SOCK_STREAM)
        if let clientReceiveBuffer {
            try Net.setOption(client, SOL_SOCKET, SO_RCVBUF, clientReceiveBuffer)
        }
        try Net.connect(client, family, port: listenPort)
        server = try check("accept", accept(listener, nil, nil))
        clientPort = try Net.port(client)
    }

    /// Sends `clientBytes` from the client and `serverBytes` from the server, each read in full by the other end.
    func exchange(clientBytes: Int, serverBytes: Int) throws {
        try Net.sendAll(client, count: clientBytes)
        try Net.receive(server, count: clientBytes)
        try Net.sendAll(server, count: serverBytes)
        try Net.receive(client, count: serverBytes)
    }

    func closeSockets() {
        closeAll([client, server, listener])
    }

    func isClient(_ o: SocketObservation) -> Bool {
        o.transport == .tcp && o.local.port == clientPort && o.remote.port == listenPort
    }

    func isServer(_ o: SocketObservation) -> Bool {
        o.transport == .tcp && o.local.port == listenPort && o.remote.port == clientPort
    }

    func isListener(_ o: SocketObservation) -> Bool {
        o.transport == .tcp && o.local.port == listenPort && o.state == .listen
    }
}

func closeAll(_ fds: [Int32]) {
    for fd in fds { close(fd) }
}

/// The current time on the monotonic clock, in seconds.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Drains `listener` until `done` says everything awaited arrived, or fails after `timeout` seconds.
func drainUntil(_ listener: DestroyListener, netns: UInt64, timeout: Double = 5, _ done: ([SocketObservation]) -> Bool)
    throws -> (observations: [SocketObservation], lost: Int)
{
    let deadline = monotonicSeconds() + timeout
    var all: [SocketObservation] = []
    var lost = 0
    while !done(all) {
        guard monotonicSeconds() < deadline else {
            Issue.record("destroy notifications did not all arrive within \(timeout) s; got \(all)")
            break
        }
        let batch = try listener.drain(netns: netns)
        all += batch.observations
        lost += batch.lost
        if batch.observations.isEmpty { usleep(1000) }  // poll interval, not a guess at when they come
    }
    return (all, lost)
}
