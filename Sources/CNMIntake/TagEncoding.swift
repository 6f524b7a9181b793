/// Datadog's v3 tag encoding, the one its agent writes into `encodedConnectionsTags` and `encodedTags`:
/// many tag sets share one buffer, each distinct tag stored once.
///
/// Buffer layout (integers little-endian):
/// - 1 byte: version, 3
/// - 4 bytes: offset of the footer from the start of the buffer
/// - every distinct tag once, in first-use order: 2-byte length, then its UTF-8 bytes
/// - footer: one entry per distinct tag set, 2-byte tag count then a 4-byte buffer offset per tag
///
/// A set's index (what `tagsIdx` holds) is its entry's offset within the footer, -1 for no tags. Each
/// set is sorted bytewise and deduplicated before it is stored, and an equal set gets the index of the
/// first, so the same tags always give the same index in one buffer.
public struct TagEncoder: Sendable {
    static let version: UInt8 = 3
    static let preambleLength = 5

    /// Tag bytes → offset of its length prefix in the buffer.
    private var offsets: [HashedWords<UInt8>: UInt32] = [:]
    private var tags: [[UInt8]] = []
    private var nextOffset = UInt32(preambleLength)
    private var footer: [UInt8] = []
    /// A stored set, as its tags' offsets → its index.
    private var sets: [HashedWords<UInt32>: Int32] = [:]
    /// A set as it was given → its index: most connections carry a set an earlier one had.
    private var given: [[String]: Int32] = [:]

    public init() {}

    /// Stores a set of tags and returns its index, or -1 when it is empty.
    public mutating func encode(_ tagSet: [String]) -> Int32 {
        guard !tagSet.isEmpty else { return -1 }
        if let index = given[tagSet] { return index }
        // Lengths and counts are 16-bit in the format: longer tags and sets are cut, as Datadog's are.
        var sorted = tagSet.map { Array($0.utf8.prefix(Int(UInt16.max))) }
        sorted.sort { $0.lexicographicallyPrecedes($1) }
        var unique: [[UInt8]] = []
        for tag in sorted where unique.last != tag { unique.append(tag) }
        if unique.count > Int(UInt16.max) { unique.removeLast(unique.count - Int(UInt16.max)) }

        let positions = unique.map { tag in
            if let known = offsets[HashedWords(tag)] { return known }
            let offset = nextOffset
            offsets[HashedWords(tag)] = offset
            tags.append(tag)
            nextOffset += 2 + UInt32(tag.count)
            return offset
        }
        if let index = sets[HashedWords(positions)] {
            given[tagSet] = index
            return index
        }
        let index = Int32(footer.count)
        footer.appendLittleEndian(UInt16(positions.count))
        for position in positions { footer.appendLittleEndian(position) }
        sets[HashedWords(positions)] = index
        given[tagSet] = index
        return index
    }

    /// The whole buffer; encoding more sets afterwards is allowed and needs a new call.
    public var buffer: [UInt8] {
        var bytes: [UInt8] = [Self.version]
        bytes.reserveCapacity(Int(nextOffset) + footer.count)
        bytes.appendLittleEndian(nextOffset)
        for tag in tags {
            bytes.appendLittleEndian(UInt16(tag.count))
            bytes.append(contentsOf: tag)
        }
        bytes.append(contentsOf: footer)
        return bytes
    }

    /// The tags of the set at `index` in a v2 or v3 buffer; nil when the buffer or index is malformed.
    public static func decode(_ buffer: [UInt8], index: Int32) -> [String]? {
        guard index >= 0 else { return [] }
        guard buffer.count >= preambleLength, buffer[0] == 2 || buffer[0] == 3,
            let footerStart = buffer.readLittleEndian(UInt32.self, at: 1)
        else { return nil }
        var cursor = Int(footerStart) + Int(index)
        guard let count = buffer.readLittleEndian(UInt16.self, at: cursor) else { return nil }
        cursor += 2
        var result: [String] = []
        for _ in 0..<count {
            guard let position = buffer.readLittleEndian(UInt32.self, at: cursor),
                Int(position) < Int(footerStart),
                let length = buffer.readLittleEndian(UInt16.self, at: Int(position)),
                Int(position) + 2 + Int(length) <= Int(footerStart)
            else { return nil }
            let start = Int(position) + 2
            result.append(String(decoding: buffer[start..<start + Int(length)], as: UTF8.self))
            cursor += 4
        }
        return result
    }
}

/// An array as a dictionary key hashed in one call over its bytes, where `Array`'s own hashing feeds
/// the hasher one element at a time.
struct HashedWords<Word: FixedWidthInteger & Sendable>: Hashable, Sendable {
    var words: [Word]

    init(_ words: [Word]) { self.words = words }

    func hash(into hasher: inout Hasher) {
        words.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

extension [UInt8] {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    func readLittleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset + size <= count else { return nil }
        var value: T = 0
        for i in (0..<size).reversed() { value = value << 8 | T(self[offset + i]) }
        return value
    }
}
