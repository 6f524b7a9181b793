import CNMSystem
import Glibc
import Synchronization
import Testing

/// The reading-thread helper the ring buffer and packet capture share: waits without polling,
/// a reader's death is seen, and stop always returns.
@Suite struct ReaderThreadTests {
    /// A reader that takes "work" handed to it through an atomic, as a ring consumer takes records.
    final class Feeder: Sendable {
        let handed = Atomic<Int64>(0)
        let wakes = Atomic<Int>(0)
    }

    @Test(.timeLimit(.minutes(1)))
    func aWaitReturnsOnceTheReaderHasDoneTheWork() {
        let feeder = Feeder()
        let reader = ReaderThread(wake: { feeder.wakes.add(1, ordering: .relaxed) }) { reader in
            while !reader.isStopping {
                reader.advance(to: feeder.handed.load(ordering: .acquiring))
                usleep(1_000)
            }
        }
        #expect(reader.start())
        for request in Int64(1)...20 {
            feeder.handed.store(request, ordering: .releasing)
            #expect(reader.wait(until: request, timeout: .seconds(10)))
            #expect(reader.mark >= request)
        }
        reader.stop()
        #expect(reader.hasEnded && reader.failureReason == nil)
        // After stop nothing more will come: a wait says so at once.
        #expect(!reader.wait(until: 21, timeout: .seconds(10)))
    }

    @Test(.timeLimit(.minutes(1)))
    func aReaderThatFailsIsSeenAndNoWaitHangsOnIt() {
        let reader = ReaderThread(wake: {}, firstRestartDelay: .seconds(600)) { reader in
            reader.advance(to: 1)
            reader.fail("epoll_wait: Bad file descriptor")
        }
        reader.start()
        // The mark it reached before failing is still there; the next one does not come while it is down.
        #expect(reader.wait(until: 1, timeout: .seconds(10)))
        let deadline = ContinuousClock.now + .seconds(10)
        while !reader.isDown && ContinuousClock.now < deadline { usleep(1_000) }
        #expect(!reader.wait(until: 2, timeout: .seconds(10)))
        #expect(reader.failureReason == "epoll_wait: Bad file descriptor")
        reader.stop()
    }

    @Test(.timeLimit(.minutes(1)))
    func aWaitThatTimesOutSaysSoAndWakesTheReaderMeanwhile() {
        let feeder = Feeder()
        let reader = ReaderThread(wake: { feeder.wakes.add(1, ordering: .relaxed) }) { reader in
            while !reader.isStopping { usleep(1_000) }
        }
        reader.start()
        let start = ContinuousClock.now
        #expect(!reader.wait(until: 5, wakeEvery: .milliseconds(5), timeout: .milliseconds(200)))
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(feeder.wakes.load(ordering: .relaxed) >= 2, "the reader was woken while waiting")
        reader.stop()
    }
}

/// A reader that fails is run again after its backoff, counted, and its reason kept; waits made
/// while it is down return at once instead of running out their time.
@Suite struct ReaderThreadRestartTests {
    final class Runs: Sendable {
        let started = Atomic<Int>(0)
    }

    /// Waits for the mark across restarts: a wait made while the reader is down ends at once.
    static func reach(_ mark: Int64, _ reader: ReaderThread) -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if reader.wait(until: mark, timeout: .seconds(1)) { return true }
            usleep(1_000)
        }
        return false
    }

    @Test(.timeLimit(.minutes(1)))
    func aFailedReaderIsRestartedWithBackoffAndCounted() {
        let runs = Runs()
        let reader = ReaderThread(
            wake: {}, firstRestartDelay: .milliseconds(20), maxRestartDelay: .milliseconds(80)
        ) { reader in
            let run = runs.started.add(1, ordering: .relaxed).newValue
            // The first two runs fail at once, as a broken epoll would; the third keeps working.
            if run <= 2 {
                reader.fail("epoll_wait: Bad file descriptor (run \(run))")
                return
            }
            while !reader.isStopping {
                reader.advance(to: Int64(run))
                usleep(1_000)
            }
        }
        let began = ContinuousClock.now
        #expect(reader.start())
        #expect(Self.reach(3, reader), "the third run works")
        // 20 ms, then 40 ms of backoff before it.
        #expect(ContinuousClock.now - began >= .milliseconds(60))
        #expect(reader.failureCount == 2)
        #expect(reader.failureReason == "epoll_wait: Bad file descriptor (run 2)")
        #expect(!reader.isDown && !reader.hasEnded)
        reader.stop()
        #expect(reader.hasEnded && runs.started.load(ordering: .relaxed) == 3)
    }

    @Test(.timeLimit(.minutes(1)))
    func whileDownAWaitReturnsAtOnceAndAStopDoesNotWaitOutTheBackoff() {
        let reader = ReaderThread(wake: {}, firstRestartDelay: .seconds(600)) { reader in
            reader.fail("reading the ring: Input/output error")
        }
        reader.start()
        let deadline = ContinuousClock.now + .seconds(10)
        while !reader.isDown && ContinuousClock.now < deadline { usleep(1_000) }
        #expect(reader.isDown)
        let began = ContinuousClock.now
        #expect(!reader.wait(until: 1, timeout: .seconds(5)))
        #expect(ContinuousClock.now - began < .seconds(1), "a wait on a reader that is down ends at once")
        reader.stop()
        #expect(ContinuousClock.now - began < .seconds(5), "stop interrupts the 600 s backoff")
        #expect(reader.hasEnded && reader.failureCount == 1)
    }

    @Test(.timeLimit(.minutes(1)))
    func aReaderThatReturnsWithoutSayingWhyCountsAsFailed() {
        let runs = Runs()
        let reader = ReaderThread(wake: {}, firstRestartDelay: .milliseconds(1)) { reader in
            if runs.started.add(1, ordering: .relaxed).newValue == 1 { return }
            while !reader.isStopping {
                reader.advance(to: 1)
                usleep(1_000)
            }
        }
        reader.start()
        #expect(Self.reach(1, reader))
        #expect(reader.failureCount == 1 && reader.failureReason == "the reader returned on its own")
        reader.stop()
    }
}
