/// Exponential backoff with jitter: the n-th retry (n from 0) waits a random time between half and all
/// of `min(max, base × 2ⁿ)`, so that agents that failed together do not all come back at once, and
/// never less than half the full step, so that a struggling server gets real relief.
public struct Backoff: Sendable, Equatable {
    public var base: Double
    public var max: Double

    public init(base: Double, max: Double) {
        self.base = base
        self.max = Swift.max(base, max)
    }

    /// The longest wait for retry `attempt`, in seconds.
    public func ceiling(attempt: Int) -> Double {
        // 2^62 already exceeds any sane maximum; stop doubling before the exponent overflows.
        Swift.min(max, base * Double(sign: .plus, exponent: Swift.min(attempt, 62), significand: 1))
    }

    /// The wait for retry `attempt`; `unit` is a random number in [0, 1).
    public func delay(attempt: Int, unit: Double) -> Double {
        let top = ceiling(attempt: attempt)
        return top / 2 + top / 2 * Swift.min(Swift.max(unit, 0), 1)
    }

    public func delay(attempt: Int) -> Double {
        delay(attempt: attempt, unit: Double.random(in: 0..<1))
    }

    /// The wait for retry `attempt` as a duration.
    public func duration(attempt: Int) -> Duration {
        // A year is longer than any wait worth making, and far from overflowing the nanoseconds.
        .nanoseconds(Int64(Swift.min(delay(attempt: attempt), 31_536_000) * 1e9))
    }
}
