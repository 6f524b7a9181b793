// What encoding one interval costs, per format, per 10,000 connections (`make bench-encode`).
//
// The interval is what a busy container host reports: IPv4 connections between containers with
// their process names, container ids and seven tags a side. Each format is encoded `runs` times;
// the CPU time of this thread (not wall time: this machine is shared) of the median run is shown.
import CNMIntake
import CNMModel
import CNMReport
import CNMServer
import Foundation
import Glibc

let connections = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 10_000 : 10_000
let runs = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 21 : 21
/// `json` or `intake` measures only that one (for a profile of it).
let only = CommandLine.arguments.count > 3 ? CommandLine.arguments[3] : nil

func threadCPUNanoseconds() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
}

func interval(_ count: Int) -> IntervalReport {
    let services = ["api", "web", "db", "cache", "queue", "auth", "search", "billing"]
    let list = (0..<count).map { i -> Connection in
        let service = services[i % services.count]
        var stats = ConnectionStats()
        stats.bytesSent = UInt64(i) * 1_337
        stats.bytesReceived = UInt64(i) * 7_919
        stats.packetsSent = UInt64(i % 900)
        stats.packetsReceived = UInt64(i % 700)
        stats.retransmits = UInt64(i % 3)
        stats.tcpEstablished = 1
        stats.tcpClosed = UInt64(i % 2)
        if i % 50 == 0 { stats.tcpFailures = [111: 1] }
        stats.rttMicros = UInt32(100 + i % 5_000)
        stats.rttVarMicros = 50
        var c = Connection(
            key: ConnectionKey(
                transport: .tcp,
                local: Endpoint(.v4(0xAC11_0000 | UInt32(i % 250 + 2)), UInt16(32_768 + i % 28_000)),
                remote: Endpoint(.v4(0xAC11_0100 | UInt32(i % 200 + 2)), 5432),
                netns: 4_026_532_000 + UInt64(i % 40), pid: Int32(1_000 + i % 400), direction: .outgoing),
            stats: stats, processName: ProcessName(service), localContainerID: String(repeating: "ab", count: 32),
            remotePid: Int32(2_000 + i % 300), remoteProcessName: "postgres",
            remoteContainerID: String(repeating: "cd", count: 32), intraHost: true)
        c.tags = [
            "container_name:\(service)-\(i % 40)", "image_name:registry.local/\(service)", "image_tag:1.4.2",
            "short_image:\(service)", "container_id:\(String(repeating: "ab", count: 32))",
            "task_family:\(service)", "ecs_cluster_name:production",
        ]
        c.remoteTags = [
            "container_name:db-\(i % 4)", "image_name:postgres", "image_tag:16", "short_image:postgres",
            "container_id:\(String(repeating: "cd", count: 32))", "task_family:db", "ecs_cluster_name:production",
        ]
        return c
    }
    return IntervalReport(
        sequence: 1, start: Timestamp(nanoseconds: 1_700_000_000_000_000_000),
        end: Timestamp(nanoseconds: 1_700_000_030_000_000_000), connections: list)
}

/// The median CPU time of `runs` calls of `body`, and what the last call returned.
func measure(_ body: () throws -> Int) rethrows -> (nanoseconds: Int64, bytes: Int) {
    var times: [Int64] = []
    var bytes = 0
    for _ in 0..<runs {
        let start = threadCPUNanoseconds()
        bytes = try body()
        times.append(threadCPUNanoseconds() - start)
    }
    return (times.sorted()[times.count / 2], bytes)
}

let report = interval(connections)
let history = IntervalHistory(retained: 1) { ("bench-host", .ebpf) }
let host = HostDescription(hostname: "bench-host", hostTags: ["env:bench"])
let json =
    only == "intake"
    ? nil
    : measure {
        history.receive(report)
        return history.bytes
    }
let intake =
    only == "json"
    ? nil
    : try measure {
        let messages = ConnectionsPayload.serializedMessages(
            for: report, host: host, groupID: 1, maxPerMessage: 1_000)
        return try messages.reduce(0) {
            $0 + (try IntakeMessage.encode(serialized: $1, timestampMilliseconds: 0)).count
        }
    }

func row(_ name: String, _ m: (nanoseconds: Int64, bytes: Int)) {
    let per10k = Double(m.nanoseconds) / 1e6 * 10_000 / Double(connections)
    let perConnection = Double(m.nanoseconds) / Double(connections)
    print(
        name.padding(toLength: 34, withPad: " ", startingAt: 0)
            + "\(String(format: "%8.2f", per10k)) ms  \(String(format: "%8.0f", perConnection)) ns  \(m.bytes) bytes")
}
print("encode cost of one interval of \(connections) connections, median CPU of \(runs) runs")
print("format".padding(toLength: 34, withPad: " ", startingAt: 0) + "per 10,000   per connection   output")
if let json { row("API JSON (IntervalJSON)", json) }
if let intake { row("intake (protobuf + zstd, 1,000/msg)", intake) }
