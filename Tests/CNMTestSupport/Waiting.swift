import Glibc

/// A test's own expectation that did not hold, said in words.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Polls `condition` until it returns a value, or throws once `timeout` has passed: tests wait for
/// a condition with a deadline, never for a guessed time.
public func waitFor<T>(
    _ what: String,
    timeout: Duration = .seconds(30),
    every: Duration = .milliseconds(100),
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let value = try await condition() { return value }
        try await Task.sleep(for: every)
    }
    if let value = try await condition() { return value }
    throw TestFailure("timed out after \(timeout) waiting for \(what)")
}

/// `waitFor` for synchronous code (a thread that must not suspend, a namespace it entered).
public func waitForSync<T>(
    _ what: String,
    timeout: Duration = .seconds(10),
    every: Duration = .milliseconds(10),
    _ condition: () throws -> T?
) throws -> T {
    let deadline = ContinuousClock.now + timeout
    let pause = useconds_t(every.components.seconds * 1_000_000 + every.components.attoseconds / 1_000_000_000_000)
    while ContinuousClock.now < deadline {
        if let value = try condition() { return value }
        usleep(pause)
    }
    if let value = try condition() { return value }
    throw TestFailure("timed out after \(timeout) waiting for \(what)")
}
