/// Writes protobuf's binary wire format straight into bytes, field by field, in the order it is called:
/// no message values are built. Callers write fields in field-number order and leave out proto3
/// defaults (zero, empty, false), as protobuf's own serialisers do, so that the bytes are the same
/// as theirs for the same message.
struct ProtobufWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    private enum WireType: UInt64 {
        case varint = 0
        case lengthDelimited = 2
    }

    private mutating func key(_ field: UInt64, _ type: WireType) {
        varint(field << 3 | type.rawValue)
    }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// `uint32`, `uint64` and enum fields; nothing for 0.
    mutating func unsigned(_ field: UInt64, _ value: some FixedWidthInteger & UnsignedInteger) {
        guard value != 0 else { return }
        key(field, .varint)
        varint(UInt64(value))
    }

    /// `int32` fields: negative values take ten bytes, sign-extended to 64 bits, as the format says.
    mutating func signed(_ field: UInt64, _ value: Int32) {
        guard value != 0 else { return }
        key(field, .varint)
        varint(UInt64(bitPattern: Int64(value)))
    }

    mutating func bool(_ field: UInt64, _ value: Bool) {
        guard value else { return }
        key(field, .varint)
        bytes.append(1)
    }

    /// `string` and `bytes` fields; nothing when empty.
    mutating func bytes(_ field: UInt64, _ value: UnsafeBufferPointer<UInt8>) {
        guard !value.isEmpty else { return }
        key(field, .lengthDelimited)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: UInt64, _ value: String) {
        var value = value
        value.withUTF8 { bytes(field, $0) }
    }

    mutating func bytes(_ field: UInt64, _ value: [UInt8]) {
        value.withUnsafeBufferPointer { bytes(field, $0) }
    }

    /// A message field holding what `message` wrote; written even when empty.
    mutating func appendMessage(_ field: UInt64, _ message: ProtobufWriter) {
        key(field, .lengthDelimited)
        varint(UInt64(message.bytes.count))
        bytes.append(contentsOf: message.bytes)
    }

    /// A map entry, as protobuf writes one: key (field 1) and value (field 2) always, even when 0.
    /// Its length is reckoned, not written first elsewhere.
    mutating func mapEntry(_ field: UInt64, key entryKey: UInt64, value: UInt64) {
        key(field, .lengthDelimited)
        varint(UInt64(2 + Self.varintSize(entryKey) + Self.varintSize(value)))
        key(1, .varint)
        varint(entryKey)
        key(2, .varint)
        varint(value)
    }

    mutating func mapEntry(_ field: UInt64, key entryKey: UInt64, value: String) {
        var value = value
        value.withUTF8 { text in
            let count = UInt64(text.count)
            key(field, .lengthDelimited)
            varint(UInt64(2 + Self.varintSize(entryKey) + Self.varintSize(count)) + count)
            key(1, .varint)
            varint(entryKey)
            key(2, .lengthDelimited)
            varint(count)
            bytes.append(contentsOf: text)
        }
    }

    /// Bytes `varint` writes for `value`.
    static func varintSize(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }
}
