import CNMModel
import CNMPacket
import Testing

@Suite struct PacketHeadersTests {
    typealias B = PacketBuilder

    @Test func ipv4TCPWithOptionsAndTruncatedPayload() throws {
        let tcp = B.tcp(
            sourcePort: 43_210, destinationPort: 443, sequence: 0xDEAD_BEEF, acknowledgment: 7, flags: 0x18, options: 12
        )
        let bytes = B.ipv4(
            from: 0x0A00_0001, to: 0xC0A8_0102, protocolNumber: 6, transport: tcp, payload: 1_400, options: 4)
        // Only the headers were captured; the IP length still says how much payload there was.
        let h = try #require(B.parse(bytes, wireLength: bytes.count + 1_400))
        #expect(h.transport == .tcp)
        #expect(h.source == Endpoint(.v4(0x0A00_0001), 43_210))
        #expect(h.destination == Endpoint(.v4(0xC0A8_0102), 443))
        #expect(h.sequence == 0xDEAD_BEEF && h.acknowledgment == 7)
        #expect(h.flags == [.psh, .ack])
        #expect(h.payloadLength == 1_400)
    }

    @Test func ipv6TCPAfterExtensionHeaders() throws {
        let tcp = B.tcp(sourcePort: 8080, destinationPort: 50_000, sequence: 1, flags: 0x11)
        // Hop-by-hop options (8 bytes) then destination options (16 bytes), then TCP.
        let extensions: [UInt8] =
            [60, 0] + [UInt8](repeating: 0, count: 6) + [6, 1] + [UInt8](repeating: 0, count: 14)
        let source = IPAddress(parsing: "2001:db8::1")!
        let destination = IPAddress(parsing: "::1")!
        let bytes = B.ipv6(from: source, to: destination, next: 0, extensions: extensions, transport: tcp, payload: 10)
        let h = try #require(B.parse(bytes))
        #expect(h.source == Endpoint(source, 8080) && h.destination == Endpoint(destination, 50_000))
        #expect(h.flags == [.fin, .ack] && h.payloadLength == 10)
    }

    @Test func udpOverBothFamilies() throws {
        let v4 = B.ipv4(
            from: 0x7F00_0001, to: 0x7F00_0001, protocolNumber: 17,
            transport: B.udp(sourcePort: 5353, destinationPort: 53, length: 8 + 33), payload: 33)
        let h4 = try #require(B.parse(v4))
        #expect(h4.transport == .udp && h4.payloadLength == 33 && h4.destination.port == 53)
        let v6 = B.ipv6(
            from: IPAddress(parsing: "fe80::1")!, to: IPAddress(parsing: "fe80::2")!, next: 17,
            transport: B.udp(sourcePort: 1, destinationPort: 2, length: 8), payload: 0)
        #expect(try #require(B.parse(v6)).payloadLength == 0)
    }

    /// A datagram split in fragments is counted whole from its first fragment's UDP length; later
    /// fragments have no port to place them by.
    @Test func fragmentedDatagrams() throws {
        let first = B.ipv4(
            from: 1, to: 2, protocolNumber: 17, transport: B.udp(sourcePort: 9, destinationPort: 9, length: 3_008),
            payload: 1_472, fragment: 0x2000)
        #expect(try #require(B.parse(first)).payloadLength == 3_000)
        let later = B.ipv4(from: 1, to: 2, protocolNumber: 17, transport: [], payload: 1_480, fragment: 0x00B9)
        #expect(B.parse(later) == nil)
        // IPv6: a fragment header with offset 0 and M set, then UDP.
        let fragmentHeader: [UInt8] = [17, 0, 0, 1, 0, 0, 0, 42]
        let v6 = B.ipv6(
            from: IPAddress(parsing: "::1")!, to: IPAddress(parsing: "::1")!, next: 44, extensions: fragmentHeader,
            transport: B.udp(sourcePort: 1, destinationPort: 2, length: 4_008), payload: 1_000)
        #expect(try #require(B.parse(v6)).payloadLength == 4_000)
    }

    @Test func whatIsNotCountedIsNil() {
        let tcp = B.tcp(sourcePort: 1, destinationPort: 2, sequence: 0, flags: 0x02)
        let icmp = B.ipv4(from: 1, to: 2, protocolNumber: 1, transport: [8, 0, 0, 0], payload: 0)
        #expect(B.parse(icmp) == nil)
        let v4 = B.ipv4(from: 1, to: 2, protocolNumber: 6, transport: tcp, payload: 0)
        #expect(B.parse(Array(v4.prefix(30))) == nil, "TCP header cut short")
        #expect(B.parse(Array(v4.prefix(10))) == nil, "IP header cut short")
        #expect(B.parse([0x50] + Array(v4.dropFirst())) == nil, "IP version 5")
        var badOffset = v4
        badOffset[20 + 12] = 0x10  // a TCP data offset of 4 bytes
        #expect(B.parse(badOffset) == nil)
        #expect(B.parse([]) == nil)
    }
}
