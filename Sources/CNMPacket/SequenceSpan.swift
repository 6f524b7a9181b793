/// The stretch of one TCP sender's sequence space seen carrying payload, in 64-bit sequence numbers
/// that do not wrap: payload bytes are the distance from the first byte to the end of the highest
/// one, so a byte sent twice counts once and a connection may carry more than 4 GiB.
///
/// A segment that starts below the highest end seen resent data, unless it fills a gap left by a
/// segment that arrived before it (reordering): gaps are remembered, a few at a time.
struct SequenceSpan: Sendable {
    private(set) var isStarted = false
    /// 64-bit sequence number of the first payload byte counted.
    private(set) var first: UInt64 = 0
    /// 64-bit sequence number just after the highest payload byte seen.
    private(set) var highest: UInt64 = 0
    /// Sequence ranges above `first` and below `highest` not seen yet, lowest first.
    private var gaps: [Range<UInt64>] = []

    /// Gaps remembered; a segment filling an older one is taken for a retransmission.
    static let maxGaps = 8

    var bytes: UInt64 { highest - first }

    /// Starts the span at a sender's first segment: after its SYN, whose sequence number comes
    /// before the first payload byte, or at the segment's sequence number for one met mid-stream.
    /// Numbers are placed 2^32 up so that a segment from below the start still unwraps above 0.
    mutating func start(at sequence: UInt32, afterSYN: Bool) {
        first = (1 << 32) + UInt64(sequence) + (afterSYN ? 1 : 0)
        highest = first
        isStarted = true
    }

    /// The 64-bit number of a 32-bit one: the value nearest to the highest end seen, which holds
    /// while a sender never has more than 2 GiB in flight (TCP's window limit is 1 GiB).
    func unwrap(_ sequence: UInt32) -> UInt64 {
        let delta = Int64(Int32(bitPattern: sequence &- UInt32(truncatingIfNeeded: highest)))
        return UInt64(Int64(highest) + delta)
    }

    /// Adds a segment's payload at `start`. Returns whether it resent bytes already seen.
    mutating func add(start: UInt64, length: UInt64) -> Bool {
        let end = start + length
        if start >= highest {
            if start > highest { remember(highest..<start) }
            highest = end
            return false
        }
        let filled = fill(start..<min(end, highest))
        highest = max(highest, end)
        return !filled || start < first
    }

    private mutating func remember(_ gap: Range<UInt64>) {
        if gaps.count == Self.maxGaps { gaps.removeFirst() }
        gaps.append(gap)
    }

    /// Removes `range` from the gaps. Returns whether all of it was a gap: bytes not seen before.
    private mutating func fill(_ range: Range<UInt64>) -> Bool {
        guard !gaps.isEmpty else { return false }
        var whollyNew = false
        var next: [Range<UInt64>] = []
        for gap in gaps {
            guard gap.overlaps(range) else {
                next.append(gap)
                continue
            }
            if gap.lowerBound <= range.lowerBound && range.upperBound <= gap.upperBound { whollyNew = true }
            if gap.lowerBound < range.lowerBound { next.append(gap.lowerBound..<range.lowerBound) }
            if range.upperBound < gap.upperBound { next.append(range.upperBound..<gap.upperBound) }
        }
        gaps = next
        return whollyNew
    }
}
