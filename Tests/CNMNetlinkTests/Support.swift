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

/// A network namespace of the test's own (`ip netns add`), removed by `remove()`.
struct TestNamespace {
    let name = "cnmtest-\(UInt32.random(in: 0...UInt32.max))"
    var path: String { "/run/netns/\(name)" }

    /// Adds the namespace, with its loopback up when asked.
    init(loopbackUp: Bool) throws {
        try #require(runShell("ip netns add \(name)") != nil, "ip netns add \(name) failed")
        if loopbackUp {
            try #require(runShell("ip -n \(name) link set lo up") != nil, "ip -n \(name) link set lo up failed")
        }
    }

    var netns: UInt64 { get throws { try NetworkNamespace.inode(atPath: path) } }

    func remove() { _ = runShell("ip netns del \(name)") }

    /// Runs `body` on this thread inside the namespace; sockets it makes stay there.
    func inside<T>(_ body: () throws -> T) throws -> T {
        try NetworkNamespace.run(in: path, entering: NetlinkError.init) { () throws(NetlinkError) in
            Result { try body() }
        }.get()
    }

    /// Opens a connection from inside the namespace to `server` (listening there on `port`) and closes both ends.
    func connectAndClose(server: Int32, port: UInt16) throws {
        let client = try inside { try TestSocket.connect(port: port) }
        let accepted = try TestSocket.accept(server)
        close(client)
        close(accepted)
    }
}

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

extension AddressFamily {
    var loopback: String { TestSocket.loopback(v6: self == .v6) }
}

/// What sock_diag reports of a test connection's three sockets.
extension TestConnection {
    init(_ family: AddressFamily, clientReceiveBuffer: Int32? = nil) throws {
        try self.init(on: family.loopback, clientReceiveBuffer: clientReceiveBuffer)
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
    var all: [SocketObservation] = []
    var lost = 0
    _ = try waitForSync("destroy notifications", timeout: .seconds(timeout), every: .milliseconds(1)) {
        let batch = listener.drain(netns: netns)
        if let failure = batch.failure { throw failure }
        all += batch.observations
        lost += batch.lost
        return done(all) ? () : nil
    }
    return (all, lost)
}
