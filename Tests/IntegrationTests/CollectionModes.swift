import CNMTestSupport
import Foundation
import Glibc
import Testing

/// The ways the agent can collect; every accounting test runs under each one that can do it.
enum CollectionMode: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sockLength = "sock_length"
    case kernelCounters = "kernel_counters"
    case ebpfless

    var testDescription: String { rawValue }
    var isEBPF: Bool { self != .ebpfless }
    static let ebpf: [CollectionMode] = [.sockLength, .kernelCounters]

    var environment: [String: String] {
        switch self {
        case .sockLength, .kernelCounters: ["DD_CNM_EBPF_STRATEGY": rawValue]
        case .ebpfless: ["DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true"]
        }
    }

    /// Starts the agent in this mode and checks it really runs in it (an eBPF mode that fell back
    /// would otherwise pass or fail for the wrong reason).
    func startAgent(_ extra: [String: String] = [:]) async throws -> AgentProcess {
        let agent = try AgentProcess(environment: environment.merging(extra) { $1 })
        try await agent.waitUntilHealthy()
        let status = try await agent.json("/status")
        let mode = status["mode"] as? String
        guard mode == (isEBPF ? "ebpf" : "ebpfless") else {
            agent.stop()
            throw TestFailure("agent runs \(mode ?? "?") instead of \(rawValue): \(status["mode_reason"] ?? "")")
        }
        if isEBPF {
            let chosen = (status["strategies"] as? [[String: Any]] ?? []).first { $0["chosen"] as? Bool == true }
            guard chosen?["name"] as? String == "ebpf/\(rawValue)" else {
                agent.stop()
                throw TestFailure("chosen strategy \(chosen?["name"] ?? "none"), expected ebpf/\(rawValue)")
            }
        }
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence())
        return agent
    }
}

extension Array where Element == [String: Any] {
    func sum(_ key: String) -> Int { map { $0.int(key) }.reduce(0, +) }
    func failures() -> [String: Int] {
        reduce(into: [:]) { out, c in
            for (errno, n) in c["tcp_failures"] as? [String: Any] ?? [:] {
                out[errno, default: 0] += (n as? NSNumber)?.intValue ?? 0
            }
        }
    }
}

/// Plain UDP sockets on loopback for tests.
struct TestDatagramSocket {
    let fd: Int32

    init() throws {
        fd = try TestSocket.make(for: "127.0.0.1", SOCK_DGRAM, timeout: .seconds(5))
        try TestSocket.bind(fd, to: "127.0.0.1")
    }

    var port: UInt16 { (try? TestSocket.localPort(fd)) ?? 0 }

    func connect(port: UInt16) throws { try TestSocket.connect(fd, to: "127.0.0.1", port: port) }

    /// send() on a connected socket, sendto() otherwise.
    func send(_ size: Int, to port: UInt16?) throws {
        let payload = [UInt8](repeating: 0x42, count: size)
        let n = payload.withUnsafeBytes { bytes -> Int in
            guard let port else { return Glibc.send(fd, bytes.baseAddress, size, 0) }
            let sent = try? TestSocket.withAddress("127.0.0.1", port: port) {
                sendto(fd, bytes.baseAddress, size, 0, $0, $1)
            }
            return sent ?? -1
        }
        guard n == size else { throw TestFailure("send of \(size): errno \(errno)") }
    }

    /// recv() or recvfrom(); returns the datagram's size and the sender's port (when asked).
    func receive(from: Bool) throws -> (size: Int, port: UInt16) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var peer = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let n = buffer.withUnsafeMutableBytes { bytes in
            guard from else { return recv(fd, bytes.baseAddress, bytes.count, 0) }
            return withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, bytes.baseAddress, bytes.count, 0, $0, &length)
                }
            }
        }
        guard n >= 0 else {
            if errno == EAGAIN || errno == EWOULDBLOCK { throw DatagramTimeout() }
            throw TestFailure("receive: errno \(errno)")
        }
        return (n, UInt16(bigEndian: peer.sin_port))
    }

    func close() { _ = Glibc.close(fd) }
}

/// No datagram arrived within the socket's receive timeout.
struct DatagramTimeout: Error, CustomStringConvertible {
    var description: String { "no datagram within the receive timeout" }
}

/// What one end of a UDP exchange really sent and received: every successful send and receive call.
struct DatagramTally: Equatable {
    var bytesSent = 0
    var packetsSent = 0
    var bytesReceived = 0
    var packetsReceived = 0

    mutating func sent(_ size: Int) {
        bytesSent += size
        packetsSent += 1
    }

    mutating func received(_ size: Int) {
        bytesReceived += size
        packetsReceived += 1
    }
}

/// The kernel's own counts of packets it dropped on the way in: per-CPU backlog overflows
/// (`/proc/net/softnet_stat`), UDP receive errors (`/proc/net/snmp`) and drops on `lo`. Loopback UDP
/// is not reliable: when the other tests flood loopback, a backlog overflow can drop a datagram.
/// Such a loss is the test's bad luck only when one of these counts moved.
struct KernelDropCounts: Equatable {
    let counts: [String: Int]

