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
        let reader = ReaderThread(wake: {}) { reader in
            reader.advance(to: 1)
            reader.fail("epoll_wait: Bad file descriptor")
        }
        reader.start()
        // The mark it reached before failing is still there; the next one never comes.
        #expect(reader.wait(until: 1, timeout: .seconds(10)))
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
