import CLinux
import CNMTestSupport
import Foundation
import Glibc

/// Two network namespaces joined by one veth pair, built with `ip` and `nft`, for tests that need a real network
/// path whose losses the test decides. Nothing in the lab routes anywhere else: each namespace has only `lo` and
/// its end of the veth, so traffic to the lab's addresses cannot leave it.
///
/// Side A holds 10.X.0.1/24 and fd00:X::1/64, side B 10.X.0.2/24 and fd00:X::2/64, X random per lab. Both
/// namespaces are deleted by `close()` or, failing that, when the lab is released.
final class NetworkLab {
    enum Side: String, CaseIterable, Sendable {
        case a, b
    }

    /// Random hex suffix shared by the namespace and interface names of this lab.
    let id: String
    /// The second IPv4 octet, and the second IPv6 group (in hex), of both addresses.
    private let subnet: UInt8
    /// Sides whose `cnmlab` nftables table exists.
    private var tables: Set<Side> = []

    /// The nftables table (family inet) that holds every drop rule of the lab.
    static let table = "cnmlab"

    init() throws {
        id = String(UInt32.random(in: 0x1000_0000...UInt32.max), radix: 16)
        subnet = UInt8.random(in: 1...254)
        // Tear a half-built lab down before throwing; close() is idempotent, so a deinit after it is harmless.
        do { try build() } catch {
            try? close()
            throw error
        }
    }

    deinit { try? close() }

    func name(of side: Side) -> String { "cnmlab-\(id)-\(side.rawValue)" }

    /// What `setns` and the agent's namespace options take.
    func path(of side: Side) -> String { "/run/netns/\(name(of: side))" }

    /// The veth end inside that side's namespace (12 characters, within IFNAMSIZ).
    func interface(of side: Side) -> String { "cnm\(id)\(side.rawValue)" }

    func address(of side: Side, v6: Bool) -> String {
        let host = side == .a ? 1 : 2
        return v6 ? "fd00:\(String(subnet, radix: 16))::\(host)" : "10.\(subnet).0.\(host)"
    }

    /// Deletes both namespaces; does nothing for a side already gone, so it may be called again. The veth goes
    /// with them. A namespace still held by an open socket lives on in the kernel, unnamed, until that closes.
    func close() throws {
        var failures: [String] = []
        for side in Side.allCases where FileManager.default.fileExists(atPath: path(of: side)) {
            do { try Self.command("ip", ["netns", "del", name(of: side)]) } catch { failures.append("\(error)") }
        }
        tables = []
        guard failures.isEmpty else { throw TestFailure(failures.joined(separator: "; ")) }
    }

    // MARK: - Shaping

    /// Drops incoming TCP segments that carry payload on that side's veth, each with probability 1/n
    /// (`numgen random`). SYNs, RSTs and segments without payload always pass, so handshakes complete and the
    /// sender sees retransmits rather than a stalled connection. Loopback is never touched.
    func dropRandomly(in side: Side, oneIn n: Int) throws {
        precondition(n >= 1, "oneIn must be at least 1")
        // No TCP segment without payload is longer than 100 bytes: a 40-byte IPv6 header plus a 60-byte TCP
        // header with every option (IPv4: 20 + 60). So `meta length > 100` keeps only segments carrying data.
        try addRule(
            in: side,
            "iifname \"\(interface(of: side))\" tcp flags & (syn | rst) == 0 meta length > 100 "
                + "numgen random mod \(n) == 0 counter drop"
        )
    }

    /// Drops incoming TCP SYNs (not SYN-ACKs) to `port` on that side's veth, so a connect from the other side
    /// retries and finally fails with ETIMEDOUT.
    func dropSYNs(in side: Side, toPort port: UInt16) throws {
        try addRule(
            in: side,
            "iifname \"\(interface(of: side))\" tcp dport \(port) tcp flags & (syn | ack) == syn counter drop"
        )
    }

    /// Removes every drop rule of that side: the path heals.
    func removeDropRules(in side: Side) throws {
        guard tables.contains(side) else { return }
        try nft(in: side, "delete table inet \(Self.table)")
        tables.remove(side)
    }

    /// Packets the drop rules of that side have dropped so far (the sum of their counters).
    func droppedPackets(in side: Side) throws -> Int {
        guard tables.contains(side) else { return 0 }
        let listing = try nft(in: side, "list table inet \(Self.table)")
        return listing.split(separator: "\n").filter { $0.hasSuffix(" drop") }.reduce(0) { total, rule in
            // "... counter packets 12 bytes 17376 drop"
            let words = rule.split(separator: " ")
            guard let i = words.firstIndex(of: "packets"), i + 1 < words.count, let n = Int(words[i + 1]) else {
                return total
            }
            return total + n
        }
    }

