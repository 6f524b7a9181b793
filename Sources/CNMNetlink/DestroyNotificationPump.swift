internal import CLinux
import CNMSystem
import Glibc
import Synchronization

/// One thread that reads every watched `DestroyListener` as soon as its socket is readable, so a burst of
/// closes between two samples never outgrows a receive queue: the kernel's queue holds notifications only
/// until the pump takes them, and the listener's pending list (bounded by its `maxPending`) keeps them
/// until the next drain.
///
/// One thread for all namespaces: a host with a hundred containers has a hundred listeners, and poll(2)
/// waits on all of them at once.
public final class DestroyNotificationPump: @unchecked Sendable {
    private struct Watched {
        var listener: DestroyListener
        var netns: UInt64
    }

    private let watched = Mutex<[Watched]>([])
    /// How long the thread lets notifications gather after a read.
    static let batchMilliseconds: Int32 = 25
    private let wakeDescriptor: Int32
    private var reader: ReaderThread!

    /// Throws when the eventfd that wakes the thread cannot be made.
    public init() throws(NetlinkError) {
        let fd = cnm_linux_eventfd()
        guard fd >= 0 else { throw NetlinkError.system("eventfd") }
        wakeDescriptor = fd
        reader = ReaderThread(wake: { Self.wake(fd) }) { [unowned self] reader in self.run(reader) }
    }

    deinit {
        stop()
        close(wakeDescriptor)
    }

    /// Starts the thread; false when it could not be created (drains still read what is queued).
    @discardableResult
    public func start() -> Bool { reader.start() }

    /// Ends the thread; listeners keep what it read until they are drained.
    public func stop() { reader.stop() }

    /// Why the thread last failed, if it ever did; it is restarted after each failure.
    public var failureReason: String? { reader.failureReason }

    /// Reads `listener` from now on, parsing its notifications as belonging to `netns`.
    public func watch(_ listener: DestroyListener, netns: UInt64) {
        guard listener.pollDescriptor != nil else { return }
        watched.withLock { $0.append(Watched(listener: listener, netns: netns)) }
        Self.wake(wakeDescriptor)
    }

    /// Stops reading `listener` (its namespace ended); what it read stays for its last drain.
    public func unwatch(_ listener: DestroyListener) {
        watched.withLock { $0.removeAll { $0.listener === listener } }
        Self.wake(wakeDescriptor)
    }

    /// Makes the thread's poll return, so it sees a stop or a changed list.
    private static func wake(_ eventfd: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(eventfd, &one, MemoryLayout<UInt64>.size)
    }

    private func run(_ reader: ReaderThread) {
        while !reader.isStopping {
            // The copy keeps each listener, and so its socket, open while poll waits on it.
            let now = watched.withLock { $0 }
            var descriptors = [pollfd(fd: wakeDescriptor, events: Int16(POLLIN), revents: 0)]
            for entry in now {
                descriptors.append(pollfd(fd: entry.listener.pollDescriptor ?? -1, events: Int16(POLLIN), revents: 0))
            }
            let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
            if ready < 0 {
                guard errno == EINTR else {
                    reader.fail("poll: \(String(cString: strerror(errno)))")
                    return
                }
                continue
            }
            if descriptors[0].revents != 0 {
                var count: UInt64 = 0
                _ = Glibc.read(wakeDescriptor, &count, MemoryLayout<UInt64>.size)
            }
            var collected = false
            for (entry, descriptor) in zip(now, descriptors.dropFirst()) where descriptor.revents != 0 {
                entry.listener.collect(netns: entry.netns)
                collected = true
            }
            // Woken for every close, the thread would cost more than the notifications; a pause lets a
            // batch gather (at 20,000 closes a second, 500 of the about 12,000 a default queue holds).
            if collected {
                var wake = pollfd(fd: wakeDescriptor, events: Int16(POLLIN), revents: 0)
                _ = poll(&wake, 1, Self.batchMilliseconds)
            }
        }
    }
}
