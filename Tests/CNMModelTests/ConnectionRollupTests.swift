import Testing

@testable import CNMModel

@Suite struct ConnectionRollupTests {
    static let second: UInt64 = 1_000_000_000

    static func connection(
        _ direction: ConnectionDirection, localPort: UInt16, remotePort: UInt16, pid: Int32 = 10,
        remote: UInt32 = 0x0A00_0002, lived: UInt64? = 3 * second, bytes: UInt64 = 100, rtt: UInt32 = 0,
        container: String? = "c1", remoteContainer: String? = "db"
    ) -> Connection {
        var stats = ConnectionStats()
        stats.bytesSent = bytes
        stats.bytesReceived = bytes * 3
        stats.packetsSent = 2
        stats.packetsReceived = 3
        stats.retransmits = 1
        stats.tcpEstablished = 1
        stats.tcpClosed = 1
        stats.rttMicros = rtt
        stats.rttVarMicros = rtt / 2
        return Connection(
            key: ConnectionKey(
                transport: .tcp, local: Endpoint(.v4(0x0A00_0001), localPort),
                remote: Endpoint(.v4(remote), remotePort),
                netns: 1, pid: pid, direction: direction),
            stats: stats, processName: "api", localContainerID: container, remotePid: 99,
            remoteProcessName: "postgres", remoteContainerID: remoteContainer, closedLifetimeNanos: lived)
    }

    @Test func shortLivedClientsOfOneServiceBecomeOneRowWithTheirSums() {
        let churn = (0..<1_000).map {
            Self.connection(.outgoing, localPort: UInt16(40_000 + $0), remotePort: 5432, bytes: UInt64($0))
        }
        let (rows, merged) = ConnectionRollup.rollUp(churn)
        #expect(rows.count == 1 && merged == 999)
        let row = rows[0]
        #expect(row.key.local.port == 0, "the client's ephemeral port is zeroed")
        #expect(row.key.remote.port == 5432 && row.key.pid == 10 && row.localContainerID == "c1")
        #expect(row.stats.bytesSent == (0..<1_000).reduce(0, +))
        #expect(row.stats.bytesReceived == 3 * (0..<1_000).reduce(0, +))
        #expect(row.stats.packetsSent == 2_000 && row.stats.packetsReceived == 3_000 && row.stats.retransmits == 1_000)
        #expect(row.stats.tcpEstablished == 1_000 && row.stats.tcpClosed == 1_000)
        #expect(row.remotePid == 99 && row.remoteProcessName == "postgres")
    }

    @Test func anIncomingRollupZeroesTheRemotePort() {
        let clients = (0..<3).map { Self.connection(.incoming, localPort: 80, remotePort: UInt16(50_000 + $0)) }
        let (rows, _) = ConnectionRollup.rollUp(clients)
        #expect(rows.count == 1 && rows[0].key.local.port == 80 && rows[0].key.remote.port == 0)
    }

    @Test func aConnectionAloneKeepsItsPort() {
        let (rows, merged) = ConnectionRollup.rollUp([Self.connection(.outgoing, localPort: 40_001, remotePort: 5432)])
        #expect(merged == 0 && rows[0].key.local.port == 40_001)
    }

    @Test func openLongUnknownAndUndirectedConnectionsStayApart() {
        let kept = [
            Self.connection(.outgoing, localPort: 40_001, remotePort: 5432, lived: nil),  // still open
            Self.connection(.outgoing, localPort: 40_002, remotePort: 5432, lived: nil),
            // Two minutes is not under two minutes.
            Self.connection(.outgoing, localPort: 40_003, remotePort: 5432, lived: 120 * Self.second),
            Self.connection(.outgoing, localPort: 40_004, remotePort: 5432, lived: 600 * Self.second),
            Self.connection(.none, localPort: 40_005, remotePort: 5432),
            Self.connection(.none, localPort: 40_006, remotePort: 5432),
        ]
        let (rows, merged) = ConnectionRollup.rollUp(kept)
        #expect(merged == 0 && rows == kept)
    }