    // MARK: - Connections

    /// A TCP connection from side A to a listener on side B's IPv4 address: the listener (still open), the
    /// connecting and the accepted socket, the listening port and the client's port.
    func connectAcross() throws -> (listener: Int32, client: Int32, server: Int32, port: UInt16, clientPort: Int) {
        let serverAddress = address(of: .b, v6: false)
        let (listener, port) = try withNetworkNamespace(path(of: .b)) { try TestSocket.listener(on: serverAddress) }
        let client = try withNetworkNamespace(path(of: .a)) { try TestSocket.connect(to: serverAddress, port: port) }
        let server = try TestSocket.accept(listener)
        return (listener, client, server, port, Int(try TestSocket.localPort(client)))
    }

    // MARK: - Residents

    /// Ends a resident: SIGKILL, since the test runner's threads block SIGTERM and its children inherit that.
    static func stop(_ resident: Process) {
        kill(resident.processIdentifier, SIGKILL)
        resident.waitUntilExit()
    }

    /// A process that sits in that side's namespace until `stop`, so that whatever finds namespaces
    /// through /proc (the agent without eBPF) finds this one.
    func resident(in side: Side) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.tool("ip"))
        process.arguments = ["netns", "exec", name(of: side), try Self.tool("sleep"), "300"]
        try process.run()
        // Returned once it is in there: `ip` enters the namespace before it runs `sleep`.
        var target = stat()
        guard stat(path(of: side), &target) == 0 else { throw TestFailure("stat \(path(of: side)): errno \(errno)") }
        do {
            return try waitForSync("the resident process to enter \(name(of: side))") {
                var current = stat()
                let entered = stat("/proc/\(process.processIdentifier)/ns/net", &current) == 0
                return entered && current.st_ino == target.st_ino ? process : nil
            }
        } catch {
            Self.stop(process)
            throw error
        }
    }

    // MARK: - Sysctls

    /// `sysctl -w key=value` inside that side's namespace (net.* keys are per namespace).
    func setSysctl(in side: Side, _ key: String, _ value: String) throws {
        try Self.command("ip", ["netns", "exec", name(of: side), try Self.tool("sysctl"), "-w", "\(key)=\(value)"])
    }

    func sysctl(in side: Side, _ key: String) throws -> String {
        try Self.command("ip", ["netns", "exec", name(of: side), try Self.tool("sysctl"), "-n", key])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: - Building

    private func build() throws {
        let (a, b) = (name(of: .a), name(of: .b))
        try Self.command("ip", ["netns", "add", a])
        try Self.command("ip", ["netns", "add", b])
        // Both ends are created directly in their namespaces: the root namespace never sees them.
        try Self.command(
            "ip",
            [
                "link", "add", interface(of: .a), "address", mac(of: .a), "netns", a, "type", "veth",
                "peer", "name", interface(of: .b), "address", mac(of: .b), "netns", b,
            ]
        )
        for side in Side.allCases {
            let ns = name(of: side)
            let dev = interface(of: side)
            try Self.command("ip", ["-n", ns, "link", "set", "lo", "up"])
            // veth passes 64 KB GSO packets whole: a drop rule would see ~40 packets for 2 MB, not ~1,400
            // segments, and a 1-in-20 loss could miss a whole transfer. One segment per packet, as on a wire.
            try Self.command("ip", ["-n", ns, "link", "set", dev, "gso_max_segs", "1"])
            try Self.command("ip", ["-n", ns, "addr", "add", "\(address(of: side, v6: false))/24", "dev", dev])
            // nodad: the address is usable at once instead of after ~1 s of duplicate address detection.
            try Self.command("ip", ["-n", ns, "addr", "add", "\(address(of: side, v6: true))/64", "dev", dev, "nodad"])
            try Self.command("ip", ["-n", ns, "link", "set", dev, "up"])
        }
        // Fixed neighbour entries. In the first ~0.5 s after link-up the first IPv6 neighbour solicitation is
        // lost (measured), so a first connect took 1 s (a retransmitted SYN) and its 1 s RTT sample stretched
        // every retransmission timeout after it. With these no ARP or ND packet is ever needed.
        for (side, peer) in [(Side.a, Side.b), (.b, .a)] {
            for v6 in [false, true] {
                try Self.command(
                    "ip",
                    [
                        "-n", name(of: side), "neigh", "replace", address(of: peer, v6: v6), "lladdr", mac(of: peer),
                        "dev", interface(of: side), "nud", "permanent",
                    ]
                )
            }
        }
    }

    /// A locally administered unicast MAC unique to this lab and side.
    private func mac(of side: Side) -> String {
        let digits = Array(id)
        let bytes = stride(from: 0, to: digits.count, by: 2).map { String(digits[$0..<$0 + 2]) }
        return (["02"] + bytes + [side == .a ? "01" : "02"]).joined(separator: ":")
    }

    private func addRule(in side: Side, _ rule: String) throws {
        if !tables.contains(side) {
            try nft(in: side, "add table inet \(Self.table)")
            try nft(
                in: side,
                "add chain inet \(Self.table) input { type filter hook input priority filter; policy accept; }"
            )
            tables.insert(side)
        }
        try nft(in: side, "add rule inet \(Self.table) input \(rule)")
    }

    /// One nft command (nft joins its arguments, so one string is enough) inside that side's namespace.
    @discardableResult
    private func nft(in side: Side, _ command: String) throws -> String {
        try Self.command("ip", ["netns", "exec", name(of: side), try Self.tool("nft"), command])
    }

    // MARK: - Commands

    /// Whether `ip`, `nft` and `sysctl` are installed (iproute2, nftables, procps).
    static var toolsAvailable: Bool { ["ip", "nft", "sysctl"].allSatisfy { (try? tool($0)) != nil } }

    /// The absolute path of a system tool: tests may run with a PATH that lacks the sbin directories.
    static func tool(_ name: String) throws -> String {
        for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw TestFailure("\(name) is not in /usr/sbin, /sbin, /usr/bin or /bin")
    }

    /// Runs a tool and returns its standard output; throws with the command line and its standard error when it
    /// fails or outlives `timeout`. Meant for short outputs: the pipes are read after exit, so more than a pipe's
    /// buffer (64 KiB) would block the tool until the deadline.
    @discardableResult
    static func command(_ name: String, _ arguments: [String], timeout: Duration = .seconds(10)) throws -> String {
        let line = ([name] + arguments).joined(separator: " ")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try tool(name))
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch { throw TestFailure("`\(line)` did not start: \(error)") }
        // Foundation's waitUntilExit busy-spins on Linux: poll isRunning instead, up to a deadline.
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                kill(process.processIdentifier, SIGKILL)
                for _ in 0..<200 where process.isRunning { usleep(5_000) }
                throw TestFailure("`\(line)` did not exit within \(timeout); killed")
            }
            usleep(1_000)
        }
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            let how = process.terminationReason == .exit ? "exited with" : "was killed by signal"
            let message = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            throw TestFailure("`\(line)` \(how) \(process.terminationStatus): \(message)")
        }
        return stdout
    }
}

