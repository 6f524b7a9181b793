import CNMIntake
import CNMIntakeProto
import CNMTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// The real agent ships its connections to a local stand-in for Datadog's process intake, which
/// decodes every request as the intake does.
@Suite(
    .serialized, .enabled(if: Environment.isRoot, "needs root: the agent reads every process's sockets"),
    .enabled(if: Environment.hasAgentBinary, "build the agent first (swift build): .build/debug/cnm-agent"))
struct IntakeTests {
    static let apiKey = "cnm-test-key-0000abcd"

    static func agent(_ intake: FakeIntake, _ extra: [String: String] = [:]) throws -> AgentProcess {
        var environment = [
            "DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "true",
            "DD_API_KEY": apiKey,
            "DD_PROCESS_CONFIG_PROCESS_DD_URL": intake.baseURL,
            "DD_HOSTNAME": "intake-test-host",
            "DD_TAGS": "team:cnm,suite:intake",
        ]
        environment.merge(extra) { $1 }
        return try AgentProcess(environment: environment)
    }

    struct Flow {
        var client: Int32
        var server: Int32
        var clientPort: UInt16
        var serverPort: UInt16
        var a: Int
        var b: Int
    }

    /// Loopback TCP connections with byte counts the test controls: `a` bytes from client to server,
    /// `b` back. They stay open until `close`, so that the agent sees their sockets and owners alive.
    /// The listener stays open too: a connection is incoming where its local port is a listening one's.
    static func openFlows(_ sizes: [(a: Int, b: Int)]) throws -> (Int32, [Flow]) {
        let (listener, serverPort) = try TestSocket.listener()
        let flows = try sizes.map { size in
            let client = try TestSocket.connect(port: serverPort)
            let server = try TestSocket.accept(listener)
            try TestSocket.exchange(client, server, clientBytes: size.a, serverBytes: size.b)
            return Flow(
                client: client, server: server, clientPort: try TestSocket.localPort(client), serverPort: serverPort,
                a: size.a,
                b: size.b)
        }
        return (listener, flows)
    }

    /// Closes both ends in order, reading each to its end.
    static func close(_ flows: [Flow]) throws {
        for flow in flows {
            _ = shutdown(flow.client, Int32(SHUT_WR))
            _ = try TestSocket.receiveToEOF(flow.server)
            Glibc.close(flow.server)
            _ = try TestSocket.receiveToEOF(flow.client)
            Glibc.close(flow.client)
        }
    }

