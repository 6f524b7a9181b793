import CNMModel
import CNMPacket

/// Builds IP packets byte by byte, the way they leave a network stack, for the parser's tests.
enum PacketBuilder {
    static func ipv4(
        from source: UInt32,
        to destination: UInt32,
        protocolNumber: UInt8,
        transport: [UInt8],
        payload: Int,
        fragment: UInt16 = 0,
        options: Int = 0
    ) -> [UInt8] {
        let headerLength = 20 + options
        let total = headerLength + transport.count + payload
        var bytes: [UInt8] = [0x40 | UInt8(headerLength / 4), 0]
        bytes += be16(UInt16(total)) + be16(0x1234) + be16(fragment) + [64, protocolNumber] + be16(0)
        bytes += be32(source) + be32(destination) + [UInt8](repeating: 1, count: options)
        return bytes + transport
    }

    static func ipv6(
        from source: IPAddress,
        to destination: IPAddress,
        next: UInt8,
        extensions: [UInt8] = [],
        transport: [UInt8],
        payload: Int
    ) -> [UInt8] {
        var bytes: [UInt8] = [0x60, 0, 0, 0]
        bytes += be16(UInt16(extensions.count + transport.count + payload)) + [next, 64]
        bytes += address(source) + address(destination)
        return bytes + extensions + transport
    }

    static func tcp(
        sourcePort: UInt16,
        destinationPort: UInt16,
        sequence: UInt32,
        acknowledgment: UInt32 = 0,
        flags: UInt8,
        options: Int = 0
    ) -> [UInt8] {
        var bytes = be16(sourcePort) + be16(destinationPort) + be32(sequence) + be32(acknowledgment)
        bytes += [UInt8((20 + options) / 4) << 4, flags] + be16(65535) + be16(0) + be16(0)
        return bytes + [UInt8](repeating: 1, count: options)
    }

    static func udp(sourcePort: UInt16, destinationPort: UInt16, length: Int) -> [UInt8] {
        be16(sourcePort) + be16(destinationPort) + be16(UInt16(length)) + be16(0)
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }

    static func address(_ a: IPAddress) -> [UInt8] {
        switch a {
        case .v4(let v): return be32(v)
        case .v6(let high, let low):
            return (0..<8).map { UInt8(high >> (56 - 8 * UInt64($0)) & 0xFF) }
                + (0..<8).map { UInt8(low >> (56 - 8 * UInt64($0)) & 0xFF) }
        }
    }

    /// Parses `bytes` as the capture does: only the headers are at hand, the payload's length is
    /// in the IP header.
    static func parse(_ bytes: [UInt8], wireLength: Int? = nil) -> PacketHeaders? {
        bytes.withUnsafeBytes { PacketHeaders(networkLayer: $0, wireLength: wireLength ?? bytes.count) }
    }
}

/// A TCP conversation between a client and a server, segment by segment, with the headers the
/// flow table takes.
struct Conversation {
    var client = Endpoint(.v4(0x0A00_0001), 40_000)
    var server = Endpoint(.v4(0x0A00_0002), 80)
    var clientISN: UInt32 = 1_000
    var serverISN: UInt32 = 5_000_000
    var time: Int64 = 1_000_000_000_000

    func fromClient(
        _ flags: PacketHeaders.TCPFlags, offset: UInt32 = 0, length: UInt32 = 0, ack: UInt32 = 0
    ) -> PacketHeaders {
        PacketHeaders(
            transport: .tcp, source: client, destination: server, sequence: clientISN &+ offset,
            acknowledgment: ack, flags: flags, payloadLength: length)
    }

    func fromServer(
        _ flags: PacketHeaders.TCPFlags, offset: UInt32 = 0, length: UInt32 = 0, ack: UInt32 = 0
    ) -> PacketHeaders {
        PacketHeaders(
            transport: .tcp, source: server, destination: client, sequence: serverISN &+ offset,
            acknowledgment: ack, flags: flags, payloadLength: length)
    }

    /// Feeds packets to the table one millisecond apart, as sent by this host.
    mutating func send(_ packets: [PacketHeaders], to table: inout WireFlowTable, way: PacketWay = .loopback) {
        for p in packets {
            time += 1_000_000
            table.record(p, way: way, at: time)
        }
    }
}
