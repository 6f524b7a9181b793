internal import CLinux
import CNMModel
import CNMPacket
import CNMSystem
import Glibc
import Synchronization

/// Why capture could not start.
public struct CaptureError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// socket(AF_PACKET) refused: the agent lacks CAP_NET_RAW.
        case permissionDenied
        /// Any other failure, with its errno.
        case system(errno: Int32)
    }

    public var code: Code
    public var message: String

    public var description: String { message }
}

/// What capture counted since it opened.
public struct CaptureStatistics: Sendable, Equatable {
    /// Packets the filter kept, as the kernel counts them.
    public var packets: UInt64 = 0
    /// Packets the kernel dropped because the ring had no free block: the reader fell behind.
    public var ringDropped: UInt64 = 0
    /// Times the ring was full.
    public var ringFreezes: UInt64 = 0
    /// Packets read that are no TCP or UDP the parser can place: later fragments, odd headers.
    public var unparsed: UInt64 = 0
    /// Packets neither from nor to an address of the namespace: forwarded or bridged for others.
    public var notLocal: UInt64 = 0
    /// Packets of new flows the table had no room for.
    public var tableFull: UInt64 = 0
    /// Ended connections pushed out by new ones on the same ends past the table's bound (lost).
    public var displacedDropped: UInt64 = 0
    /// Flows followed now.
    public var flows = 0

    public init() {}
}

/// Packet headers of every interface of the agent's network namespace, from an AF_PACKET socket's
/// TPACKET_V3 ring, read on a thread of its own into a `WireFlowTable`.
///
/// The kernel's filter keeps TCP and UDP over IPv4 and IPv6 sent or received here, truncated to their
/// headers; on the loopback interface each packet passes once. The thread sleeps until the kernel
/// hands over a block (full, or after `retireMilliseconds`) or `drain` asks. The collection queue
/// reaches the table through `withTable`; the thread holds the same lock one block at a time.
public final class PacketCapture: @unchecked Sendable {
    /// 16 blocks of 256 KiB: 4 MiB, about 13,000 packets of headers.
    public static let blockBytes: UInt32 = 256 * 1024
    public static let blockCount: UInt32 = 16
    /// A block that is not full is handed over after this long.
    public static let retireMilliseconds: UInt32 = 4
    /// Bytes kept of each packet: the largest IPv4 and TCP headers (60 + 60) and IPv6 extension
    /// headers fit.
    public static let snapLength: UInt32 = 192
    /// How long after a packet it is certainly in a block handed over: the retire timeout, rounded
    /// up to the kernel's timer ticks (4 ms at 250 Hz), with margin for a late timer: measured on
    /// Linux 6.18, a lone packet reached the reader within 7.2 ms of being sent (60 tries).
    public static let handOverBoundNanos: Int64 = 30_000_000

    private let ring: OpaquePointer
    private let table: Mutex<WireFlowTable>
    /// Where packets with a non-loopback local end must have it: the namespace's addresses.
    private let localAddresses = Mutex<Set<IPAddress>>([])
    private let counters = Mutex(CaptureStatistics())
    /// The reading thread; its mark is the wall-clock start of the last scan of the ring that took
    /// every block handed over by then.
    private var reader: ReaderThread!
    private let closed = Mutex(false)
    /// Counted by the thread alone, added to `counters` after each scan.
    private var unparsed: UInt64 = 0
    private var notLocal: UInt64 = 0

    /// Opens the socket and its ring in the calling thread's network namespace. Throws
    /// `.permissionDenied` without CAP_NET_RAW.
    public init(maxFlows: Int) throws(CaptureError) {
        let config = cnm_linux_packet_ring_config(
            block_size: Self.blockBytes, block_count: Self.blockCount, retire_ms: Self.retireMilliseconds,
            snap_length: Self.snapLength)
        guard let ring = cnm_linux_packet_ring_open(config) else {
            let number = errno
            let text = "socket(AF_PACKET) with a TPACKET_V3 ring: \(String(cString: strerror(number)))"
            throw CaptureError(
                code: number == EPERM || number == EACCES ? .permissionDenied : .system(errno: number), message: text)
        }
        self.ring = ring
        self.table = Mutex(WireFlowTable(maxFlows: maxFlows))
        let wake: @Sendable () -> Void = { [ring = UInt(bitPattern: ring)] in
            cnm_linux_packet_ring_wake(OpaquePointer(bitPattern: ring))
        }
        reader = ReaderThread(wake: wake) { [unowned self] reader in self.run(reader) }
        setLocalAddresses(Self.namespaceAddresses())
    }

    deinit { stop() }

    /// Starts the reading thread. Call once; `stop` ends it.
    public func start() { reader.start() }

    /// Why the reading thread last failed, if it ever did; it is restarted after each failure.
    public var readerFailure: String? { reader.failureReason }

    /// How many times the reading thread failed and was restarted.
    public var readerFailures: UInt64 { reader.failureCount }

