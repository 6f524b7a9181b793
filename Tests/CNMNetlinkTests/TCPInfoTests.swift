import CNMModel
import CNMNetlink
import Testing

@Suite struct TCPInfoTests {
    /// The flat `"name": number` pairs of an expected-values JSON file (exact to 64 bits, which JSON parsers
    /// going through Double are not).
    static func numbers(inJSON text: String) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "\"") {
            let afterOpen = rest.index(after: open)
            guard let close = rest[afterOpen...].firstIndex(of: "\"") else { break }
            let key = String(rest[afterOpen..<close])
            rest = rest[rest.index(after: close)...].drop(while: { $0 == ":" || $0 == " " })
            if rest.first == "\"" {  // a string value: skip it whole, commas and all
                rest = rest.dropFirst().drop(while: { $0 != "\"" }).dropFirst()
                continue
            }
            let digits = rest.prefix(while: \.isNumber)
            if !digits.isEmpty, let value = UInt64(digits) { out[key] = value }
            rest = rest.drop(while: { $0 != "," && $0 != "}" })
        }
        return out
    }

    @Test func decodesTheVishvanandaFixtureFieldByField() throws {
        let path = fixturePath("netlink/vishvananda/tcp_info_232.bin")
        let bytes = try #require(readFile(path), "fixture missing: \(path) (CI has ../shared beside the checkout)")
        let jsonBytes = try #require(
            readFile(fixturePath("netlink/vishvananda/tcp_info_232.expected.json")),
            "fixture missing: tcp_info_232.expected.json")
        var expected = Self.numbers(inJSON: String(decoding: jsonBytes, as: UTF8.self))
        #expect(bytes.count == 232)
        #expect(expected.count == 34)

        // The published values were decoded by vishvananda/netlink, which takes tcpi_snd_wscale from the high nibble
        // and app_limited from bit 7. The C ABI (GCC/Clang, little-endian) puts the first bit-field in the low bits:
        // byte 6 is 0x78, so snd_wscale 8 and rcv_wscale 7, and byte 7 is 0x01, so app_limited is set. The
        // real-kernel test `windowScaleNibbles` confirms this order against a socket whose scales are known.
        #expect(expected["snd_wscale"] == 7 && expected["rcv_wscale"] == 8)
        expected["snd_wscale"] = 8
        expected["rcv_wscale"] = 7

        let info = TCPInfo(bytes)
        #expect(info.length == 232)
        #expect(info.deliveryRateAppLimited == true)
        #expect(info.fastopenClientFail == 0)
        // Every field: the published value, or 0 where the JSON leaves it out (Go's omitempty).
        let fields: [(String, UInt64?)] = [
            ("state", info.state.map(UInt64.init)), ("ca_state", info.caState.map(UInt64.init)),
            ("retransmits", info.retransmits.map(UInt64.init)), ("probes", info.probes.map(UInt64.init)),
            ("backoff", info.backoff.map(UInt64.init)), ("options", info.options.map(UInt64.init)),
            ("snd_wscale", info.sndWscale.map(UInt64.init)), ("rcv_wscale", info.rcvWscale.map(UInt64.init)),
            ("rto", info.rto.map(UInt64.init)), ("ato", info.ato.map(UInt64.init)),
            ("snd_mss", info.sndMss.map(UInt64.init)), ("rcv_mss", info.rcvMss.map(UInt64.init)),
            ("unacked", info.unacked.map(UInt64.init)), ("sacked", info.sacked.map(UInt64.init)),
            ("lost", info.lost.map(UInt64.init)), ("retrans", info.retrans.map(UInt64.init)),
            ("fackets", info.fackets.map(UInt64.init)), ("last_data_sent", info.lastDataSent.map(UInt64.init)),
            ("last_ack_sent", info.lastAckSent.map(UInt64.init)),
            ("last_data_recv", info.lastDataRecv.map(UInt64.init)),
            ("last_ack_recv", info.lastAckRecv.map(UInt64.init)), ("pmtu", info.pmtu.map(UInt64.init)),
            ("rcv_ssthresh", info.rcvSsthresh.map(UInt64.init)), ("rtt", info.rtt.map(UInt64.init)),
            ("rttvar", info.rttvar.map(UInt64.init)), ("snd_ssthresh", info.sndSsthresh.map(UInt64.init)),
            ("snd_cwnd", info.sndCwnd.map(UInt64.init)), ("advmss", info.advmss.map(UInt64.init)),
            ("reordering", info.reordering.map(UInt64.init)), ("rcv_rtt", info.rcvRtt.map(UInt64.init)),
            ("rcv_space", info.rcvSpace.map(UInt64.init)), ("total_retrans", info.totalRetrans.map(UInt64.init)),
            ("pacing_rate", info.pacingRate), ("max_pacing_rate", info.maxPacingRate), ("bytes_acked", info.bytesAcked),
            ("bytes_received", info.bytesReceived), ("segs_out", info.segsOut.map(UInt64.init)),
            ("segs_in", info.segsIn.map(UInt64.init)), ("notsent_bytes", info.notsentBytes.map(UInt64.init)),
            ("min_rtt", info.minRtt.map(UInt64.init)), ("data_segs_in", info.dataSegsIn.map(UInt64.init)),
            ("data_segs_out", info.dataSegsOut.map(UInt64.init)), ("delivery_rate", info.deliveryRate),
            ("busy_time", info.busyTime), ("rwnd_limited", info.rwndLimited), ("sndbuf_limited", info.sndbufLimited),
            ("delivered", info.delivered.map(UInt64.init)), ("delivered_ce", info.deliveredCe.map(UInt64.init)),
            ("bytes_sent", info.bytesSent), ("bytes_retrans", info.bytesRetrans),
            ("dsack_dups", info.dsackDups.map(UInt64.init)), ("reord_seen", info.reordSeen.map(UInt64.init)),
            ("rcv_ooopack", info.rcvOoopack.map(UInt64.init)), ("snd_wnd", info.sndWnd.map(UInt64.init)),
        ]
        for (name, value) in fields {
            #expect(value == expected[name] ?? 0, "\(name)")
        }
        #expect(
            Set(expected.keys).isSubset(of: fields.map(\.0)), "a published field this test does not check"
        )

        #expect(
            info.counters
                == SocketCounters(
                    bytesSent: 10908, bytesReceived: 6804, packetsSent: 181, packetsReceived: 95, retransmits: 0,
                    reorderingSeen: expected["reord_seen"] ?? 0, outOfOrderReceived: expected["rcv_ooopack"] ?? 0,
                    deliveredCE: expected["delivered_ce"] ?? 0))
        // 232 bytes end with tcpi_snd_wnd: no retransmission timeout count (Linux 6.7+) to read.
        #expect(info.totalRTO == nil)
        #expect(info.rcvWnd == nil)
    }

    /// The fields past the system headers' struct, at the offsets of the 6.7+ UAPI, and the ECN option bit.
    @Test func theTCPQualityCountersOfNewerKernels() {
        var bytes = [UInt8](repeating: 0, count: 280)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) {
                bytes.replaceSubrange(offset..<(offset + MemoryLayout<T>.size), with: $0)
            }
        }
        bytes[5] = 8 | 4  // tcpi_options: TCPI_OPT_ECN | TCPI_OPT_WSCALE
        put(UInt32(11), at: 196)  // tcpi_delivered_ce
        put(UInt32(3), at: 220)  // tcpi_reord_seen
        put(UInt32(17), at: 224)  // tcpi_rcv_ooopack
        put(UInt32(65535), at: 232)  // tcpi_rcv_wnd
        put(UInt16(5), at: 240)  // tcpi_total_rto
        put(UInt16(2), at: 242)  // tcpi_total_rto_recoveries
        put(UInt32(1400), at: 244)  // tcpi_total_rto_time
        let info = TCPInfo(bytes)
        #expect(info.ecnNegotiated == true)
        #expect(info.rcvWnd == 65535)
        #expect(info.totalRTO == 5 && info.totalRTORecoveries == 2 && info.totalRTOTime == 1400)
        let counters = info.counters
        #expect(counters?.rtoCount == 5)
        #expect(counters?.reorderingSeen == 3)
        #expect(counters?.outOfOrderReceived == 17)
        #expect(counters?.deliveredCE == 11)

        bytes[5] = 4
        #expect(TCPInfo(bytes).ecnNegotiated == false)
        // Cut inside tcpi_total_rto: the count is absent, not garbage.
        #expect(TCPInfo(Array(bytes[..<241])).totalRTO == nil)
        #expect(TCPInfo(Array(bytes[..<241])).counters?.rtoCount == 0)
    }

    @Test func aShortStructHasNoNewerFields() throws {
        let bytes = try #require(readFile(fixturePath("netlink/vishvananda/tcp_info_232.bin")), "fixture missing")
        // 104 bytes end with tcpi_total_retrans, the struct of the oldest kernels.
        let info = TCPInfo(Array(bytes[..<104]))
        #expect(info.length == 104)
        #expect(info.rtt == 48719)
        #expect(info.rttvar == 1287)
        #expect(info.totalRetrans == 0)
        #expect(info.pacingRate == nil)
        #expect(info.bytesAcked == nil)
        #expect(info.bytesReceived == nil)
        #expect(info.bytesSent == nil)
        #expect(info.sndWnd == nil)
        #expect(info.counters == nil)
    }

    @Test func aFieldCutInTheMiddleIsAbsent() throws {
        let bytes = try #require(readFile(fixturePath("netlink/vishvananda/tcp_info_232.bin")), "fixture missing")
        let info = TCPInfo(Array(bytes[..<(68 + 3)]))  // 3 of tcpi_rtt's 4 bytes
        #expect(info.rcvSsthresh == 64088)
        #expect(info.rtt == nil)
        #expect(TCPInfo([]).state == nil)
    }

    @Test func beforeBytesSentItFallsBackToBytesAcked() throws {
        let bytes = try #require(readFile(fixturePath("netlink/vishvananda/tcp_info_232.bin")), "fixture missing")
        // 200 bytes end before tcpi_bytes_sent (kernels before 4.19).
        let info = TCPInfo(Array(bytes[..<200]))
        #expect(info.bytesSent == nil)
        #expect(info.delivered == 90)
        #expect(info.counters?.bytesSent == 10909 - 1)  // bytes_acked minus the SYN
        #expect(info.counters?.bytesReceived == 6804)
    }

    @Test func retransmittedBytesAreNotCountedTwice() {
        var bytes = [UInt8](repeating: 0, count: 232)
        func put(_ value: UInt64, at offset: Int) {
            withUnsafeBytes(of: value) { bytes.replaceSubrange(offset..<(offset + 8), with: $0) }
        }
        put(5000, at: 200)  // tcpi_bytes_sent
        put(1200, at: 208)  // tcpi_bytes_retrans
        #expect(TCPInfo(bytes).counters?.bytesSent == 3800)
    }
}