    static func read() -> KernelDropCounts {
        var counts: [String: Int] = [:]
        let softnet = (try? String(contentsOfFile: "/proc/net/softnet_stat", encoding: .utf8)) ?? ""
        counts["softnet_dropped"] = softnet.split(separator: "\n").reduce(0) { sum, line in
            let fields = line.split(separator: " ")
            return sum + (fields.count > 1 ? Int(fields[1], radix: 16) ?? 0 : 0)
        }
        let snmp = ((try? String(contentsOfFile: "/proc/net/snmp", encoding: .utf8)) ?? "")
            .split(separator: "\n").filter { $0.hasPrefix("Udp: ") }
        if snmp.count == 2 {
            for (name, value) in zip(snmp[0].split(separator: " "), snmp[1].split(separator: " "))
            where ["InErrors", "RcvbufErrors", "MemErrors"].contains(name) {
                counts["udp_\(name)"] = Int(value) ?? 0
            }
        }
        let dev = (try? String(contentsOfFile: "/proc/net/dev", encoding: .utf8)) ?? ""
        if let lo = dev.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix("lo:") }
        ) {
            let fields = lo.split(separator: ":", maxSplits: 1).last?.split(separator: " ") ?? []
            if fields.count > 11 {
                counts["lo_rx_drop"] = Int(fields[3]) ?? 0
                counts["lo_tx_drop"] = Int(fields[11]) ?? 0
            }
        }
        return KernelDropCounts(counts: counts)
    }
}

/// One request from `client` and its answer from `server`, with what each end really sent and
/// received added to its tally. A loaded machine can stall a thread for seconds, so a datagram has
/// 30 s to arrive; one that never does is sent again (up to three times), but only when the kernel
/// counted a drop meanwhile: any other loss fails the test.
func datagramRoundTrip(
    _ client: TestDatagramSocket, _ server: TestDatagramSocket, up: Int, down: Int, connected: Bool,
    client clientTally: inout DatagramTally, server serverTally: inout DatagramTally
) throws {
    func patiently(_ socket: TestDatagramSocket, from: Bool) throws -> (size: Int, port: UInt16)? {
        for _ in 0..<6 {
            do { return try socket.receive(from: from) } catch is DatagramTimeout { continue }
        }
        return nil
    }
    func lost(_ what: String, since drops: KernelDropCounts) throws {
        let now = KernelDropCounts.read()
        guard now != drops else {
            throw TestFailure("the \(what) datagram was lost on loopback and the kernel counted no drop: \(now.counts)")
        }
        print(
            "the kernel dropped a datagram while the \(what) was lost (\(drops.counts) -> \(now.counts)); sending again"
        )
    }
    for _ in 1...3 {
        let drops = KernelDropCounts.read()
        try client.send(up, to: connected ? nil : server.port)
        clientTally.sent(up)
        guard let (size, from) = try patiently(server, from: true) else {
            try lost("request", since: drops)
            continue
        }
        serverTally.received(size)
        guard size == up, from == client.port else {
            throw TestFailure("server got \(size) bytes from port \(from), sent \(up) from \(client.port)")
        }
        try server.send(down, to: from)
        serverTally.sent(down)
        guard let answer = try patiently(client, from: !connected)?.size else {
            try lost("answer", since: drops)
            continue
        }
        clientTally.received(answer)
        guard answer == down else { throw TestFailure("client got \(answer) bytes, server sent \(down)") }
        return
    }
    throw TestFailure("three datagrams of \(up) bytes lost in a row")
}

/// What a test's short connections carried, by the client's port: bytes each way and how many
/// connections used that port.
typealias ExpectedByClientPort = [Int: (sent: Int, received: Int, count: Int)]

/// Makes `count` short loopback connections to `listener`, one after another: connect, the i-th
/// sends `sizes(i).up` and is answered `sizes(i).down`, then both ends close (after `linger`
/// microseconds). Returns what each client port carried.
func makeShortConnections(
    _ count: Int, to listener: Int32, port serverPort: UInt16, linger: useconds_t = 0,
    sizes: (Int) -> (up: Int, down: Int)
) throws -> ExpectedByClientPort {
    var expected: ExpectedByClientPort = [:]
    for i in 0..<count {
        let (up, down) = sizes(i)
        let client = try TestSocket.connect(port: serverPort)
        let server = try TestSocket.accept(listener)
        try TestSocket.exchange(client, server, clientBytes: up, serverBytes: down)
        if linger > 0 { usleep(linger) }
        let port = Int(try TestSocket.localPort(client))
        close(client)
        close(server)
        let e = expected[port] ?? (0, 0, 0)
        expected[port] = (e.sent + up, e.received + down, e.count + 1)
    }
    return expected
}

/// One line per connection end whose reported bytes or handshake counts differ from what the test
/// made: outgoing ends matched by their local port, incoming ones by their remote port.
func mismatches(_ expected: ExpectedByClientPort, outgoing: [[String: Any]], incoming: [[String: Any]]) -> [String] {
    let outByPort = Dictionary(grouping: outgoing) { $0.port("laddr") }
    let inByPort = Dictionary(grouping: incoming) { $0.port("raddr") }
    var wrong: [String] = []
    for (port, e) in expected {
        let out = outByPort[port] ?? []
        let inc = inByPort[port] ?? []
        if out.sum("bytes_sent") != e.sent || out.sum("bytes_received") != e.received {
            wrong.append(
                "out \(port): \(out.sum("bytes_sent"))/\(out.sum("bytes_received")) != \(e.sent)/\(e.received)")
        }
        if inc.sum("bytes_sent") != e.received || inc.sum("bytes_received") != e.sent {
            wrong.append("in \(port): \(inc.sum("bytes_sent"))/\(inc.sum("bytes_received")) != \(e.received)/\(e.sent)")
        }
        for (side, flows) in [("out", out), ("in", inc)]
        where flows.sum("tcp_established") != e.count || flows.sum("tcp_closed") != e.count {
            wrong.append(
                "\(side) \(port): established \(flows.sum("tcp_established")) closed \(flows.sum("tcp_closed"))")
        }
    }
    return wrong
}
