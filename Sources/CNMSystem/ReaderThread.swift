import Glibc

/// A reading thread of its own (a ring buffer's or a packet ring's consumer), with what both need:
/// a stop flag, a progress mark that others can wait for without polling, and the reason the
/// thread ended if it ended by itself. The reader's own blocking wait and its wake-up (an eventfd
/// or the ring's poll) stay with the reader: `wake` is called to interrupt it.
public final class ReaderThread: @unchecked Sendable {
    /// Guards `progress`, `ended` and `failure`; `changed` is signalled whenever one moves.
    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    private var progress: Int64 = .min
    private var ended = false
    private var failure: String?
    private var stopping = false
    private var thread = pthread_t()
    private var started = false
    private let wake: @Sendable () -> Void
    private let body: @Sendable (ReaderThread) -> Void

    /// - Parameters:
    ///   - wake: interrupts the reader's blocking wait (so it sees a stop or a drain request).
    ///   - body: the reader's loop; it returns when `isStopping`, or calls `fail` and returns.
    public init(wake: @escaping @Sendable () -> Void, body: @escaping @Sendable (ReaderThread) -> Void) {
        self.wake = wake
        self.body = body
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
                me.body(me)
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

    /// Why the thread ended by itself, if it did.
    public var failureReason: String? { locked { failure } }

    /// Whether the thread is gone (stopped, failed, or never started).
    public var hasEnded: Bool { locked { ended } }

    /// Called by the reader: it ends because of `reason` (it returns from `body` next).
    public func fail(_ reason: String) { changing { failure = reason } }

    /// Called by the reader: its work is done up to `mark` (a count, or a time). Marks only grow.
    public func advance(to mark: Int64) {
        changing { progress = max(progress, mark) }
    }

    /// The reader's mark now.
    public var mark: Int64 { locked { progress } }

    /// Waits until the reader's mark reaches `mark`, waking the reader every `wakeEvery` so it
    /// looks again, for at most `timeout`. False when the time ran out or the thread ended first.
    public func wait(until mark: Int64, wakeEvery: Duration? = nil, timeout: Duration) -> Bool {
        let deadline = Self.monotonicNanos() + Self.nanos(timeout)
        if wakeEvery != nil { wake() }
        var nextWake = wakeEvery.map { Self.monotonicNanos() + Self.nanos($0) } ?? .max
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while progress < mark {
            guard !ended && !stopping else { return false }
            let now = Self.monotonicNanos()
            guard now < deadline else { return false }
            if now >= nextWake, let wakeEvery {
                pthread_mutex_unlock(&mutex)
                wake()
                pthread_mutex_lock(&mutex)
                nextWake = now + Self.nanos(wakeEvery)
                continue
            }
            var until = timespec()
            let target = min(deadline, nextWake)
            until.tv_sec = Int(target / 1_000_000_000)
            until.tv_nsec = Int(target % 1_000_000_000)
            _ = pthread_cond_timedwait(&changed, &mutex, &until)
        }
        return true
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
