/// An IPv4 or IPv6 address held as plain integers, so the model needs no system types.
public enum IPAddress: Hashable, Sendable, Comparable {
    /// Host byte order: 127.0.0.1 is 0x7F00_0001.
    case v4(UInt32)
    /// The 16 bytes in network order, split into two big-endian halves.
    case v6(high: UInt64, low: UInt64)

    public var family: AddressFamily {
        switch self {
        case .v4: .v4
        case .v6: .v6
        }
    }

    /// Builds an address from bytes in network order (4 or 16 of them).
    public init?(networkBytes bytes: some Collection<UInt8>) {
        let b = Array(bytes)
        switch b.count {
        case 4:
            self = .v4(b.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            let high = b[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = b[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            self = .v6(high: high, low: low)
        default:
            return nil
        }
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), if it is one.
    public var unmappedV4: IPAddress? {
        if case .v6(let high, let low) = self, high == 0, low >> 32 == 0xFFFF {
            return .v4(UInt32(truncatingIfNeeded: low))
        }
        return nil
    }

    public var isLoopback: Bool {
        switch self {
        case .v4(let a): a >> 24 == 127
        case .v6(let high, let low): (high == 0 && low == 1) || (unmappedV4?.isLoopback ?? false)
        }
    }

    public var isUnspecified: Bool {
        switch self {
        case .v4(let a): a == 0
        case .v6(let high, let low): high == 0 && low == 0
        }
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): a < b
        case (.v4, .v6): true
        case (.v6, .v4): false
        case (.v6(let ah, let al), .v6(let bh, let bl)): (ah, al) < (bh, bl)
        }
    }
}

extension IPAddress: CustomStringConvertible {
    /// Dotted quad for IPv4; RFC 5952 text for IPv6 (lower case, longest zero run compressed).
    public var description: String {
        switch self {
        case .v4(let a):
            return "\(a >> 24).\(a >> 16 & 0xFF).\(a >> 8 & 0xFF).\(a & 0xFF)"
        case .v6(let high, let low):
            if let v4 = unmappedV4 { return "::ffff:\(v4)" }
            let groups = (0..<8).map { i -> UInt16 in
                let half = i < 4 ? high : low
                return UInt16(truncatingIfNeeded: half >> (UInt64(3 - i % 4) * 16))
            }
            // Longest run of two or more zero groups, first one on ties.
            var best = (start: -1, length: 0)
            var i = 0
            while i < 8 {
                guard groups[i] == 0 else {
                    i += 1
                    continue
                }
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > best.length && j - i >= 2 { best = (i, j - i) }
                i = j
            }
            let hex = groups.map { String($0, radix: 16) }
            if best.start < 0 { return hex.joined(separator: ":") }
            let head = hex[0..<best.start].joined(separator: ":")
            let tail = hex[(best.start + best.length)...].joined(separator: ":")
            return head + "::" + tail
        }
    }
}

extension IPAddress {
    /// The address's text (as `description` gives it) as ASCII bytes, for writers that put it straight
    /// into a buffer: IPv4, most addresses, without building a string.
    public func withText<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        guard case .v4(let a) = self else {
            var text = description
            return try text.withUTF8 { try body($0) }
        }
        return try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 15) { text in
            var end = 0
            for shift in stride(from: UInt32(24), through: 0, by: -8) {
                if shift != 24 {
                    text[end] = UInt8(ascii: ".")
                    end += 1
                }
                let octet = UInt8(truncatingIfNeeded: a >> shift)
                if octet >= 100 {
                    text[end] = UInt8(ascii: "0") + octet / 100
                    end += 1
                }
                if octet >= 10 {
                    text[end] = UInt8(ascii: "0") + octet / 10 % 10
                    end += 1
                }
                text[end] = UInt8(ascii: "0") + octet % 10
                end += 1
            }
            return try body(UnsafeBufferPointer(rebasing: text[..<end]))
        }
    }
}

extension IPAddress {
    /// Parses dotted-quad IPv4 or textual IPv6 (with `::` and an optional trailing dotted quad).
    public init?(parsing text: some StringProtocol) {
        if !text.contains(":") {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            var value: UInt32 = 0
            for part in parts {
                guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), let octet = UInt8(part) else {
                    return nil
                }
                value = value << 8 | UInt32(octet)
            }
            self = .v4(value)
            return
        }
        let halves = text.split(separator: "::", maxSplits: 1, omittingEmptySubsequences: false)
        guard halves.count <= 2, halves.count == 1 || !halves[1].contains("::") else { return nil }
        func groups(_ s: Substring) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = s.split(separator: ":", omittingEmptySubsequences: false)
            for (index, field) in fields.enumerated() {
                if index == fields.count - 1, field.contains(".") {
                    guard case .v4(let a)? = IPAddress(parsing: field) else { return nil }
                    out.append(UInt16(a >> 16))
                    out.append(UInt16(a & 0xFFFF))
                } else {
                    guard (1...4).contains(field.count), let g = UInt16(field, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        guard let head = groups(Substring(halves[0])) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let tail = groups(Substring(halves[1])), head.count + tail.count <= 7 else { return nil }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        let high = all[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let low = all[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        self = .v6(high: high, low: low)
    }
}

/// One end of a connection.
public struct Endpoint: Hashable, Sendable {
    public var address: IPAddress
    public var port: UInt16

    public init(_ address: IPAddress, _ port: UInt16) {
        self.address = address
        self.port = port
    }

    // Every flow and connection table is keyed by endpoints: an IPv4 one is fed to the hasher as one
    // word, not as a case tag, an address and a port.
    public func hash(into hasher: inout Hasher) {
        switch address {
        case .v4(let a): hasher.combine(UInt64(a) << 16 | UInt64(port))
        case .v6(let high, let low):
            hasher.combine(high)
            hasher.combine(low)
            hasher.combine(port)
        }
    }
}

extension Endpoint: CustomStringConvertible {
    public var description: String {
        switch address {
        case .v4: "\(address):\(port)"
        case .v6: "[\(address)]:\(port)"
        }
    }
}

public enum AddressFamily: String, Sendable, Hashable, CaseIterable {
    case v4
    case v6
}

public enum TransportProtocol: String, Sendable, Hashable, CaseIterable {
    case tcp
    case udp

    /// By case, not by the raw value's string.
    public func hash(into hasher: inout Hasher) { hasher.combine(self == .tcp) }
}

public enum ConnectionDirection: String, Sendable, Hashable {
    case incoming
    case outgoing
    case none

    /// By case, not by the raw value's string.
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    var code: UInt8 {
        switch self {
        case .incoming: 0
        case .outgoing: 1
        case .none: 2
        }
    }
}
