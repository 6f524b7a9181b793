import Glibc

/// A reading thread of its own (a ring buffer's or a packet ring's consumer), with what both need:
/// a stop flag, a progress mark that others can wait for without polling, and supervision: a
/// reader that fails is counted, its reason kept, and it is run again after a backoff (doubling
/// from `firstRestartDelay` to `maxRestartDelay`, started over once a run lasted a minute), so
/// that one bad read does not end collection for the agent's lifetime. The reader's own blocking
/// wait and its wake-up (an eventfd or the ring's poll) stay with the reader: `wake` is called to
/// interrupt it.
public final class ReaderThread: @unchecked Sendable {
    /// Guards the state below; `changed` is signalled whenever it moves.
    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    private var progress: Int64 = .min
    private var ended = false
    private var failure: String?
    private var failures: UInt64 = 0
    /// Between a failure and the restart: waits return at once instead of timing out.
    private var down = false
    private var stopping = false
    private var thread = pthread_t()
    private var started = false
    private let wake: @Sendable () -> Void
    private let body: @Sendable (ReaderThread) -> Void
    private let firstRestartDelay: Duration
    private let maxRestartDelay: Duration
    /// A run that lasted this long starts the backoff over.
    private static let healthyRun: Duration = .seconds(60)

    /// - Parameters:
    ///   - wake: interrupts the reader's blocking wait (so it sees a stop or a drain request).
    ///   - body: the reader's loop; it returns when `isStopping`, or calls `fail` and returns, and is
    ///     then called again after the backoff.
    public init(
        wake: @escaping @Sendable () -> Void, firstRestartDelay: Duration = .milliseconds(100),
        maxRestartDelay: Duration = .seconds(30), body: @escaping @Sendable (ReaderThread) -> Void
    ) {
        self.wake = wake
        self.body = body
        self.firstRestartDelay = firstRestartDelay
        self.maxRestartDelay = max(maxRestartDelay, firstRestartDelay)
        pthread_mutex_init(&mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        // Waits are measured on the monotonic clock: a wall-clock step neither cuts nor stretches them.
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(&changed, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(&changed)
        pthread_mutex_destroy(&mutex)
    }

    /// Starts the thread; false (and `failure` says why) when it could not be created.
    @discardableResult
    public func start() -> Bool {
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                let me = Unmanaged<ReaderThread>.fromOpaque(raw!).takeRetainedValue()
                me.supervise()
                me.changing { me.ended = true }
                return nil
            }, context)
        started = rc == 0
        if !started {
            Unmanaged<ReaderThread>.fromOpaque(context).release()
            changing {
                ended = true
                failure = "pthread_create: \(String(cString: strerror(rc)))"
            }
        }
        return started
    }

    /// Asks the thread to end, wakes it and waits for it.
    public func stop() {
        let first = changing {
            defer { stopping = true }
            return !stopping
        }
        guard first else { return }
        wake()
        if started { pthread_join(thread, nil) }
    }

    public var isStopping: Bool { locked { stopping } }

    /// Why the reader last failed, if it ever did (kept after it was restarted).
    public var failureReason: String? { locked { failure } }

    /// How many times the reader failed (and was, or is about to be, run again).
    public var failureCount: UInt64 { locked { failures } }

    /// Whether the reader is between a failure and its restart.
    public var isDown: Bool { locked { down } }

    /// Whether the thread is gone (stopped, or never started).
    public var hasEnded: Bool { locked { ended } }

    /// Called by the reader: this run ends because of `reason` (it returns from `body` next).
    public func fail(_ reason: String) { changing { failure = reason } }

    /// Runs the body until stopped, again after each failure once the backoff has passed.
    private func supervise() {
        var delay = firstRestartDelay
        while true {
            let began = ContinuousClock.now
            body(self)
            let stopped = changing {
                guard !stopping else { return true }
                // A body that returns without saying why has failed all the same.
                if failure == nil { failure = "the reader returned on its own" }
                failures += 1
                down = true
                return false
            }
            if stopped { return }
            if ContinuousClock.now - began >= Self.healthyRun { delay = firstRestartDelay }
            let deadline = Self.monotonicNanos() + Self.nanos(delay)
            pthread_mutex_lock(&mutex)
            while !stopping && Self.monotonicNanos() < deadline { waitForChange(until: deadline) }
            let stoppedMeanwhile = stopping
            down = false
            pthread_cond_broadcast(&changed)
            pthread_mutex_unlock(&mutex)
            if stoppedMeanwhile { return }
            delay = min(delay * 2, maxRestartDelay)
        }
    }

    /// Called by the reader: its work is done up to `mark` (a count, or a time). Marks only grow.
    public func advance(to mark: Int64) {
        changing { progress = max(progress, mark) }
    }

    /// The reader's mark now.
    public var mark: Int64 { locked { progress } }

    /// Waits until the reader's mark reaches `mark`, waking the reader every `wakeEvery` so it
    /// looks again, for at most `timeout`. False when the time ran out, the thread ended first, or the
    /// reader is down waiting to be restarted (nothing will move before then).
    public func wait(until mark: Int64, wakeEvery: Duration? = nil, timeout: Duration) -> Bool {
        let deadline = Self.monotonicNanos() + Self.nanos(timeout)
        if wakeEvery != nil { wake() }
        var nextWake = wakeEvery.map { Self.monotonicNanos() + Self.nanos($0) } ?? .max
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while progress < mark {
            guard !ended && !stopping && !down else { return false }
            let now = Self.monotonicNanos()
            guard now < deadline else { return false }
            if now >= nextWake, let wakeEvery {
                pthread_mutex_unlock(&mutex)
                wake()
                pthread_mutex_lock(&mutex)
                nextWake = now + Self.nanos(wakeEvery)
                continue
            }
            waitForChange(until: min(deadline, nextWake))
        }
        return true
    }

    /// With the lock held: sleeps until something changes or the monotonic clock reaches `nanos`.
    private func waitForChange(until nanos: Int64) {
        var until = timespec()
        until.tv_sec = Int(nanos / 1_000_000_000)
        until.tv_nsec = Int(nanos % 1_000_000_000)
        _ = pthread_cond_timedwait(&changed, &mutex, &until)
    }

    /// Reads under the lock: the reader checks `isStopping` every turn, so reads wake nobody.
    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }

    /// Changes under the lock, and wakes every waiter to look again.
    private func changing<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer {
            pthread_cond_broadcast(&changed)
            pthread_mutex_unlock(&mutex)
        }
        return body()
    }

    private static func nanos(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    private static func monotonicNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
