import CNMModel

/// The headers of one TCP or UDP packet over IPv4 or IPv6 that accounting needs, read from the
/// packet's network-layer bytes (what an AF_PACKET SOCK_DGRAM socket delivers).
///
/// Lengths come from the IP header's length fields, so the payload size is exact when only the
/// headers were captured.
public struct PacketHeaders: Sendable, Equatable {
    public struct TCPFlags: OptionSet, Sendable, Equatable {
        public var rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let fin = TCPFlags(rawValue: 0x01)
        public static let syn = TCPFlags(rawValue: 0x02)
        public static let rst = TCPFlags(rawValue: 0x04)
        public static let psh = TCPFlags(rawValue: 0x08)
        public static let ack = TCPFlags(rawValue: 0x10)
    }

    public var transport: TransportProtocol
    public var source: Endpoint
    public var destination: Endpoint
    /// TCP sequence and acknowledgment numbers and flags; zero for UDP.
    public var sequence: UInt32
    public var acknowledgment: UInt32
    public var flags: TCPFlags
    /// Bytes after the TCP or UDP header.
    public var payloadLength: UInt32

    public init(
        transport: TransportProtocol,
        source: Endpoint,
        destination: Endpoint,
        sequence: UInt32 = 0,
        acknowledgment: UInt32 = 0,
        flags: TCPFlags = [],
        payloadLength: UInt32
    ) {
        self.transport = transport
        self.source = source
        self.destination = destination
        self.sequence = sequence
        self.acknowledgment = acknowledgment
        self.flags = flags
        self.payloadLength = payloadLength
    }

    /// Reads `bytes`, which start at the IP header. `wireLength` is the packet's full length from
    /// there, for the rare packet whose IP length field is 0 (an IPv6 jumbogram, a large segment
    /// before offload). Nil for anything else than the first fragment of a TCP or UDP packet, and
    /// for headers cut short or inconsistent.
    public init?(networkLayer bytes: UnsafeRawBufferPointer, wireLength: Int) {
        guard let first = bytes.first else { return nil }
        let transportOffset: Int
        let protocolNumber: UInt8
        let end: Int
        // The first fragment of a datagram split in several: its UDP header gives the whole length.
        var isFragment = false
        switch first >> 4 {
        case 4:
            let headerLength = Int(first & 0x0F) * 4
            guard headerLength >= 20, bytes.count >= headerLength else { return nil }
            // A later fragment carries no transport header: its bytes belong to the first one's.
            let fragment = bytes.bigEndian16(at: 6)
            guard fragment & 0x1FFF == 0 else { return nil }
            isFragment = fragment & 0x2000 != 0
            let total = Int(bytes.bigEndian16(at: 2))
            end = total != 0 ? total : wireLength
            protocolNumber = bytes[9]
            source = Endpoint(.v4(bytes.bigEndian32(at: 12)), 0)
            destination = Endpoint(.v4(bytes.bigEndian32(at: 16)), 0)
            transportOffset = headerLength
        case 6:
            guard bytes.count >= 40 else { return nil }
            let payload = Int(bytes.bigEndian16(at: 4))
            end = payload != 0 ? 40 + payload : wireLength
            source = Endpoint(.v6(high: bytes.bigEndian64(at: 8), low: bytes.bigEndian64(at: 16)), 0)
            destination = Endpoint(.v6(high: bytes.bigEndian64(at: 24), low: bytes.bigEndian64(at: 32)), 0)
            guard let (next, offset, fragmented) = Self.skipExtensionHeaders(bytes, next: bytes[6], offset: 40) else {
                return nil
            }
            protocolNumber = next
            transportOffset = offset
            isFragment = fragmented
        default:
            return nil
        }
        switch protocolNumber {
        case 6:
            guard bytes.count >= transportOffset + 20 else { return nil }
            let dataOffset = Int(bytes[transportOffset + 12] >> 4) * 4
            guard dataOffset >= 20 else { return nil }
            transport = .tcp
            sequence = bytes.bigEndian32(at: transportOffset + 4)
            acknowledgment = bytes.bigEndian32(at: transportOffset + 8)
            flags = TCPFlags(rawValue: bytes[transportOffset + 13] & 0x1F)
            payloadLength = UInt32(clamping: max(0, end - transportOffset - dataOffset))
        case 17:
            guard bytes.count >= transportOffset + 8 else { return nil }
            transport = .udp
            sequence = 0
            acknowledgment = 0
            flags = []
            let datagramLength = Int(bytes.bigEndian16(at: transportOffset + 4))
            payloadLength = UInt32(
                clamping: isFragment && datagramLength >= 8 ? datagramLength - 8 : max(0, end - transportOffset - 8))
        default:
            return nil
        }
        source.port = bytes.bigEndian16(at: transportOffset)
        destination.port = bytes.bigEndian16(at: transportOffset + 2)
    }

    /// Walks IPv6 extension headers (hop-by-hop, routing, fragment, destination options,
    /// authentication) to the upper-layer header: its protocol number and offset, and whether the
    /// packet is the first fragment of several. Nil for a later fragment, or headers that run past
    /// the captured bytes.
    private static func skipExtensionHeaders(_ bytes: UnsafeRawBufferPointer, next: UInt8, offset: Int)
        -> (UInt8, Int, Bool)?
    {
        var next = next
        var offset = offset
        var fragmented = false
        // A bound on the chain, which a well-formed packet never comes near.
        for _ in 0..<8 {
            switch next {
            case 0, 43, 60:
                guard bytes.count >= offset + 2 else { return nil }
                next = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 1) * 8
            case 44:
                guard bytes.count >= offset + 8 else { return nil }
                let field = bytes.bigEndian16(at: offset + 2)
                guard field & 0xFFF8 == 0 else { return nil }
                fragmented = field & 1 != 0
                next = bytes[offset]
                offset += 8
            case 51:
                guard bytes.count >= offset + 2 else { return nil }
                next = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 2) * 4
            default:
                return (next, offset, fragmented)
            }
        }
        return nil
    }
}

extension UnsafeRawBufferPointer {
    fileprivate func bigEndian16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    fileprivate func bigEndian32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    fileprivate func bigEndian64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}
