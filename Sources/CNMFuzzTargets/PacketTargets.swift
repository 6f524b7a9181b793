import CNMModel
import CNMPacket

extension FuzzTargets {
    /// Packets as capture hands them over, recorded in a small `WireFlowTable` that is then read out,
    /// and what it hands over taken in by a `ConnectionTracker` watching that namespace, one pass per
    /// hand-over, with an interval flushed at the end.
    ///
    /// Input: records of `control, wire length (2 bytes, big-endian), n, n bytes from the IP header on`.
    /// Bits 0-1 of `control`: 0 sent, 1 received, 2 loopback, 3 no packet but a hand-over of what ended
    /// so far (then no other field follows); bits 2-7: tenths of a second since the previous record.
    ///
    /// Checks that a payload length stays within what the IP length fields can say, that the table holds
    /// no more flows than it may, and that every packet it took in is in exactly one flow read out.
    public static func packetFlows(_ input: [UInt8]) {
        let maxFlows = 8
        var table = WireFlowTable(maxFlows: maxFlows)
        var reader = ByteReader(input)
        var time: Int64 = 1_700_000_000_000_000_000
        var recorded: UInt64 = 0
        var handedOver: UInt64 = 0
        var tookEarly = false
        let netns: UInt64 = 4_026_531_840
        var tracker = ConnectionTracker(maxTracked: maxFlows)
        tracker.capturedNamespace = netns
        func handOver(completeReadStart: Int64?, now: Int64) -> UInt64 {
            let ended = table.takeEnded(completeReadStart: completeReadStart, now: now)
            let datagrams = table.takeDatagrams(now: now)
            tracker.apply(
                Poll(dumps: [netns: []], readWindows: [netns: now...now]),
                captured: CapturedTraffic(netns: netns, ended: ended, datagrams: datagrams))
            return (ended + datagrams).reduce(0) { $0 + $1.a.sent.packets + $1.b.sent.packets }
        }
        while let control = reader.byte() {
            time += Int64(control >> 2) * 100_000_000
            let way: PacketWay
            switch control & 3 {
            case 0: way = .sent
            case 1: way = .received
            case 2: way = .loopback
            default:
                handedOver += handOver(completeReadStart: nil, now: time)
                tookEarly = true
                continue
            }
            guard let high = reader.byte(), let low = reader.byte(), let count = reader.byte() else { break }
            let wireLength = Int(high) << 8 | Int(low)
            let packet = reader.bytes(Int(count))
            guard let headers = withExactBytes(packet, { PacketHeaders(networkLayer: $0, wireLength: wireLength) })
            else { continue }
            // The IPv6 payload length field plus the fixed header is the most an IP length can say.
            invariant(
                Int(headers.payloadLength) <= max(wireLength, 65_535 + 40),
                "payload of \(headers.payloadLength) bytes in a packet of \(wireLength)")
            table.record(headers, way: way, at: time)
            recorded += 1
            invariant(table.count <= maxFlows, "\(table.count) flows in a table of \(maxFlows)")
        }
        invariant(table.health.packets == recorded, "\(table.health.packets) packets counted, \(recorded) recorded")
        // A complete read after the last packet that listed no socket ends every TCP connection.
        let read = time + 1_000_000_000
        handedOver += handOver(completeReadStart: read, now: read)
        _ = tracker.flush()
        let followed = recorded - table.health.tableFull
        // A packet for a connection already handed over is late and not counted again.
        invariant(
            tookEarly ? handedOver <= followed : handedOver == followed,
            "\(handedOver) packets handed over of \(followed) followed")
    }
}
