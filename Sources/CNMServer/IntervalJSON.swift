import CNMModel
import CNMReport
import FoundationEssentials
import NIOCore

/// The JSON contract of an interval (`/api/v1/connections`, each of `/api/v1/intervals`), written
/// once per interval by `JSONWriter`. Fields may be added; these stay.
enum IntervalJSON {
    /// About what one connection takes, so the buffer is rarely grown while it is written.
    static let bytesPerConnection = 720

    static func encode(_ report: IntervalReport, host: String, mode: AgentStatus.Mode) -> ByteBuffer {
        var w = JSONWriter(capacity: 512 + report.connections.count * bytesPerConnection)
        w.beginObject()
        w.key("host")
        w.string(host)
        w.key("mode")
        w.string(mode.rawValue)
        w.key("sequence")
        w.number(report.sequence)
        w.key("interval_start")
        w.string(formatTimestamp(report.start))
        w.key("interval_end")
        w.string(formatTimestamp(report.end))
        if let arn = report.ecsTaskARN {  // only on Fargate
            w.key("ecs_task_arn")
            w.string(arn)
        }
        w.key("connections")
        w.beginArray()
        // By index: a loop variable would be a copy of each connection, retaining all its strings.
        for i in report.connections.indices { write(report.connections[i], to: &w) }
        w.endArray()
        w.endObject()
        return w.finish()
    }

    static func write(_ c: Connection, to w: inout JSONWriter) {
        let k = c.key
        let s = c.stats
        w.beginObject()
        w.key("type")
        w.string(k.transport.rawValue)
        w.key("family")
        w.string(k.family.rawValue)
        w.key("direction")
        w.string(k.direction.rawValue)
        w.key("intra_host")
        w.bool(c.intraHost)
        w.key("pid")
        if let pid = k.pid { w.number(pid) } else { w.null() }  // null, not absent, when unknown
        w.key("process_name")
        w.string(c.processName)
        w.key("netns")
        w.number(k.netns)
        w.key("laddr")
        write(k.local, containerID: c.localContainerID, to: &w)
        w.key("raddr")
        write(k.remote, containerID: c.remoteContainerID, to: &w)
        w.key("remote_pid")
        if let pid = c.remotePid { w.number(pid) } else { w.null() }
        if c.rolledUp > 1 {  // only on rolled-up rows: how many connections the row sums
            w.key("rolled_up")
            w.number(c.rolledUp)
        }
        w.key("remote_process_name")
        w.string(c.remoteProcessName)
        w.key("bytes_sent")
        w.number(s.bytesSent)
        w.key("bytes_received")
        w.number(s.bytesReceived)
        w.key("packets_sent")
        w.number(s.packetsSent)
        w.key("packets_received")
        w.number(s.packetsReceived)
        w.key("retransmits")
        w.number(s.retransmits)
        w.key("tcp_established")
        w.number(s.tcpEstablished)
        w.key("tcp_closed")
        w.number(s.tcpClosed)
        w.key("tcp_failures")
        w.beginObject()
        for (errno, count) in s.tcpFailures.sorted(by: { $0.key < $1.key }) {
            w.key(String(errno))
            w.number(count)
        }
        w.endObject()
        w.key("rtt_us")
        w.number(s.rttMicros)
        w.key("rtt_var_us")
        w.number(s.rttVarMicros)
        w.key("tcp_rto_count")
        w.number(s.rtoCount)
        w.key("tcp_reord_seen")
        w.number(s.reorderingSeen)
        w.key("tcp_rcv_ooo_pack")
        w.number(s.outOfOrderReceived)
        w.key("tcp_delivered_ce")
        w.number(s.deliveredCE)
        w.key("tcp_ecn_negotiated")
        w.bool(s.ecnNegotiated)
        w.key("counters_known")
        w.bool(c.countersKnown)
        w.key("tags")
        w.strings(c.tags)
        w.key("remote_tags")
        w.strings(c.remoteTags)
        w.endObject()
    }

    static func write(_ endpoint: Endpoint, containerID: String?, to w: inout JSONWriter) {
        w.beginObject()
        w.key("ip")
        write(endpoint.address, to: &w)
        w.key("port")
        w.number(endpoint.port)
        w.key("container_id")
        w.string(containerID)  // null, not absent, when unknown
        w.endObject()
    }

    static func write(_ address: IPAddress, to w: inout JSONWriter) {
        address.withText { w.string(ascii: $0) }
    }
}

/// RFC 3339 in UTC with milliseconds.
func formatTimestamp(_ t: Timestamp) -> String {
    let date = Date(timeIntervalSince1970: Double(t.nanoseconds) / 1e9)
    return date.formatted(
        .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
}
