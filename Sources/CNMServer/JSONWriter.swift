import CNMModel
import NIOCore

/// Writes JSON text straight into bytes, in the order it is called: no tree of values is built and
/// no keys are sorted, so an interval of 60,000 connections costs one pass over them. Callers write
/// keys in their documented order; strings are escaped as RFC 8259 requires.
///
/// Bytes go to a chunk of memory of its own first and to the buffer a chunk at a time: a
/// `ByteBuffer` write checks its storage's exclusivity on every call, and an array's append its
/// uniqueness and capacity, which for pieces of a few bytes cost more than the JSON itself.
/// Not copyable: it owns that chunk.
struct JSONWriter: ~Copyable {
    private var out: ByteBuffer
    private let pending: UnsafeMutablePointer<UInt8>
    private var count = 0
    /// Whether the next key or value in the open object or array needs a comma before it.
    private var needsComma = false
    private static let chunk = 64 << 10

    init(capacity: Int = 4096) {
        out = ByteBufferAllocator().buffer(capacity: capacity)
        pending = .allocate(capacity: Self.chunk)
    }

    deinit { pending.deallocate() }

    /// What was written.
    consuming func finish() -> ByteBuffer {
        flush()
        return out
    }

    private mutating func flush() {
        out.writeBytes(UnsafeRawBufferPointer(start: pending, count: count))
        count = 0
    }

    @inline(__always)
    private mutating func put(_ byte: UInt8) {
        if count == Self.chunk { flush() }
        pending[count] = byte
        count += 1
    }

    private mutating func put(_ piece: UnsafeBufferPointer<UInt8>) {
        guard let base = piece.baseAddress, !piece.isEmpty else { return }
        if count + piece.count > Self.chunk {
            flush()
            if piece.count > Self.chunk {
                out.writeBytes(UnsafeRawBufferPointer(piece))
                return
            }
        }
        (pending + count).update(from: base, count: piece.count)
        count += piece.count
    }

    mutating func beginObject() {
        separate()
        put(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func endObject() {
        put(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func beginArray() {
        separate()
        put(UInt8(ascii: "["))
        needsComma = false
    }

    mutating func endArray() {
        put(UInt8(ascii: "]"))
        needsComma = true
    }

    /// An object key: plain ASCII the caller chose, so it is not escaped.
    mutating func key(_ name: StaticString) {
        separate()
        put(UInt8(ascii: "\""))
        name.withUTF8Buffer { put($0) }
        put(UInt8(ascii: "\""))
        put(UInt8(ascii: ":"))
        needsComma = false
    }

    /// An object key made at run time (a map's keys), escaped like any string.
    mutating func key(_ name: String) {
        string(name)
        put(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func null() {
        separate()
        writeStatic("null")
        needsComma = true
    }

    mutating func bool(_ value: Bool) {
        separate()
        writeStatic(value ? "true" : "false")
        needsComma = true
    }

    mutating func number(_ value: UInt64) {
        separate()
        writeDigits(value)
        needsComma = true
    }

    mutating func number(_ value: Int64) {
        separate()
        if value < 0 { put(UInt8(ascii: "-")) }
        writeDigits(value.magnitude)
        needsComma = true
    }

    mutating func number(_ value: some BinaryInteger) {
        if value < 0 { number(Int64(value)) } else { number(UInt64(value)) }
    }

    mutating func string(_ value: String) {
        separate()
        put(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { writeEscaped($0) }
        put(UInt8(ascii: "\""))
        needsComma = true
    }

    mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    mutating func string(_ value: ProcessName?) {
        guard let value else { return null() }
        separate()
        put(UInt8(ascii: "\""))
        value.withUTF8 { writeEscaped($0) }
        put(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Text that is already valid JSON string content (digits and dots of an address), quoted.
    mutating func string(ascii: UnsafeBufferPointer<UInt8>) {
        separate()
        put(UInt8(ascii: "\""))
        put(ascii)
        put(UInt8(ascii: "\""))
        needsComma = true
    }

    mutating func strings(_ values: [String]) {
        beginArray()
        for value in values { string(value) }
        endArray()
    }

    private mutating func separate() {
        if needsComma { put(UInt8(ascii: ",")) }
    }

    private mutating func writeStatic(_ text: StaticString) {
        text.withUTF8Buffer { put($0) }
    }

    private mutating func writeDigits(_ value: UInt64) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var rest = value
            var start = digits.count
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                rest /= 10
            } while rest != 0
            put(UnsafeBufferPointer(rebasing: digits[start...]))
        }
    }

    /// UTF-8 as is (a Swift string is valid UTF-8), with `"`, `\` and control characters escaped.
    /// Eight bytes are checked at a time: almost no string in a report has anything to escape.
    private mutating func writeEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        let raw = UnsafeRawBufferPointer(utf8)
        var clean = 0
        var index = 0
        while index < utf8.count {
            if index + 8 <= utf8.count,
                !Self.anyNeedsEscape(raw.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            {
                index += 8
                continue
            }
            let end = min(index + 8, utf8.count)
            while index < end {
                let byte = utf8[index]
                if byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
                    if clean < index { put(UnsafeBufferPointer(rebasing: utf8[clean..<index])) }
                    clean = index + 1
                    escape(byte)
                }
                index += 1
            }
        }
        if clean < utf8.count { put(UnsafeBufferPointer(rebasing: utf8[clean...])) }
    }

    /// Whether any of eight bytes is below 0x20, `"` or `\` (the "has less" and "has zero byte"
    /// word tests: exact as a yes or no).
    @inline(__always)
    private static func anyNeedsEscape(_ word: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        let quote = word ^ (ones &* 0x22)
        let backslash = word ^ (ones &* 0x5C)
        let below = (word &- ones &* 0x20) & ~word
        return (below | ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash)) & highs != 0
    }

    private mutating func escape(_ byte: UInt8) {
        put(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): put(byte)
        case 0x0A: put(UInt8(ascii: "n"))
        case 0x0D: put(UInt8(ascii: "r"))
        case 0x09: put(UInt8(ascii: "t"))
        case 0x08: put(UInt8(ascii: "b"))
        case 0x0C: put(UInt8(ascii: "f"))
        default:
            let hex: StaticString = "0123456789abcdef"
            writeStatic("u00")
            hex.withUTF8Buffer {
                put($0[Int(byte >> 4)])
                put($0[Int(byte & 0xF)])
            }
        }
    }
}