    /// Stops the thread and closes the socket.
    public func stop() {
        let wasClosed = closed.withLock { c in
            defer { c = true }
            return c
        }
        guard !wasClosed else { return }
        reader.stop()
        cnm_linux_packet_ring_close(ring)
    }

    /// The addresses packets sent from or received at a non-loopback interface must have for their
    /// local end; refresh when interfaces change.
    public func setLocalAddresses(_ addresses: Set<IPAddress>) {
        localAddresses.withLock { $0 = addresses }
    }

    /// Runs `body` on the flow table, with the reading thread held off.
    public func withTable<T>(_ body: (inout WireFlowTable) -> T) -> T {
        table.withLock { body(&$0) }
    }

    /// Returns once every packet the kernel saw at or before `time` (wall clock, ns) is in the table,
    /// or false after `timeoutNanos` (the thread is stuck or stopped). Waits at least until the kernel
    /// has certainly handed over the block holding such a packet.
    public func drain(through time: Int64, timeoutNanos: Int64 = 2_000_000_000) -> Bool {
        let needed = time + Self.handOverBoundNanos
        guard reader.mark < needed else { return true }
        // Until `needed` the kernel may still hold the block: no scan before then can take it.
        let now = wallClockNanos()
        if now < needed { usleep(useconds_t(min((needed - now) / 1000, 1_000_000))) }
        // A scan that starts from now takes every block handed over by `needed`.
        return reader.wait(until: needed, wakeEvery: .milliseconds(1), timeout: .nanoseconds(timeoutNanos))
    }

    /// Counts since the capture opened; reads the kernel's counters (which reading resets).
    public func statistics() -> CaptureStatistics {
        var kernel = cnm_linux_packet_ring_stats()
        let read = cnm_linux_packet_ring_stats(ring, &kernel) == 0
        let health = table.withLock { ($0.health, $0.count) }
        return counters.withLock { c in
            if read {
                c.packets += UInt64(kernel.packets)
                c.ringDropped += UInt64(kernel.drops)
                c.ringFreezes += UInt64(kernel.freezes)
            }
            c.tableFull = health.0.tableFull
            c.displacedDropped = health.0.displacedDropped
            c.flows = health.1
            return c
        }
    }

    private func run(_ reader: ReaderThread) {
        while !reader.isStopping {
            let from = wallClockNanos()
            scan()
            reader.advance(to: from)
            // Bounded, so a stop or drain never waits on traffic.
            let waited = cnm_linux_packet_ring_wait(ring, 1000)
            if waited < 0 {
                reader.fail("waiting on the packet ring: \(String(cString: strerror(errno)))")
                return
            }
        }
    }

    /// Takes every block the kernel has handed over, in ring order.
    private func scan() {
        let local = localAddresses.withLock { $0 }
        var block = cnm_linux_packet_block()
        var scannedUnparsed: UInt64 = 0
        var scannedNotLocal: UInt64 = 0
        while cnm_linux_packet_ring_take(ring, &block) == 1 {
            table.withLock { table in
                var packet = cnm_linux_packet()
                while cnm_linux_packet_next(ring, &block, &packet) == 1 {
                    let bytes = UnsafeRawBufferPointer(start: packet.data, count: Int(packet.captured))
                    guard let headers = PacketHeaders(networkLayer: bytes, wireLength: Int(packet.length)) else {
                        scannedUnparsed += 1
                        continue
                    }
                    let way: PacketWay
                    if packet.is_loopback != 0 {
                        way = .loopback
                    } else if packet.packet_type == cnm_linux_packet_outgoing {
                        way = .sent
                        guard local.contains(headers.source.address) else {
                            scannedNotLocal += 1
                            continue
                        }
                    } else {
                        way = .received
                        guard local.contains(headers.destination.address) else {
                            scannedNotLocal += 1
                            continue
                        }
                    }
                    table.record(headers, way: way, at: packet.timestamp_ns)
                }
            }
            cnm_linux_packet_ring_release(ring, &block)
        }
        if scannedUnparsed + scannedNotLocal > 0 {
            counters.withLock {
                $0.unparsed += scannedUnparsed
                $0.notLocal += scannedNotLocal
            }
        }
    }

    /// The names of the namespace's interfaces (all of which the socket captures on).
    public static func interfaceNames() -> [String] {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard cnm_linux_interface_names(&buffer, UInt32(buffer.count)) >= 0 else { return [] }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self)
        return text.split(separator: " ").map(String.init)
    }

    /// Every address assigned to an interface of the calling thread's network namespace.
    public static func namespaceAddresses() -> Set<IPAddress> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses = Set<IPAddress>()
        var next = list
        while let entry = next {
            defer { next = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr else { continue }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                let v4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
                addresses.insert(.v4(UInt32(bigEndian: v4)))
            case AF_INET6:
                let v6 = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                if let ip = IPAddress(networkBytes: withUnsafeBytes(of: v6) { Array($0) }) { addresses.insert(ip) }
            default:
                break
            }
        }
        return addresses
    }
}

/// CLOCK_REALTIME in ns: the clock the kernel stamps captured packets with.
public func wallClockNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