    /// Opens the flows, lets the agent sample them through one whole interval, and closes them.
    static func workload(_ sizes: [(a: Int, b: Int)], agent: AgentProcess) async throws -> [Flow] {
        let (listener, flows) = try openFlows(sizes)
        defer { Glibc.close(listener) }
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 2)
        try close(flows)
        // Closed after the flows' last report could still show them ending, as a real server would be.
        _ = try await agent.waitForIntervals(after: try await agent.latestSequence(), count: 1)
        return flows
    }

    static func connections(_ requests: [FakeIntake.Request]) -> [(
        Datadog_ProcessAgent_CollectorConnections, Datadog_ProcessAgent_Connection
    )] {
        requests.compactMap(\.decoded).flatMap { message in message.connections.map { (message, $0) } }
    }

    @Test func everyConnectionArrivesWithExactBytesInBatchesOfTheConfiguredSize() async throws {
        let intake = try FakeIntake(.status(202))
        let agent = try Self.agent(intake, ["DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE": "2"])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()

        let flows = try await Self.workload(
            [(40_001, 7_919), (25_013, 30_011), (1, 65_537), (123_457, 2)], agent: agent)
        let pid = Int32(getpid())
        // Wait until both ends of every flow were reported closed; then their sums are final.
        let entries = try await waitFor("every flow's ends reported closed at the intake", timeout: .seconds(30)) {
            let all = Self.connections(intake.accepted)
            let closed = flows.allSatisfy { flow in
                let ends = all.filter {
                    ($0.1.laddr.port == flow.clientPort && $0.1.raddr.port == flow.serverPort)
                        || ($0.1.laddr.port == flow.serverPort && $0.1.raddr.port == flow.clientPort)
                }
                return ends.map(\.1.lastTcpClosed).reduce(0, +) >= 2
            }
            return closed ? all : nil
        }
        #expect(intake.requests.allSatisfy { $0.decodeError == nil }, "\(intake.requests.compactMap(\.decodeError))")
        #expect(
            entries.filter { $0.1.laddr.port == flows[0].serverPort || $0.1.raddr.port == flows[0].serverPort }
                .allSatisfy { $0.1.laddr.port != 0 && $0.1.raddr.port != 0 },
            "connections are not rolled up unless asked")

        for flow in flows {
            let outgoing = entries.filter { $0.1.laddr.port == flow.clientPort && $0.1.raddr.port == flow.serverPort }
            let incoming = entries.filter { $0.1.laddr.port == flow.serverPort && $0.1.raddr.port == flow.clientPort }
            func sum(
                _ list: [(Datadog_ProcessAgent_CollectorConnections, Datadog_ProcessAgent_Connection)],
                _ field: (Datadog_ProcessAgent_Connection) -> UInt64
            ) -> UInt64 {
                list.map { field($0.1) }.reduce(0, +)
            }
            #expect(sum(outgoing) { $0.lastBytesSent } == UInt64(flow.a), "\(flow)")
            #expect(sum(outgoing) { $0.lastBytesReceived } == UInt64(flow.b), "\(flow)")
            #expect(sum(incoming) { $0.lastBytesSent } == UInt64(flow.b), "\(flow)")
            #expect(sum(incoming) { $0.lastBytesReceived } == UInt64(flow.a), "\(flow)")
            #expect(
                sum(outgoing) { UInt64($0.lastTcpEstablished) } == 1 && sum(incoming) { UInt64($0.lastTcpClosed) } == 1)
            #expect(sum(outgoing) { $0.lastPacketsSent } > 0 && sum(incoming) { $0.lastPacketsReceived } > 0)
            for (message, c) in outgoing + incoming {
                #expect(c.pid == pid)
                #expect(c.family == .v4 && c.type == .tcp && c.intraHost)
                #expect(c.laddr.ip == "127.0.0.1" && c.raddr.ip == "127.0.0.1")
                #expect(c.netNs != 0)
                let tags = TagEncoder.decode(Array(message.encodedConnectionsTags), index: c.tagsIdx)
                #expect(tags?.contains("team:cnm") == true && tags?.contains("suite:intake") == true, "\(tags ?? [])")
            }
            #expect(
                outgoing.allSatisfy { $0.1.direction == .outgoing }
                    && incoming.allSatisfy { $0.1.direction == .incoming })
            #expect(outgoing.contains { $0.1.rtt > 0 })
        }

        // Batching: at most 2 connections per message, every group whole, one groupSize per group.
        let messages = intake.accepted.compactMap(\.decoded)
        #expect(messages.allSatisfy { (1...2).contains($0.connections.count) })
        let newest = messages.map(\.groupID).max() ?? 0
        for (group, members) in Dictionary(grouping: messages, by: \.groupID) where group < newest {
            #expect(Set(members.map(\.groupSize)).count == 1)
            #expect(members.count == Int(members[0].groupSize), "group \(group)")
        }
        #expect(messages.contains { $0.groupSize > 1 }, "the workload alone needs several messages")

        // Host fields and headers.
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        for message in messages {
            #expect(message.hostName == "intake-test-host")
            #expect(message.kernelVersion == release && !message.architecture.isEmpty && !message.platform.isEmpty)
            #expect(
                TagEncoder.decode(Array(message.encodedTags), index: message.hostTagsIndex) == [
                    "suite:intake", "team:cnm",
                ])
        }
        let now = Int(Date().timeIntervalSince1970)
        for request in intake.accepted {
            #expect(request.header("DD-Api-Key") == Self.apiKey)
            #expect(request.header("X-Dd-Hostname") == "intake-test-host")
            #expect(request.header("Content-Type") == "application/x-protobuf")
            #expect(request.header("X-Dd-ContainerCount") == "0")
            #expect(request.header("X-Dd-Processagentversion")?.isEmpty == false)
            let timestamp = Int(request.header("X-DD-Agent-Timestamp") ?? "") ?? 0
            #expect(abs(timestamp - now) < 120)
            let header = try #require(IntakeMessageHeader(parsing: request.body))
            #expect(Int(header.timestampMilliseconds / 1000) == timestamp)
        }

        // /status: the intake section, the key only as its last four characters, never whole.
        let (_, raw) = try await agent.get("/status")
        #expect(!String(decoding: raw, as: UTF8.self).contains(Self.apiKey))
        let section = try #require(try await agent.json("/status")["intake"] as? [String: Any])
        #expect(section["api_key"] as? String == "****abcd")
        #expect(section["endpoint"] as? String == intake.baseURL + "/api/v1/connections")
        #expect(section.int("sent") >= messages.count - 2 && section.int("dropped") == 0)
        #expect(
            section.keys.contains("queue_depth") && section.keys.contains("retried")
                && section.keys.contains("last_error"))
        #expect(!agent.log.contains(Self.apiKey), "the API key must never be logged")
    }

    /// `DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP=true`: the short-lived connections of one client
    /// process to one listener arrive as one per interval with the client's port zeroed (and on the
    /// server's side the remote port), and every byte and close is still in the sums.
    @Test(arguments: ["true", "false"])
    func shortLivedConnectionsArriveRolledUpWithExactSums(ebpfless: String) async throws {
        let intake = try FakeIntake(.status(202))
        let agent = try Self.agent(
            intake,
            ["DD_NETWORK_CONFIG_ENABLE_EBPFLESS": ebpfless, "DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP": "true"])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        #expect(try await agent.json("/status")["mode"] as? String == (ebpfless == "true" ? "ebpfless" : "ebpf"))

        let sizes = [(1_001, 2_003), (3_005, 4_007), (5_009, 6_011), (7_013, 8_017), (9_019, 10_021), (11_027, 12_029)]
        let flows = try await Self.workload(sizes, agent: agent)
        let serverPort = flows[0].serverPort
        let clientPorts = Set(flows.map(\.clientPort) + [0])
        typealias Entry = (Datadog_ProcessAgent_CollectorConnections, Datadog_ProcessAgent_Connection)
        func outgoing(_ all: [Entry]) -> [Datadog_ProcessAgent_Connection] {
            all.map(\.1).filter { $0.raddr.port == serverPort && clientPorts.contains(UInt16($0.laddr.port)) }
        }
        func incoming(_ all: [Entry]) -> [Datadog_ProcessAgent_Connection] {
            all.map(\.1).filter { $0.laddr.port == serverPort && clientPorts.contains(UInt16($0.raddr.port)) }
        }
        let entries = try await waitFor("both ends of every flow reported closed", timeout: .seconds(30)) {
            let all = Self.connections(intake.accepted)
            let closed = (outgoing(all) + incoming(all)).map(\.lastTcpClosed).reduce(0, +)
            return closed >= 2 * UInt32(flows.count) ? all : nil
        }
        let (out, into) = (outgoing(entries), incoming(entries))
        #expect(out.map(\.lastBytesSent).reduce(0, +) == UInt64(sizes.map(\.0).reduce(0, +)))
        #expect(out.map(\.lastBytesReceived).reduce(0, +) == UInt64(sizes.map(\.1).reduce(0, +)))
        #expect(into.map(\.lastBytesSent).reduce(0, +) == UInt64(sizes.map(\.1).reduce(0, +)))
        #expect(into.map(\.lastBytesReceived).reduce(0, +) == UInt64(sizes.map(\.0).reduce(0, +)))
        #expect(out.map(\.lastTcpClosed).reduce(0, +) == 6 && into.map(\.lastTcpClosed).reduce(0, +) == 6)
        #expect(out.map(\.lastTcpEstablished).reduce(0, +) == 6 && into.map(\.lastTcpEstablished).reduce(0, +) == 6)
        // The six close within milliseconds: however an interval's end splits them, one part has
        // three or more, which arrive as one connection.
        let rolledOut = out.filter { $0.laddr.port == 0 }
        let rolledIn = into.filter { $0.raddr.port == 0 }
        #expect(rolledOut.contains { $0.lastTcpClosed >= 3 && $0.direction == .outgoing }, "\(out)")
        #expect(rolledIn.contains { $0.lastTcpClosed >= 3 && $0.direction == .incoming }, "\(into)")
        #expect((rolledOut + rolledIn).allSatisfy { $0.pid == Int32(getpid()) && $0.lastTcpClosed >= 2 })
        let section = try #require(try await agent.json("/status")["intake"] as? [String: Any])
        #expect(section["connection_rollup"] as? Bool == true)
        #expect(section.int("connections_rolled_up") >= 4, "\(section)")
    }

    static var hasIndependentDecoder: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/zstd")
            && (try? Environment.run(
                Environment.root.appendingPathComponent(".build/python/bin/python3").path, ["-c", "import grpc_tools"]
            ).status) == 0
    }

    /// Two containers on a real dockerd, one sending a known number of bytes to the other: at the intake,
    /// each end carries its container's id and tags, `containerForPid` names the container of each pid,
    /// and the bytes are exact.
    @Test(
        .enabled(if: Environment.dockerAnswers, "needs a running dockerd with cnm-test/busybox (make test starts both)")
    )
    func containerConnectionsArriveWithTheirContainersTags() async throws {
        let intake = try FakeIntake(.status(202))
        // eBPF mode: both ends keep their owner however short the connection.
        let agent = try Self.agent(intake, ["DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "false"])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        #expect(try await agent.json("/status")["mode"] as? String == "ebpf")

        let pair = try await ContainerPair.start(prefix: "cnm-in", size: 77_777)
        defer { pair.remove() }
        let (serverID, clientID, size) = (pair.serverID, pair.clientID, pair.size)
        typealias Entry = (
            message: Datadog_ProcessAgent_CollectorConnections, connection: Datadog_ProcessAgent_Connection
        )
        let (outgoing, incoming) = try await waitFor(
            "both containers' ends closed at the intake", timeout: .seconds(30)
        ) {
            () -> ([Entry], [Entry])? in
            let all: [Entry] = Self.connections(intake.accepted).map { (message: $0.0, connection: $0.1) }
            let out = all.filter { $0.connection.laddr.containerID == clientID && $0.connection.raddr.port == 8080 }
            let inc = all.filter { $0.connection.laddr.containerID == serverID && $0.connection.laddr.port == 8080 }
            let closed = { (list: [Entry]) in list.map { $0.connection.lastTcpClosed }.reduce(0, +) >= 1 }
            return closed(out) && closed(inc) ? (out, inc) : nil
        }
        #expect(try await pair.delivered() == size, "ground truth: the server read every byte")
        #expect(outgoing.map { $0.connection.lastBytesSent }.reduce(0, +) == UInt64(size))
        #expect(incoming.map { $0.connection.lastBytesReceived }.reduce(0, +) == UInt64(size))
        for (entries, id, name) in [(outgoing, clientID, pair.clientName), (incoming, serverID, pair.serverName)] {
            for (message, c) in entries {
                let tags = TagEncoder.decode(Array(message.encodedConnectionsTags), index: c.tagsIdx) ?? []
                for tag in ["container_name:\(name)", "container_id:\(id)", "image_name:cnm-test/busybox", "team:cnm"] {
                    #expect(tags.contains(tag), "\(tag) in \(tags)")
                }
                #expect(c.pid != 0 && message.containerForPid[c.pid] == id, "pid \(c.pid): \(message.containerForPid)")
            }
        }
        #expect(
            outgoing.contains { $0.connection.raddr.containerID == serverID && $0.connection.direction == .outgoing })
        #expect(
            incoming.contains { $0.connection.raddr.containerID == clientID && $0.connection.direction == .incoming })
    }

    /// An intake behind a self-signed certificate: refused while TLS is verified (the failure in `/status`,
    /// retried, nothing counted as sent), reached with `DD_SKIP_SSL_VALIDATION=true`.
    @Test(
        .enabled(
            if: ["/usr/bin/openssl", "/usr/bin/python3"].allSatisfy(FileManager.default.isExecutableFile),
            "needs openssl and python3"))
    func tlsIsVerifiedUnlessTurnedOff() async throws {
        let directory = NSTemporaryDirectory() + "cnm-tls-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let made = try Environment.run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
            ])
        #expect(made.status == 0, "\(made.output)")
        // Debian's python3 itself, not a wrapper that could outlive terminate().
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = [
            Environment.root.appendingPathComponent("scripts/tls-intake.py").path,
            directory + "/cert.pem", directory + "/key.pem",
        ]
        let output = Pipe()
        server.standardOutput = output
        server.standardError = FileHandle.nullDevice
        let lines = Mutex<[String]>([])
        output.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            lines.withLock { $0 += text.split(separator: "\n").map(String.init) }
        }
        try server.run()
        defer {
            // SIGKILL: the test runner's threads block SIGTERM, and a child inherits that mask.
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
            output.fileHandleForReading.readabilityHandler = nil
        }
        let port = try await waitFor("the HTTPS intake's port") { lines.withLock { $0.first.flatMap(Int.init) } }
        let url = "https://127.0.0.1:\(port)"
        // Connections to ship while the agents run.
        let (listener, flows) = try Self.openFlows([(1_000, 1_000)])
        defer {
            try? Self.close(flows)
            Glibc.close(listener)
        }

        let verifying = try Self.agent(
            FakeIntake(.status(202)), ["DD_PROCESS_CONFIG_PROCESS_DD_URL": url, "DD_FORWARDER_BACKOFF_BASE": "0.1"])
        defer { verifying.stop() }
        try await verifying.waitUntilHealthy()
        let refused = try await waitFor("the certificate refused") { () async throws -> [String: Any]? in
            let status = try await verifying.json("/status")["intake"] as? [String: Any] ?? [:]
            return status.int("retried") >= 2 ? status : nil
        }
        verifying.stop()
        let error = (refused["last_error"] as? String ?? "").lowercased()
        #expect(error.contains("certificate") || error.contains("ssl"), "last_error: \(error)")
        #expect(refused.int("sent") == 0)
        #expect(lines.withLock { $0.dropFirst().isEmpty }, "nothing may reach an unverified intake")

        let skipping = try Self.agent(
            FakeIntake(.status(202)), ["DD_PROCESS_CONFIG_PROCESS_DD_URL": url, "DD_SKIP_SSL_VALIDATION": "true"])
        defer { skipping.stop() }
        try await skipping.waitUntilHealthy()
        let accepted = try await waitFor("a message accepted over TLS") { () async throws -> [String: Any]? in
            let status = try await skipping.json("/status")["intake"] as? [String: Any] ?? [:]
            return status.int("sent") >= 1 ? status : nil
        }
        #expect(accepted.int("sent") >= 1)
        // The intake read our framing: version 3, zstd protobuf, type 22 (0x16).
        let posts = lines.withLock { $0.dropFirst().filter { $0.hasPrefix("POST /api/v1/connections ") } }
        #expect(!posts.isEmpty && posts.allSatisfy { $0.hasSuffix(" 030216") }, "\(posts)")
    }

    /// One captured body read by other tools: the zstd command and protoc, against our .proto.
    @Test(
        .enabled(if: IntakeTests.hasIndependentDecoder, "needs zstd and grpcio-tools in .build/python: make test-deps"))
    func aCapturedBodyDecodesWithZstdAndProtoc() async throws {
        let intake = try FakeIntake(.status(200))
        let agent = try Self.agent(intake)
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        _ = try await Self.workload([(4_242, 2_424)], agent: agent)
        let body = try await waitFor("a message with connections") {
            intake.accepted.first { ($0.decoded?.connections.count ?? 0) > 0 }?.body
        }
        let directory = NSTemporaryDirectory() + "cnm-intake-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let compressed = directory + "/body.zst"
        try Data(body.dropFirst(16)).write(to: URL(fileURLWithPath: compressed))
        let unzipped = try Environment.run(
            "/usr/bin/zstd", ["-d", "-q", "-f", compressed, "-o", directory + "/body.pb"])
        #expect(unzipped.status == 0, "\(unzipped.output)")

        // protoc reads the message on standard input: run it through a shell for the redirection.
        let python = Environment.root.appendingPathComponent(".build/python/bin/python3").path
        let proto = Environment.root.appendingPathComponent("proto").path
        let decoded = try Environment.run(
            "/bin/sh",
            [
                "-c",
                "'\(python)' -m grpc_tools.protoc --decode datadog.process_agent.CollectorConnections -I '\(proto)' cnm_connections.proto < '\(directory)/body.pb'",
            ]
        )
        #expect(decoded.status == 0, "\(decoded.output)")
        for field in [
            "hostName: \"intake-test-host\"", "connections {", "laddr {", "ip: \"127.0.0.1\"", "lastBytesSent:",
            "groupId:", "groupSize: 1", "encodedConnectionsTags:", "kernelVersion:", "direction: outgoing",
        ] {
            #expect(decoded.output.contains(field), "\(field) missing in:\n\(decoded.output.prefix(3000))")
        }
    }

    /// 500s, then silence, then a closed port, then recovery: what fit in the queue arrives exactly once,
    /// the oldest of what did not is dropped and counted; then a 403 and a 400 are said clearly.
    @Test func outagesLoseOnlyWhatOverflowsTheQueue() async throws {
        let intake = try FakeIntake(.status(500))
        let agent = try Self.agent(
            intake,
            [
                "DD_FORWARDER_TIMEOUT": "1", "DD_FORWARDER_BACKOFF_BASE": "0.1", "DD_FORWARDER_BACKOFF_MAX": "0.4",
                "DD_PROCESS_CONFIG_QUEUE_SIZE": "3", "DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE": "50",
            ])
        defer { agent.stop() }
        try await agent.waitUntilHealthy()
        func intakeStatus() async throws -> [String: Any] {
            try #require(try await agent.json("/status")["intake"] as? [String: Any])
        }

        _ = try await waitFor("three 500s") { intake.requests.filter { $0.answered == 500 }.count >= 3 ? true : nil }
        let firstFailing = try #require(intake.requests.first?.decoded?.groupID)
        intake.set(.hang)
        _ = try await waitFor("two requests left unanswered") {
            intake.requests.filter { $0.answered == nil }.count >= 2 ? true : nil
        }
        intake.closePort()
        let retriedAtClose = try await intakeStatus().int("retried")
        _ = try await waitFor("refused connections to overflow the queue") {
            let s = try await intakeStatus()
            return s.int("retried") >= retriedAtClose + 3 && s.int("dropped_queue_full") > 0 ? true : nil
        }
        intake.set(.status(202))
        try intake.reopenPort()

        // Recovery: the queue drains and everything the agent counts as sent reached the intake.
        let recoveredAfter = try await agent.latestSequence()
        _ = try await waitFor("the queue to drain after recovery") {
            let s = try await intakeStatus()
            let fresh = intake.accepted.contains { ($0.decoded?.groupID ?? 0) > Int32(recoveredAfter) }
            return s.int("queue_depth") == 0 && fresh && s.int("sent") == intake.accepted.count ? true : nil
        }
        let status = try await intakeStatus()
        #expect(status["last_error"] is String)
        #expect(agent.log.contains("intake unavailable, retrying with backoff"))
        #expect(agent.log.contains("intake queue full: dropped the oldest intervals"))

        // Exactly once: no body accepted twice, and every group that arrived arrived whole.
        let accepted = intake.accepted
        let keys = accepted.map { "\($0.decoded?.groupID ?? -1):\($0.body.hashValue)" }
        #expect(Set(keys).count == keys.count, "a message was delivered twice")
        let messages = accepted.compactMap(\.decoded)
        let groups = Dictionary(grouping: messages, by: \.groupID)
        let newest = groups.keys.max() ?? 0
        for (group, members) in groups where group < newest {
            #expect(members.count == Int(members[0].groupSize), "group \(group) arrived incomplete")
        }
        // The interval in flight when the intake failed was kept and delivered.
        #expect(groups[firstFailing] != nil)

        // What is missing is exactly what the queue dropped, all of it from one run of intervals,
        // older than the intervals kept: the agent's retained reports say which intervals had messages.
        let intervals = try await agent.intervals(after: 0).filter { !$0.1.isEmpty && $0.0 < UInt64(newest) }
        let retainedFrom = try #require(intervals.map(\.0).min())
        #expect(retainedFrom <= UInt64(firstFailing), "the agent no longer holds the intervals of the outage")
        let missing = intervals.filter { groups[Int32($0.0)] == nil }
        let missingMessages = missing.map { ($0.1.count + 49) / 50 }.reduce(0, +)
        #expect(!missing.isEmpty)
        #expect(missingMessages == status.int("dropped_queue_full"), "missing \(missing.map(\.0))")
        #expect(status.int("dropped") == status.int("dropped_queue_full"))
        let order = intervals.map(\.0)
        if let first = missing.first.flatMap({ m in order.firstIndex(of: m.0) }) {
            #expect(Array(order[first..<first + missing.count]) == missing.map(\.0), "drops are not one run")
            #expect(UInt64(firstFailing) < missing[0].0, "the interval in flight is never the one dropped")
        }

        // A rejected key is said once, clearly; another 4xx drops the message and says why.
        intake.set(.status(403))
        _ = try await waitFor("three 403s") { intake.requests.filter { $0.answered == 403 }.count >= 3 ? true : nil }
        let rejection = "Datadog rejected the API key ending in abcd: 127.0.0.1:\(intake.port) answered 403 Forbidden"
        _ = try await waitFor("the 403 in the log") { agent.log.contains(rejection) ? true : nil }
        #expect(agent.log.components(separatedBy: "rejected the API key").count == 2, "said once")
        intake.set(.status(400))
        _ = try await waitFor("the 400 in the log") {
            agent.log.contains("intake refused a message, dropped it") && agent.log.contains("HTTP 400") ? true : nil
        }
        let final = try await intakeStatus()
        #expect(final.int("dropped") >= status.int("dropped") + 4)
        #expect(!agent.log.contains(Self.apiKey), "the API key must never be logged")
    }
}
