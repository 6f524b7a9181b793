import CNMIntake
import CNMIntakeProto

extension FuzzTargets {
    /// An intake message body: the input as it is (header, then what should be a zstd frame), and the
    /// input's bytes after the header taken as the protobuf message and compressed here, so that
    /// mutations reach the message rather than only break the frame's checksum. Then the tag sets of
    /// its connections.
    ///
    /// Checks that a header parsed prints back to the bytes it came from, and that a message decoded,
    /// encoded again and decoded once more is the same message.
    public static func intakeMessage(_ input: [UInt8]) {
        if let header = IntakeMessageHeader(parsing: input) {
            invariant(header.bytes == Array(input.prefix(IntakeMessageHeader.length)), "header does not print back")
        }
        var bodies = [input]
        if input.count >= IntakeMessageHeader.length,
            let frame = try? Zstd.compress(Array(input.dropFirst(IntakeMessageHeader.length)))
        {
            bodies.append(Array(input.prefix(IntakeMessageHeader.length)) + frame)
        }
        for body in bodies {
            guard let (header, message) = try? IntakeMessage.decode(body) else { continue }
            let tags = [UInt8](message.encodedConnectionsTags)
            for connection in message.connections.prefix(16) {
                _ = TagEncoder.decode(tags, index: connection.tagsIdx)
            }
            do {
                let encoded = try IntakeMessage.encode(message, timestampMilliseconds: header.timestampMilliseconds)
                let again = try IntakeMessage.decode(encoded)
                invariant(again.message == message, "the message changes through encoding")
                invariant(again.header.timestampMilliseconds == header.timestampMilliseconds, "the timestamp changes")
            } catch {
                invariant(false, "a decoded message cannot be encoded again: \(error)")
            }
        }
    }

    /// Datadog's v3 tag encoding, both ways: the input as an encoded buffer, and as tag sets (one per
    /// line, tags separated by tabs) to encode.
    ///
    /// Checks that every set encoded decodes to its tags sorted bytewise, each once.
    public static func intakeTags(_ input: [UInt8]) {
        var indices: [Int32] = [-1, 0, 6, 12]
        if input.count >= 4 {
            indices.append(input.suffix(4).reversed().reduce(0) { $0 << 8 | Int32($1) })
        }
        for index in indices {
            guard let tags = TagEncoder.decode(input, index: index) else { continue }
            invariant(tags.allSatisfy { $0.utf8.count <= 3 * Int(UInt16.max) }, "a tag longer than its length field")
        }

        var encoder = TagEncoder()
        var expected: [(index: Int32, tags: [String])] = []
        for line in input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).prefix(64) {
            let set = line.split(separator: UInt8(ascii: "\t")).map { String(decoding: $0, as: UTF8.self) }
            // What the encoder stores: each tag's UTF-8 cut to a 16-bit length, sorted bytewise, once.
            var stored = set.map { Array($0.utf8.prefix(Int(UInt16.max))) }
            stored.sort { $0.lexicographicallyPrecedes($1) }
            var unique: [[UInt8]] = []
            for tag in stored where unique.last != tag { unique.append(tag) }
            expected.append((encoder.encode(set), unique.map { String(decoding: $0, as: UTF8.self) }))
        }
        let buffer = encoder.buffer
        for (index, tags) in expected {
            invariant(TagEncoder.decode(buffer, index: index) == tags, "set \(index) decodes otherwise than \(tags)")
        }
    }
}
