import CNMModel
import CNMReport
import Foundation
import NIOCore
import Testing

@testable import CNMServer

@Suite struct OutputTests {
    func connection(pid: Int32?, bytes: UInt64, name: ProcessName?) -> Connection {
        var stats = ConnectionStats()
        stats.bytesSent = bytes
        stats.bytesReceived = 7
        stats.tcpFailures = [111: 1]
        stats.rttMicros = 1234
        var c = Connection(
            key: ConnectionKey(
                transport: .tcp,
                local: Endpoint(.v4(0x7F00_0001), 40000),
                remote: Endpoint(.v6(high: 0, low: 1), 80),
                netns: 4_026_531_840,
                pid: pid,
                direction: .outgoing
            ),
            stats: stats,
            processName: name
        )
        c.tags = ["container_name:web"]
        return c
    }

    @Test func jsonKeepsTheContract() throws {
        let report = IntervalReport(
            sequence: 3,
            start: Timestamp(nanoseconds: 1_700_000_000_000_000_000),
            end: Timestamp(nanoseconds: 1_700_000_030_500_000_000),
            connections: [connection(pid: nil, bytes: 42, name: nil)]
        )
        let text = String(buffer: IntervalJSON.encode(report, host: "h", mode: .ebpfless))
        #expect(text.contains(#""pid":null"#), "pid is null, not absent, when unknown")
        #expect(text.contains(#""container_id":null"#))
        #expect(text.contains(#""tcp_failures":{"111":1}"#))
        #expect(text.contains(#""interval_start":"2023-11-14T22:13:20.000Z""#))
        #expect(text.contains(#""interval_end":"2023-11-14T22:13:50.500Z""#))
        for key in [
            "\"type\":\"tcp\"", "\"family\":\"v4\"", "\"direction\":\"outgoing\"", "\"intra_host\":false",
            "\"netns\":4026531840", "\"bytes_sent\":42", "\"bytes_received\":7", "\"packets_sent\":0",
            "\"packets_received\":0", "\"retransmits\":0", "\"tcp_established\":0", "\"tcp_closed\":0",
            "\"rtt_us\":1234", "\"rtt_var_us\":0", "\"tags\":[\"container_name:web\"]", "\"remote_tags\":[]",
            "\"ip\":\"::1\"", "\"mode\":\"ebpfless\"", "\"host\":\"h\"",
        ] {
            #expect(text.contains(key), "missing \(key) in \(text)")
        }
    }

    /// Every component of `/status` has the same shape, with stable keys scripts can compare.
    @Test func statusComponentsAreStateReasonAndCounters() throws {
        var status = AgentStatus(
            version: "0", hostname: "h", startedAt: Timestamp(nanoseconds: 0), intervalSeconds: 30, mode: .ebpfless,
            modeReason: "forced")
        status.capture = .init("on", "interfaces lo", counters: ["packets": 12, "ring_dropped": 0])
        status.closedConnections = .init("destroy_notifications", "final counters")
        status.docker = .init("unavailable", "no socket")
        status.ecs = .init("ok", "task t", counters: ["containers": 2])
        let data = try JSONEncoder().encode(
            StatusJSON(s: status, connectionsInLastReport: 0, now: Timestamp(nanoseconds: 1_000_000_000)))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for (key, state) in [
            ("capture", "on"), ("closed_connections", "destroy_notifications"), ("docker", "unavailable"),
            ("docker_events", "starting"), ("ecs", "ok"),
        ] {
            let component = try #require(object[key] as? [String: Any], "\(key) is an object")
            #expect(Set(component.keys) == ["state", "reason", "counters"], "\(key): \(component.keys)")
            #expect(component["state"] as? String == state, "\(key)")
        }
        let counters = (object["capture"] as? [String: Any])?["counters"] as? [String: Any]
        #expect((counters?["packets"] as? NSNumber)?.intValue == 12)
        #expect((((object["ecs"] as? [String: Any])?["counters"] as? [String: Any])?["containers"] as? NSNumber) == 2)
    }

    @Test func tableShowsTheBusiestFirstWithNames() {
        let report = IntervalReport(
            sequence: 1,
            start: Timestamp(nanoseconds: 0),
            end: Timestamp(nanoseconds: 0),
            connections: [
                connection(pid: 9, bytes: 10, name: "small"), connection(pid: 8, bytes: 3 << 20, name: "big"),
            ]
        )
        let lines = TerminalTable.render(report, rows: 1, intervalSeconds: 30).split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[0].contains("2 connections in the last 30 s (busiest 1 shown)"))
        #expect(lines[2].contains("web 127.0.0.1:40000") && lines[2].contains("3.0 MiB"))
        #expect(lines[2].contains("1.23 ms") && lines[2].contains("111×1"))
        #expect(
            TerminalTable.render(
                IntervalReport(sequence: 2, start: .init(nanoseconds: 0), end: .init(nanoseconds: 0), connections: []),
                rows: 5, intervalSeconds: 30) == "── no connections in the last 30 s ──\n")
    }
}
