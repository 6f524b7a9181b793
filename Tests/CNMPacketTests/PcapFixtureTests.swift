import CNMModel
import CNMPacket
import Foundation
import Testing

/// `<repo>/../shared/fixtures/netlink/pcap`: small captures from other projects (see SOURCES.md there).
private let pcapFixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("../shared/fixtures/netlink/pcap").standardizedFileURL

/// The packets of a classic little-endian pcap file, from their network header on.
struct PcapFile {
    struct Record {
        var time: Int64
        var network: [UInt8]
        var wireLength: Int
    }

    var records: [Record] = []

    init(_ name: String) throws {
        let data = [UInt8](try Data(contentsOf: pcapFixtures.appendingPathComponent(name)))
        func le32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(data[at + $1]) << (8 * UInt32($1)) } }
        guard data.count >= 24, le32(0) == 0xA1B2_C3D4 else { throw PcapError("\(name): not a little-endian pcap") }
        // DLT_NULL: a 4-byte address family before the IP header; DLT_EN10MB: a 14-byte Ethernet header.
        let linkHeader: Int
        switch le32(20) {
        case 0: linkHeader = 4
        case 1: linkHeader = 14
        case let other: throw PcapError("\(name): link type \(other)")
        }
        var offset = 24
        while offset + 16 <= data.count {
            let seconds = Int64(le32(offset))
            let micros = Int64(le32(offset + 4))
            let captured = Int(le32(offset + 8))
            let original = Int(le32(offset + 12))
            let start = offset + 16 + linkHeader
            records.append(
                Record(
                    time: seconds * 1_000_000_000 + micros * 1_000,
                    network: Array(data[start..<(offset + 16 + captured)]),
                    wireLength: original - linkHeader))
            offset += 16 + captured
        }
    }

    func headers() -> [(time: Int64, headers: PacketHeaders?)] {
        records.map { r in
            (r.time, r.network.withUnsafeBytes { PacketHeaders(networkLayer: $0, wireLength: r.wireLength) })
        }
    }
}

struct PcapError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

@Suite struct PcapFixtureTests {
    /// gopacket's loopback capture: an HTTP connection already open (met mid-stream) and a new one
    /// that only completes its handshake, over IPv6 on `lo`.
    @Test func loopbackCapture() throws {
        let packets = try PcapFile("gopacket-test_loopback.pcap").headers()
        #expect(packets.count == 24)
        var table = WireFlowTable(maxFlows: 16)
        for (time, headers) in packets {
            table.record(try #require(headers), way: .loopback, at: time)
        }
        let last = try #require(packets.last?.time)
        // A complete read after the last packet that lists neither: both connections are over.
        let read = last + 1_000_000_000
        let flows = table.takeEnded(completeReadStart: read, now: read)
        try #require(flows.count == 2)
        let server = IPAddress(parsing: "::1")!
        let open = try #require(flows.first { $0.a.endpoint.port == 58_799 || $0.b.endpoint.port == 58_799 })
        let client = side(open, Endpoint(server, 58_799))
        let http = side(open, Endpoint(server, 8080))
        #expect(client.sent == WireCounts(bytes: 1_465, packets: 9, retransmits: 0))
        #expect(http.sent == WireCounts(bytes: 54_866, packets: 11, retransmits: 0))
        #expect(!open.fromStart && open.established && client.isLocal && http.isLocal)

        let fresh = try #require(flows.first { $0.a.endpoint.port == 58_806 || $0.b.endpoint.port == 58_806 })
        let freshClient = side(fresh, Endpoint(server, 58_806))
        #expect(fresh.fromStart && fresh.established && freshClient.initiated)
        #expect(
            freshClient.sent == WireCounts(bytes: 0, packets: 2)
                && side(fresh, Endpoint(server, 8080)).sent.packets == 2)
    }

    /// gopacket's Ethernet capture: one HTTP request and response, closed both ways, seen from the client.
    @Test func ethernetCaptureFromTheClient() throws {
        let packets = try PcapFile("gopacket-test_ethernet.pcap").headers()
        var table = WireFlowTable(maxFlows: 16)
        let client = Endpoint(IPAddress(parsing: "10.1.1.2")!, 44_644)
        for (time, headers) in packets {
            let h = try #require(headers)
            table.record(h, way: h.source == client ? .sent : .received, at: time)
        }
        let flow = try #require(table.takeEnded(completeReadStart: nil, now: 0).first)
        let server = side(flow, Endpoint(IPAddress(parsing: "10.1.1.1")!, 80))
        #expect(side(flow, client).sent == WireCounts(bytes: 72, packets: 5))
        #expect(server.sent == WireCounts(bytes: 378, packets: 5))
        #expect(flow.fromStart && flow.established && side(flow, client).initiated)
        #expect(side(flow, client).isLocal && !server.isLocal)
    }

    /// gopacket's DNS capture: ten queries, each its own 4-tuple, received by two servers.
    @Test func dnsQueriesPerFourTuple() throws {
        let packets = try PcapFile("gopacket-test_dns.pcap").headers()
        var table = WireFlowTable(maxFlows: 16)
        for (time, headers) in packets { table.record(try #require(headers), way: .received, at: time) }
        let flows = table.takeDatagrams(now: 0)
        #expect(flows.count == 10)
        let servers = flows.map { $0.a.endpoint.port == 53 ? $0.a : $0.b }
        #expect(servers.allSatisfy { $0.isLocal && $0.sent.packets == 0 })
        let clients = flows.map { $0.a.endpoint.port == 53 ? $0.b : $0.a }
        #expect(clients.map(\.sent.bytes).reduce(0, +) == 397)
        #expect(clients.allSatisfy { $0.sent.packets == 1 && $0.initiated && !$0.isLocal })
    }
}