// MARK: - Entering a namespace

/// Runs `body` on the calling thread inside the network namespace at `path` (such as `NetworkLab.path(of:)`), then
/// moves the thread back. Sockets created in `body` belong to that namespace for good and work after the return.
/// `body` must not suspend: only this thread moves, so keep it synchronous.
func withNetworkNamespace<T>(_ path: String, _ body: () throws -> T) throws -> T {
    let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
    guard home >= 0 else { throw TestFailure("open /proc/thread-self/ns/net: errno \(errno)") }
    defer { close(home) }
    let target = open(path, O_RDONLY | O_CLOEXEC)
    guard target >= 0 else { throw TestFailure("open \(path): errno \(errno)") }
    let entered = cnm_linux_setns_net(target)
    let enterError = errno
    close(target)
    guard entered == 0 else { throw TestFailure("setns(\(path)): errno \(enterError)") }
    defer {
        // A thread left in a lab namespace would run unrelated tests there, and the lab's deletion could not
        // take its traffic with it: stop rather than go on.
        if cnm_linux_setns_net(home) != 0 {
            fatalError("cannot return to the original network namespace from \(path): errno \(errno)")
        }
    }
    return try body()
}

// MARK: - Kernel counters

/// `tcpi_total_retrans` of a TCP socket: every segment the kernel retransmitted over the connection's life.
/// It is the u32 at byte 100 of `struct tcp_info` (linux/tcp.h); CLinux.c asserts the mirror's layout.
func kernelTotalRetransmits(fd: Int32) throws -> UInt32 {
    try kernelTCPInfo(fd: fd).tcpi_total_retrans
}

/// The kernel's `struct tcp_info` for a socket, through the CLinux mirror whose layout CLinux.c asserts.
func kernelTCPInfo(fd: Int32) throws -> cnm_linux_tcp_info {
    var info = cnm_linux_tcp_info()
    var size = socklen_t(MemoryLayout<cnm_linux_tcp_info>.size)
    guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_INFO, &info, &size) == 0 else {
        throw SystemCallError("getsockopt(TCP_INFO)")
    }
    guard size >= 104 else { throw TestFailure("tcp_info of \(size) bytes has no tcpi_total_retrans") }
    return info
}
