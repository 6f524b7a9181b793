import NIOCore

/// Writes JSON text straight into a byte buffer, in the order it is called: no tree of values is
/// built and no keys are sorted, so an interval of 60,000 connections costs one pass over them.
/// Callers write keys in their documented order; strings are escaped as RFC 8259 requires.
struct JSONWriter {
    private(set) var buffer: ByteBuffer
    /// Whether the next key or value in the open object or array needs a comma before it.
    private var needsComma = false

    init(capacity: Int = 4096) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    mutating func beginObject() {
        separate()
        buffer.writeInteger(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func endObject() {
        buffer.writeInteger(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func beginArray() {
        separate()
        buffer.writeInteger(UInt8(ascii: "["))
        needsComma = false
    }

    mutating func endArray() {
        buffer.writeInteger(UInt8(ascii: "]"))
        needsComma = true
    }

    /// An object key: plain ASCII the caller chose, so it is not escaped.
    mutating func key(_ name: StaticString) {
        separate()
        buffer.writeInteger(UInt8(ascii: "\""))
        name.withUTF8Buffer { _ = buffer.writeBytes($0) }
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeInteger(UInt8(ascii: ":"))
        needsComma = false
    }

    /// An object key made at run time (a map's keys), escaped like any string.
    mutating func key(_ name: String) {
        string(name)
        buffer.writeInteger(UInt8(ascii: ":"))
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
        if value < 0 { buffer.writeInteger(UInt8(ascii: "-")) }
        writeDigits(value.magnitude)
        needsComma = true
    }

    mutating func number(_ value: some BinaryInteger) {
        if value < 0 { number(Int64(value)) } else { number(UInt64(value)) }
    }

    mutating func string(_ value: String) {
        separate()
        buffer.writeInteger(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { writeEscaped($0) }
        buffer.writeInteger(UInt8(ascii: "\""))
        needsComma = true
    }

    mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    /// Text that is already valid JSON string content (digits and dots of an address), quoted.
    mutating func string(ascii bytes: UnsafeRawBufferPointer) {
        separate()
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeBytes(bytes)
        buffer.writeInteger(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Bytes that are already a whole JSON value (an interval encoded earlier).
    mutating func raw(_ json: ByteBuffer) {
        separate()
        var json = json
        buffer.writeBuffer(&json)
        needsComma = true
    }

    mutating func strings(_ values: [String]) {
        beginArray()
        for value in values { string(value) }
        endArray()
    }

    private mutating func separate() {
        if needsComma { buffer.writeInteger(UInt8(ascii: ",")) }
    }

    private mutating func writeStatic(_ text: StaticString) {
        text.withUTF8Buffer { _ = buffer.writeBytes($0) }
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
            buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: digits[start...])))
        }
    }

    /// UTF-8 as is (a Swift string is valid UTF-8), with `"`, `\` and control characters escaped.
    private mutating func writeEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        var clean = 0
        for index in 0..<utf8.count {
            let byte = utf8[index]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
            if clean < index {
                buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[clean..<index])))
            }
            clean = index + 1
            buffer.writeInteger(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): buffer.writeInteger(byte)
            case 0x0A: buffer.writeInteger(UInt8(ascii: "n"))
            case 0x0D: buffer.writeInteger(UInt8(ascii: "r"))
            case 0x09: buffer.writeInteger(UInt8(ascii: "t"))
            case 0x08: buffer.writeInteger(UInt8(ascii: "b"))
            case 0x0C: buffer.writeInteger(UInt8(ascii: "f"))
            default:
                let hex: StaticString = "0123456789abcdef"
                writeStatic("u00")
                hex.withUTF8Buffer {
                    buffer.writeInteger($0[Int(byte >> 4)])
                    buffer.writeInteger($0[Int(byte & 0xF)])
                }
            }
        }
        if clean < utf8.count {
            buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[clean...])))
        }
    }
}
