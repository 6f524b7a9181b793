import CNMModel
import CNMReport
import Foundation
import NIOCore
import Testing

@testable import CNMServer

/// The streaming JSON of an interval, read back by Foundation's parser: what it writes is JSON, and
/// that JSON says what the model says, for strings no one would pick and numbers at their limits.
@Suite struct IntervalJSONTests {
    static func parse(_ buffer: ByteBuffer) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView), options: [.fragmentsAllowed])
    }

    /// Every control character, quotes, backslashes, non-ASCII and a lone solidus come back as written.
    @Test func stringsSurviveEscaping() throws {
        var nasty = (0..<0x20).map { String(UnicodeScalar(UInt8($0))) }
        nasty += ["\"", "\\", "/", "\u{7F}", "é", "名前", "🦀", "\u{2028}", "a\"b\\c\nd", ""]
        nasty.append(nasty.joined())
        for text in nasty {
            var w = JSONWriter()
            w.string(text)
            #expect(try Self.parse(w.finish()) as? String == text, "\(Array(text.utf8))")
        }
    }

    /// The writer hands its bytes on 64 KiB at a time: pieces that cross a chunk's end, and one
    /// longer than a chunk, arrive whole and in order.
    @Test func piecesAcrossAndBeyondAChunk() throws {
        let long = String(repeating: "0123456789\"\\", count: 12_000)  // 144,000 bytes, escaped to 168,000
        let many = (0..<20_000).map { "value-\($0)-\u{1}" }
        var w = JSONWriter()
        w.beginArray()
        w.strings(many)
        w.string(long)
        w.number(UInt64.max)
        w.endArray()
        let parsed = try #require(try Self.parse(w.finish()) as? [Any])
        #expect(parsed.count == 3)
        #expect(parsed[0] as? [String] == many)
        #expect(parsed[1] as? String == long)
        #expect((parsed[2] as? NSNumber)?.uint64Value == UInt64.max)
    }

    /// Strings are checked eight bytes at a time: every ASCII byte, at every place of a word and of
    /// the tail, is escaped or not as it must be.
    @Test func everyASCIIByteAtEveryPlace() throws {
        for byte in 0..<0x80 as Range<UInt8> {
            for place in 0..<19 {
                var utf8 = [UInt8](repeating: UInt8(ascii: "a"), count: 19)
                utf8[place] = byte
                let text = String(decoding: utf8, as: UTF8.self)
                var w = JSONWriter()
                w.string(text)
                let json = w.finish()
                #expect(try Self.parse(json) as? String == text, "byte \(byte) at \(place)")
                let escaped = byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
                #expect(
                    json.readableBytes == 21
                        + (escaped ? (byte < 0x20 && ![8, 9, 10, 12, 13].contains(byte) ? 5 : 1) : 0))
            }
        }
    }

    @Test func numbersAtTheirLimitsAndNesting() throws {
        var w = JSONWriter()
        w.beginObject()
        w.key("u")
        w.number(UInt64.max)
        w.key("i")
        w.number(Int64.min)
        w.key("small")
        w.number(Int32.min)
        w.key("zero")
        w.number(UInt16(0))
        w.key("list")
        w.beginArray()
        w.beginObject()
        w.endObject()
        w.beginArray()
        w.endArray()
        w.null()
        w.bool(true)
        w.bool(false)
        w.endArray()
        w.key("map")
        w.beginObject()
        w.key("key \"quoted\"")
        w.number(7)
        w.endObject()
        w.endObject()
        let buffer = w.finish()
        let text = String(buffer: buffer)
        #expect(
            text
                == #"{"u":18446744073709551615,"i":-9223372036854775808,"small":-2147483648,"zero":0,"#
                + #""list":[{},[],null,true,false],"map":{"key \"quoted\"":7}}"#)
        #expect(try Self.parse(buffer) is [String: Any])
    }

    /// A connection with every field set to something odd, and its JSON read back field by field.
    static func oddConnection(_ seed: UInt64) -> Connection {
        var rng = SplitMix(state: seed)
        func text() -> String {
            let pieces = ["web", "\u{1}", "\"", "\\", "名", " ", "\n", "🦀", ":", "x"]
            return (0..<Int(rng.next() % 6)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined()
        }
        var stats = ConnectionStats()
        stats.bytesSent = rng.next()
        stats.bytesReceived = rng.next() >> 3
        stats.packetsSent = rng.next() % 1000
        stats.packetsReceived = .max
        stats.retransmits = rng.next() % 7
        stats.tcpEstablished = 1
        stats.tcpClosed = rng.next() % 2
        stats.tcpFailures = rng.next() % 2 == 0 ? [:] : [111: 2, 104: 1, 99: .max]
        stats.rttMicros = UInt32(truncatingIfNeeded: rng.next())
        stats.rttVarMicros = .max
        stats.rtoCount = 3
        stats.reorderingSeen = 4
        stats.outOfOrderReceived = 5
        stats.deliveredCE = 6
        stats.ecnNegotiated = rng.next() % 2 == 0
        let v6 = rng.next() % 2 == 0
        var c = Connection(
            key: ConnectionKey(
                transport: rng.next() % 2 == 0 ? .tcp : .udp,
                local: Endpoint(
                    v6 ? .v6(high: rng.next(), low: rng.next()) : .v4(UInt32(truncatingIfNeeded: rng.next())), 0),
                remote: Endpoint(v6 ? .v6(high: 0, low: 1) : .v4(0xFFFF_FFFF), .max),
                netns: rng.next(), pid: rng.next() % 3 == 0 ? nil : Int32.min,
                direction: rng.next() % 2 == 0 ? .outgoing : .incoming),
            stats: stats,
            processName: rng.next() % 3 == 0 ? nil : ProcessName(text()),
            localContainerID: rng.next() % 2 == 0 ? nil : text(),
            remotePid: rng.next() % 2 == 0 ? nil : Int32.max,
            remoteProcessName: rng.next() % 2 == 0 ? nil : ProcessName(text()),
            remoteContainerID: text(),
            intraHost: rng.next() % 2 == 0,
            countersKnown: rng.next() % 2 == 0,
            rolledUp: rng.next() % 2 == 0 ? 1 : Int(rng.next() % 100_000) + 2)
        c.tags = (0..<Int(rng.next() % 4)).map { _ in text() }
        c.remoteTags = ["container_name:" + text()]
        return c
    }

    @Test(arguments: 0..<64 as Range<UInt64>) func everyFieldSaysWhatTheModelSays(seed: UInt64) throws {
        let c = Self.oddConnection(seed)
        let report = IntervalReport(
            sequence: seed, start: Timestamp(nanoseconds: 1_700_000_000_000_000_000),
            end: Timestamp(nanoseconds: 1_700_000_030_500_000_000), connections: [c, c],
            ecsTaskARN: seed % 2 == 0 ? nil : "arn:aws:ecs:us-east-1:123:task/c/\u{1}")
        let object = try #require(
            try Self.parse(IntervalJSON.encode(report, host: "h\"ost", mode: .ebpf)) as? [String: Any])
        #expect(object["host"] as? String == "h\"ost")
        #expect(object["mode"] as? String == "ebpf")
        #expect((object["sequence"] as? NSNumber)?.uint64Value == seed)
        #expect(object["interval_start"] as? String == "2023-11-14T22:13:20.000Z")
        #expect(object["interval_end"] as? String == "2023-11-14T22:13:50.500Z")
        #expect(object["ecs_task_arn"] as? String == report.ecsTaskARN, "absent when not on Fargate")
        let connections = try #require(object["connections"] as? [[String: Any]])
        #expect(connections.count == 2)
        let j = connections[0]
        func u64(_ key: String) -> UInt64? { (j[key] as? NSNumber)?.uint64Value }
        func nullable(_ key: String) -> Any? { j[key] is NSNull ? nil : j[key] }
        #expect(j["type"] as? String == c.key.transport.rawValue)
        #expect(j["family"] as? String == c.key.family.rawValue)
        #expect(j["direction"] as? String == c.key.direction.rawValue)
        #expect(j["intra_host"] as? Bool == c.intraHost)
        #expect(j.keys.contains("pid") && (nullable("pid") as? NSNumber)?.int32Value == c.key.pid)
        #expect(j.keys.contains("process_name") && nullable("process_name") as? String == c.processName?.description)
        #expect(u64("netns") == c.key.netns)
        for (key, endpoint, container) in [
            ("laddr", c.key.local, c.localContainerID), ("raddr", c.key.remote, c.remoteContainerID),
        ] {
            let address = try #require(j[key] as? [String: Any])
            #expect(address["ip"] as? String == endpoint.address.description)
            #expect((address["port"] as? NSNumber)?.uint16Value == endpoint.port)
            #expect(address.keys.contains("container_id"))
            #expect((address["container_id"] is NSNull ? nil : address["container_id"] as? String) == container)
        }
        #expect((nullable("remote_pid") as? NSNumber)?.int32Value == c.remotePid)
        #expect(nullable("remote_process_name") as? String == c.remoteProcessName?.description)
        let s = c.stats
        #expect(u64("bytes_sent") == s.bytesSent)
        #expect(u64("bytes_received") == s.bytesReceived)
        #expect(u64("packets_sent") == s.packetsSent)
        #expect(u64("packets_received") == s.packetsReceived)
        #expect(u64("retransmits") == s.retransmits)
        #expect(u64("tcp_established") == s.tcpEstablished)
        #expect(u64("tcp_closed") == s.tcpClosed)
        let failures = try #require(j["tcp_failures"] as? [String: NSNumber])
        #expect(
            failures.mapValues(\.uint64Value)
                == Dictionary(uniqueKeysWithValues: s.tcpFailures.map { ("\($0.key)", $0.value) }))
        #expect(u64("rtt_us") == UInt64(s.rttMicros))
        #expect(u64("rtt_var_us") == UInt64(s.rttVarMicros))
        #expect(u64("tcp_rto_count") == s.rtoCount)
        #expect(u64("tcp_reord_seen") == s.reorderingSeen)
        #expect(u64("tcp_rcv_ooo_pack") == s.outOfOrderReceived)
        #expect(u64("tcp_delivered_ce") == s.deliveredCE)
        #expect(j["tcp_ecn_negotiated"] as? Bool == s.ecnNegotiated)
        #expect(j["counters_known"] as? Bool == c.countersKnown)
        #expect(j["tags"] as? [String] == c.tags)
        #expect(j["remote_tags"] as? [String] == c.remoteTags)
        // Only rolled-up rows say how many connections they sum.
        #expect((j["rolled_up"] as? NSNumber)?.intValue == (c.rolledUp > 1 ? c.rolledUp : nil))
        #expect(j.count == (c.rolledUp > 1 ? 30 : 29), "a field was added without a test: \(j.keys.sorted())")
    }

    /// Dotted quads written digit by digit match the model's own text for every octet value.
    @Test func ipv4DigitsMatchTheModel() throws {
        for octet in 0...255 as ClosedRange<UInt32> {
            let address = IPAddress.v4(octet << 24 | (255 - octet) << 16 | octet / 3 << 8 | octet % 10)
            var w = JSONWriter()
            IntervalJSON.write(address, to: &w)
            #expect(String(buffer: w.finish()) == "\"\(address)\"")
        }
    }

    static func report(_ sequence: UInt64, connections: Int) -> IntervalReport {
        IntervalReport(
            sequence: sequence, start: Timestamp(nanoseconds: 0), end: Timestamp(nanoseconds: 0),
            connections: (0..<connections).map { _ in oddConnection(sequence) })
    }

    @Test func historyKeepsACountAndABudgetOfBytesButAlwaysTheLatest() throws {
        let byCount = IntervalHistory(retained: 3, maxBytes: .max) { ("h", .ebpf) }
        for sequence in 1...5 as ClosedRange<UInt64> { byCount.receive(Self.report(sequence, connections: 1)) }
        #expect(byCount.intervals(after: 0).map(\.sequence) == [3, 4, 5])
        #expect(byCount.intervals(after: 4).map(\.sequence) == [5])
        #expect(byCount.latest?.sequence == 5)

        let one = IntervalJSON.encode(Self.report(1, connections: 100), host: "h", mode: .ebpf).readableBytes
        let byBytes = IntervalHistory(retained: 16, maxBytes: one * 5 / 2) { ("h", .ebpf) }
        for _ in 0..<4 { byBytes.receive(Self.report(1, connections: 100)) }  // four of the same size
        #expect(byBytes.intervals(after: 0).count == 2)
        #expect(byBytes.bytes <= one * 5 / 2)
        byBytes.receive(Self.report(9, connections: 1000))  // alone bigger than the budget
        #expect(byBytes.intervals(after: 0).map(\.sequence) == [9])
        #expect(byBytes.latest?.connections == 1000)
    }

    /// A codec that halves what it is given (every other byte dropped, the rest kept in a side table),
    /// so the test sees which intervals were compressed and that each is served back as it was.
    final class HalvingCodec: @unchecked Sendable {
        var originals: [[UInt8]: [UInt8]] = [:]
        var compressed = 0
        var failDecompress = false

        var compression: IntervalCompression {
            IntervalCompression(
                compress: { json in
                    let bytes = Array(json.readableBytesView)
                    let half =
                        bytes.enumerated().filter { $0.offset % 2 == 0 }.map(\.element) + [UInt8(self.compressed & 255)]
                    self.originals[half] = bytes
                    self.compressed += 1
                    return half
                },
                decompress: { half, size in
                    guard !self.failDecompress, let original = self.originals[half] else { return nil }
                    return original.count == size ? original : nil
                })
        }
    }

    @Test func intervalsBehindTheLatestAreKeptCompressedAndServedAsTheyWere() throws {
        let codec = HalvingCodec()
        let history = IntervalHistory(retained: 16, maxBytes: .max, compression: codec.compression) { ("h", .ebpf) }
        let plain = (1...4 as ClosedRange<UInt64>).map {
            IntervalJSON.encode(Self.report($0, connections: 50), host: "h", mode: .ebpf)
        }
        for sequence in 1...4 as ClosedRange<UInt64> { history.receive(Self.report(sequence, connections: 50)) }
        let kept = history.intervals(after: 0)
        #expect(kept.map(\.sequence) == [1, 2, 3, 4])
        #expect(kept.map(\.isCompressed) == [true, true, true, false], "the latest is kept as it was written")
        #expect(codec.compressed == 3)
        for (interval, expected) in zip(kept, plain) {
            #expect(String(buffer: history.json(interval)) == String(buffer: expected))
        }
        let stored = kept.map(\.storedBytes).reduce(0, +)
        // Three halves and one whole: five eighths of the four as written (and the codec's marks).
        #expect(history.bytes == stored && stored * 4 < plain.map(\.readableBytes).reduce(0, +) * 3)
        #expect(history.decompressionFailures == 0)

        // Bytes that do not decompress are served as the reason, and counted; the latest is untouched.
        codec.failDecompress = true
        let first = try #require(history.intervals(after: 0).first)
        #expect(String(buffer: history.json(first)).contains("did not decompress"))
        #expect(history.decompressionFailures == 1)
        #expect(String(buffer: history.json(try #require(history.latest))) == String(buffer: plain[3]))
    }
}

/// A small deterministic generator, so a failing seed is the same failure every run.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
