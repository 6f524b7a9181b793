import Testing

@testable import CNMIntake

@Suite struct TagEncodingTests {
    /// The exact bytes Datadog's v3 format prescribes for two small sets.
    @Test func bytesFollowTheV3Layout() {
        var encoder = TagEncoder()
        #expect(encoder.encode(["b", "a"]) == 0)
        #expect(encoder.encode(["c", "a"]) == 10)
        let a = UInt8(ascii: "a")
        let b = UInt8(ascii: "b")
        let c = UInt8(ascii: "c")
        let expected: [UInt8] =
            [3, 14, 0, 0, 0]  // version, footer at 14
            + [1, 0, a, 1, 0, b, 1, 0, c]  // each tag once: length, bytes
            + [2, 0, 5, 0, 0, 0, 8, 0, 0, 0]  // set 0: a (at 5), b (at 8)
            + [2, 0, 5, 0, 0, 0, 11, 0, 0, 0]  // set 10: a, c (at 11)
        #expect(encoder.buffer == expected)
    }

    @Test func everySetDecodesBackSortedAndDeduplicated() throws {
        var encoder = TagEncoder()
        let sets: [[String]] = [
            ["service:web", "env:prod", "container_name:web-1"],
            ["env:prod", "service:api", "service:api"],
            ["host:h1"],
            ["ünïcode:✓", "env:prod"],
        ]
        let indexes = sets.map { encoder.encode($0) }
        let buffer = encoder.buffer
        for (set, index) in zip(sets, indexes) {
            let decoded = try #require(TagEncoder.decode(buffer, index: index))
            #expect(decoded == Array(Set(set)).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        }
    }

    @Test func anEqualSetGetsTheSameIndexAndAddsNothing() {
        var encoder = TagEncoder()
        let first = encoder.encode(["x:1", "y:2"])
        let size = encoder.buffer.count
        #expect(encoder.encode(["y:2", "x:1", "x:1"]) == first)
        #expect(encoder.buffer.count == size)
        #expect(encoder.encode(["x:1"]) != first)
    }

    @Test func noTagsIsMinusOne() {
        var encoder = TagEncoder()
        #expect(encoder.encode([]) == -1)
        #expect(TagEncoder.decode(encoder.buffer, index: -1) == [])
    }

    @Test func malformedBuffersDecodeToNil() {
        var encoder = TagEncoder()
        let index = encoder.encode(["a:b", "c:d"])
        let buffer = encoder.buffer
        #expect(TagEncoder.decode(Array(buffer.dropLast()), index: index) == nil)
        #expect(TagEncoder.decode([9] + buffer.dropFirst(), index: index) == nil)
        #expect(TagEncoder.decode(buffer, index: 4000) == nil)
        #expect(TagEncoder.decode([], index: 0) == nil)
    }
}