    @Test func differentEndsAreDifferentRows() {
        let ends = [
            Self.connection(.outgoing, localPort: 1, remotePort: 5432),
            Self.connection(.outgoing, localPort: 2, remotePort: 5432, pid: 11),  // another process
            Self.connection(.outgoing, localPort: 3, remotePort: 5432, remote: 0x0A00_0003),  // another server
            Self.connection(.outgoing, localPort: 4, remotePort: 5433),  // another service port
            Self.connection(.outgoing, localPort: 5, remotePort: 5432, container: "c2"),
            Self.connection(.outgoing, localPort: 6, remotePort: 5432, remoteContainer: "db2"),
            Self.connection(.incoming, localPort: 7, remotePort: 5432),
        ]
        // The same ends again from other ephemeral ports: each pair of them is one row.
        let again = ends.map { c -> Connection in
            var c = c
            if c.key.direction == .outgoing { c.key.local.port += 100 } else { c.key.remote.port += 100 }
            return c
        }
        let (rows, merged) = ConnectionRollup.rollUp(ends + again)
        #expect(rows.count == 7 && merged == 7)
    }

    @Test func rttIsAveragedOverTheConnectionsThatMeasuredOne() {
        let (rows, _) = ConnectionRollup.rollUp([
            Self.connection(.outgoing, localPort: 1, remotePort: 5432, rtt: 100),
            Self.connection(.outgoing, localPort: 2, remotePort: 5432, rtt: 0),
            Self.connection(.outgoing, localPort: 3, remotePort: 5432, rtt: 300),
        ])
        #expect(rows[0].stats.rttMicros == 200 && rows[0].stats.rttVarMicros == 100)
    }

    /// Whatever the mix, no count is lost or made: the sums by (process, remote service) are the
    /// same before and after, and only short-lived connections were merged.
    @Test(arguments: 0..<20 as Range<UInt64>) func sumsAreExactForAnyMix(seed: UInt64) {
        var rng = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next(_ bound: UInt64) -> UInt64 {
            rng ^= rng << 13
            rng ^= rng >> 7
            rng ^= rng << 17
            return rng % bound
        }
        let mix = (0..<500).map { _ -> Connection in
            let outgoing = next(2) == 0
            let ephemeral = UInt16(1_024 + next(60_000))
            let service = UInt16(1 + next(3))
            var c = Self.connection(
                outgoing ? .outgoing : .incoming, localPort: outgoing ? ephemeral : service,
                remotePort: outgoing ? service : ephemeral, pid: Int32(next(3)), remote: UInt32(0x0A00_0000 + next(3)),
                lived: next(4) == 0 ? nil : next(200) * Self.second, bytes: next(1 << 40), rtt: UInt32(next(1000)))
            c.stats.tcpFailures = next(5) == 0 ? [111: 1] : [:]
            return c
        }
        let (rows, merged) = ConnectionRollup.rollUp(mix)
        #expect(rows.count + merged == mix.count)
        func sums(_ list: [Connection]) -> [String: [UInt64]] {
            var out: [String: [UInt64]] = [:]
            for c in list {
                let service = c.key.direction == .outgoing ? c.key.remote.port : c.key.local.port
                let key = "\(c.key.pid ?? -1) \(c.key.direction) \(c.key.remote.address) \(service)"
                let s = c.stats
                let now = [
                    s.bytesSent, s.bytesReceived, s.packetsSent, s.packetsReceived, s.retransmits, s.tcpEstablished,
                    s.tcpClosed, s.tcpFailures[111] ?? 0,
                ]
                out[key] = zip(out[key] ?? Array(repeating: 0, count: now.count), now).map { $0 + $1 }
            }
            return out
        }
        #expect(sums(rows) == sums(mix))
        let untouched = mix.filter { !ConnectionRollup.isShortLived($0) }
        #expect(untouched.allSatisfy { c in rows.contains(c) }, "what is not short-lived is reported as it was")
    }
}
