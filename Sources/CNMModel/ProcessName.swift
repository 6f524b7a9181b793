/// A process's name as the kernel keeps it (`comm`: at most 15 bytes), held inline in two words so
/// that every flow record and flow end carries it without building or retaining a string: it
/// becomes text only where an output writes it.
public struct ProcessName: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The most bytes a name keeps (the kernel's TASK_COMM_LEN less its NUL).
    public static let capacity = 15

    // Bytes 0..<8 and 8..<16 in memory order; unused bytes are 0, byte 15 always is.
    private var words: (UInt64, UInt64) = (0, 0)

    public static func == (a: Self, b: Self) -> Bool { a.words == b.words }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
    }

    /// The empty name (a process whose name is not known).
    public init() {}

    /// The bytes up to the first NUL, at most `capacity` of them. Bytes that are not UTF-8 are
    /// replaced (as when decoding text), so the name is always valid UTF-8 and, cut to the
    /// capacity, never ends inside a character.
    public init(bytes: UnsafeRawBufferPointer) {
        // Word at a time: the kernel's comm is 16 bytes, and this runs for every flow record.
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.prefix(16))) }
        let (a, b) = (UInt64(littleEndian: words.0), UInt64(littleEndian: words.1) & 0x00FF_FFFF_FFFF_FFFF)
        // The lowest zero byte of a word (a bit per byte that is 0; exact for the lowest one).
        func zeros(_ w: UInt64) -> UInt64 { (w &- 0x0101_0101_0101_0101) & ~w & 0x8080_8080_8080_8080 }
        let length: Int
        if zeros(a) != 0 {
            length = zeros(a).trailingZeroBitCount / 8
        } else {
            length = 8 + zeros(b).trailingZeroBitCount / 8  // byte 15 is 0: found at the latest
        }
        // Everything from the first NUL on is 0.
        let bits = UInt64(length) * 8
        let keptA = length >= 8 ? a : a & ((1 << bits) &- 1)
        let keptB = length <= 8 ? 0 : b & ((1 << (bits - 64)) &- 1)
        words = (keptA.littleEndian, keptB.littleEndian)
        if (keptA | keptB) & 0x8080_8080_8080_8080 != 0 {
            // Not ASCII: kept only if it is UTF-8 (and so never ends inside a character).
            let valid = withUTF8 { String(validating: $0, as: UTF8.self) != nil }
            if !valid { self = ProcessName(withUTF8 { String(decoding: $0, as: UTF8.self) }) }
        }
    }

    /// `text`'s UTF-8, cut at a character boundary to at most `capacity` bytes.
    public init(_ text: String) {
        var end = 0
        for scalar in text.unicodeScalars {
            let width = UTF8.width(scalar)
            if end + width > Self.capacity { break }
            end += width
        }
        var text = text
        text.withUTF8 { store(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: $0[..<end]))) }
    }

    public init(stringLiteral value: String) { self.init(value) }

    private mutating func store(_ name: UnsafeRawBufferPointer) {
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: name) }
    }

    /// The number of bytes.
    public var count: Int {
        withUnsafeBytes(of: words) { $0.firstIndex(of: 0) ?? Self.capacity }
    }

    public var isEmpty: Bool { words.0 & 0xFF == 0 }

    /// Calls `body` with the name's UTF-8 bytes.
    public func withUTF8<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let count = count
        return try withUnsafeBytes(of: words) { raw in
            try body(UnsafeBufferPointer(rebasing: raw.bindMemory(to: UInt8.self)[..<count]))
        }
    }

    public var description: String { withUTF8 { String(decoding: $0, as: UTF8.self) } }
}
