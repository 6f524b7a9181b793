// What eBPF mode's user space spends per closed connection (`make bench-collection-cost`): each
// closed flow's ring-buffer record decoded, folded into the interval, and grouped into the report,
// as the collector does, for `closed flows` short loopback connections (both ends, so two records
// each) a run. Prints the median thread CPU per closed connection over `runs` runs; under callgrind
// (`valgrind --tool=callgrind --collect-atstart=no --toggle-collect=cnm_collection_round`) the
// instruction count of two sizes gives instructions per closed connection, which is stable on a
// shared machine where CPU time is not.
import CNMBPF
import CNMModel
import Glibc

let closedFlows = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 10_000 : 10_000
let runs = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 5 : 5

func threadCPUNanoseconds() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
}

/// Records as the programs write them (`struct cnm_flow_record`): a client end and a server end per
/// connection, closed after 100 bytes each way, in two containers' cgroups.
func ringRecords(connections: Int, round: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: 2 * connections * FlowRecord.ringRecordSize)
    bytes.withUnsafeMutableBytes { raw in
        for i in 0..<connections {
            let port = UInt16(32_768 + (i + round * connections) % 28_000)
            for server in [false, true] {
                let base = (2 * i + (server ? 1 : 0)) * FlowRecord.ringRecordSize
                let r = UnsafeMutableRawBufferPointer(rebasing: raw[base..<base + FlowRecord.ringRecordSize])
                func put<T>(_ value: T, at offset: Int) { r.storeBytes(of: value, toByteOffset: offset, as: T.self) }
                put(UInt64(0xFFFF_8880_0000_0000) + UInt64(2 * i + (server ? 1 : 0)) * 2048, at: 0)  // key.sk
                put(UInt32(0x0100_007F), at: 32)  // saddr 127.0.0.1
                put(UInt32(0x0100_007F), at: 48)  // daddr
                put(server ? 8080 : port, at: 64)  // sport
                put(server ? port : 8080, at: 66)  // dport
                put(UInt8(4), at: 68)  // family
                put(UInt8(6), at: 69)  // TCP
                put(UInt8(server ? 2 : 1), at: 70)  // direction
                put(UInt8(7), at: 71)  // TCP_CLOSE
                put(UInt64(4_026_531_840), at: 72)  // netns
                put(UInt64(server ? 9001 : 9002), at: 80)  // cgroup id
                put(UInt64(100_000 + i), at: 88)  // inode
                put(UInt64(1_000_000_000 + round), at: 96)  // first_ns
                put(UInt64(100), at: 104)  // bytes_sent (hooks)
                put(UInt64(100), at: 112)  // bytes_received
                put(UInt64(3), at: 120)
                put(UInt64(3), at: 128)
                put(UInt64(100), at: 136)  // tcp_bytes_sent
                put(UInt64(101), at: 144)  // tcp_bytes_received, with the FIN
                put(UInt32(5), at: 152)
                put(UInt32(5), at: 156)
                put(UInt32(40), at: 164)  // srtt
                put(UInt32(10), at: 168)
                put(UInt32(server ? 1_000 : 2_000 + i % 400), at: 192)  // pid
                put(UInt32(0b1_1111), at: 196)  // established, closed, born watched, FIN received, tracked
                let comm = Array((server ? "nginx" : "load-client").utf8)
                for (j, c) in comm.enumerated() { put(c, at: 200 + j) }
            }
        }
    }
    return bytes
}

/// The containers of the two cgroups, as the collector keeps them (`Generations`, one cgroup-name
/// read per new cgroup).
var containerByCgroup = Generations<UInt64, String?>()
containerByCgroup.set(String(repeating: "ab", count: 32), for: 9001)
containerByCgroup.set(String(repeating: "cd", count: 32), for: 9002)

var tracker = FlowTracker(hooksCountTCPBytes: true)
tracker.apply(open: [], closed: [], complete: [4_026_531_840], baseline: true, now: 1)
_ = tracker.flush()
/// One run: each record decoded, given its container and folded in, as the ring buffer's reader
/// does, then the interval flushed and grouped. Its own symbol, so that callgrind counts only it
/// (`--toggle-collect=cnm_collection_round`), not the records' making.
@inline(never) @_silgen_name("cnm_collection_round")
func collectionRound(
    _ ring: [UInt8], _ tracker: inout FlowTracker, _ containerByCgroup: inout Generations<UInt64, String?>
) -> Int {
    ring.withUnsafeBytes { raw in
        for offset in stride(from: 0, to: raw.count, by: FlowRecord.ringRecordSize) {
            var record = FlowRecord(
                ringRecord: UnsafeRawBufferPointer(rebasing: raw[offset..<offset + FlowRecord.ringRecordSize]))
            if let known = containerByCgroup.refresh(record.cgroupID) { record.containerID = known }
            tracker.observe(closed: record, now: 2_000_000_000)
        }
    }
    let connections = tracker.flush()
    containerByCgroup.advance()
    return connections.count
}

var times: [Int64] = []
var reported = 0
for round in 0..<runs {
    let ring = ringRecords(connections: closedFlows, round: round)
    let start = threadCPUNanoseconds()
    reported = collectionRound(ring, &tracker, &containerByCgroup)
    times.append(threadCPUNanoseconds() - start)
}
let median = times.sorted()[times.count / 2]
print("closed flows: \(closedFlows)")
print(
    "per closed connection (two records): \(median / Int64(closedFlows)) ns median thread CPU of \(runs) runs;"
        + " \(reported) connections reported a run")
