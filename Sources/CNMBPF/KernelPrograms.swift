internal import CBPF
import CNMModel
import CNMSystem
import Glibc
import Synchronization

/// How the programs count bytes; probed in this order at start-up.
public enum EBPFStrategy: String, Sendable, CaseIterable {
    /// `sock:sock_send_length` / `sock_recv_length` (Linux 6.x): every send and receive, in the
    /// caller's context.
    case sockLength = "sock_length"
    /// The kernel's own `tcp_sock` counters at state changes and by `iter/tcp`; UDP from the socket
    /// syscalls' exits. For kernels without the sock_length tracepoints.
    case kernelCounters = "kernel_counters"

    var cValue: Int32 {
        switch self {
        case .sockLength: Int32(CNM_BPF_STRATEGY_SOCK_LENGTH.rawValue)
        case .kernelCounters: Int32(CNM_BPF_STRATEGY_KERNEL_COUNTERS.rawValue)
        }
    }

    /// What the strategy needs from the kernel, for `/status`.
    public var needs: String {
        switch self {
        case .sockLength: "tracepoints sock:sock_send_length and sock:sock_recv_length (Linux 6.x)"
        case .kernelCounters: "tp_btf sock:inet_sock_set_state, iter/tcp and the syscall tracepoints (Linux 5.8+)"
        }
    }
}

public struct EBPFError: Error, CustomStringConvertible {
    public var description: String
}

/// The loaded and attached eBPF programs. Table and iterator reads are meant for one thread (the
/// collection queue); closed records come from the consumer thread started by `startReadingClosed`.
public final class KernelPrograms: @unchecked Sendable {
    public let strategy: EBPFStrategy
    private let handle: OpaquePointer
    private let consumer = Mutex<ConsumerThread?>(nil)
    private let closed = Mutex(false)

    /// Entries each flow table holds.
    public let maxFlows: Int

    /// Whether this binary carries the programs at all.
    public static var areBuiltIn: Bool { cnm_bpf_object_size() > 0 }

    /// Loads and attaches the programs for `strategy`, each flow table holding `maxFlows` entries.
    public init(strategy: EBPFStrategy, maxFlows: Int) throws(EBPFError) {
        var message = [CChar](repeating: 0, count: 8192)
        guard let handle = cnm_bpf_open(strategy.cValue, UInt32(clamping: maxFlows), &message, message.count) else {
            throw EBPFError(description: String(decoding: message.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self))
        }
        self.handle = handle
        self.strategy = strategy
        self.maxFlows = maxFlows
    }

    deinit { close() }

    /// Detaches everything; stops the consumer thread first.
    public func close() {
        let wasClosed = closed.withLock { c in
            defer { c = true }
            return c
        }
        guard !wasClosed else { return }
        if let thread = consumer.withLock({ $0.take() }) { thread.stop() }
        cnm_bpf_close(handle)
    }

    /// Starts reading closed flows from the ring buffer on a thread of its own, which hands each
    /// batch to `deliver`. The thread sleeps until `drainClosed` asks, or until the programs find a
    /// quarter of the ring waiting. Call once; `close` stops it.
    public func startReadingClosed(deliver: @escaping @Sendable ([FlowRecord]) -> Void) {
        let thread = ConsumerThread(handle: handle, deliver: deliver)
        consumer.withLock { $0 = thread }
        thread.start()
    }

    /// Returns once every flow that closed before the call has been delivered, or after `timeoutMicros`
    /// (false then: the reader is stuck or stopped).
    @discardableResult
    public func drainClosed(timeoutMicros: UInt64 = 2_000_000) -> Bool {
        guard let thread = consumer.withLock({ $0 }) else { return false }
        return thread.drain(timeoutMicros: timeoutMicros)
    }

    /// Why the closed-flow reader last failed, if it ever did; it is restarted after each failure.
    public var closedReaderFailure: String? { consumer.withLock { $0 }?.reader.failureReason }

    /// How many times the closed-flow reader failed and was restarted.
    public var closedReaderFailures: UInt64 { consumer.withLock { $0 }?.reader.failureCount ?? 0 }

    /// Every open TCP flow of the network namespace at `namespacePath` (the agent's own when nil),
    /// read by iter/tcp and handed to `body` one at a time: a host's 100,000 sockets are never held
    /// as one list. When reading fails part way, `body` has had the records before the failure.
    public func forEachTCPFlow(namespacePath: String?, _ body: (FlowRecord) -> Void) throws(EBPFError) {
        try readIterator(CNM_BPF_ITER_TCP, namespacePath: namespacePath, recordSize: MemoryLayout<cnm_flow_record>.size)
        {
            body(FlowRecord($0.loadUnaligned(as: cnm_flow_record.self)))
        }
    }

    /// The kernel addresses of every UDP socket in the namespace, read by iter/udp.
    public func udpSockets(namespacePath: String?) throws(EBPFError) -> Set<UInt64> {
        var sockets = Set<UInt64>()
        try readIterator(CNM_BPF_ITER_UDP, namespacePath: namespacePath, recordSize: 8) {
            sockets.insert($0.loadUnaligned(as: UInt64.self))
        }
        return sockets
    }

    /// Every UDP flow in the table.
    public func udpFlows() -> [FlowRecord] { tableEntries(CNM_BPF_TABLE_UDP) }

    /// Closed TCP flows that found the ring buffer full; removed from the table as they are read.
    public func takeDeferredClosed() -> [FlowRecord] {
        let records = tableEntries(CNM_BPF_TABLE_DEFERRED)
        for r in records { delete(r, from: CNM_BPF_TABLE_DEFERRED) }
        return records
    }

    /// Removes UDP flows whose socket is gone.
    public func deleteUDPFlow(_ record: FlowRecord) { delete(record, from: CNM_BPF_TABLE_UDP) }

    /// The programs' loss counters, or nil when the map could not be read.
    public func telemetry() -> EBPFTelemetry? {
        var t = cnm_telemetry()
        guard cnm_bpf_telemetry(handle, &t) == 0 else { return nil }
        var out = EBPFTelemetry()
        out.tableFull = t.table_full
        out.ringBufferDeferred = t.ringbuf_deferred
        out.closedLost = t.closed_lost
        out.udpPeerUnknown = t.udp_peer_unknown
        out.syscallTableFull = t.syscall_table_full
        return out
    }

    /// The last path component of a cgroup the programs met, by id.
    public func cgroupName(_ id: UInt64) -> String? {
        var name = [CChar](repeating: 0, count: Int(CNM_CGROUP_NAME_LEN))
        guard cnm_bpf_cgroup_name(handle, id, &name, name.count) == 0 else { return nil }
        return String(decoding: name.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self)
    }

    /// Runs an iterator and hands each fixed-size record it writes to `body`, one read buffer at a
    /// time (the kernel's seq_file never splits a record across reads).
    private func readIterator(
        _ which: cnm_bpf_iterator, namespacePath: String?, recordSize: Int, _ body: (UnsafeRawBufferPointer) -> Void
    ) throws(EBPFError) {
        let open = { [handle] in cnm_bpf_iterator_open(handle, Int32(which.rawValue)) }
        let fd: Int32
        if let namespacePath {
            // The iterator walks the namespace of the thread that creates it.
            fd = try NetworkNamespace.run(
                in: namespacePath, entering: { EBPFError(description: "entering \(namespacePath): \($0)") }
            ) { () throws(EBPFError) in open() }
        } else {
            fd = open()
        }
        guard fd >= 0 else { throw EBPFError(description: "iterator: \(String(cString: strerror(-fd)))") }
        defer { Glibc.close(fd) }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { chunk.deallocate() }
        var held = 0  // bytes of a record cut short at the end of the buffer, kept at its start
        while true {
            let n = read(fd, chunk.baseAddress! + held, chunk.count - held)
            if n == 0 { return }
            if n < 0 {
                if errno == EINTR { continue }
                throw EBPFError(description: "reading the iterator: \(String(cString: strerror(errno)))")
            }
            let filled = held + n
            var offset = 0
            while offset + recordSize <= filled {
                body(UnsafeRawBufferPointer(rebasing: chunk[offset..<offset + recordSize]))
                offset += recordSize
            }
            held = filled - offset
            if held > 0 { chunk.baseAddress!.copyMemory(from: chunk.baseAddress! + offset, byteCount: held) }
        }
    }

    private func tableEntries(_ table: cnm_bpf_table) -> [FlowRecord] {
        var records: [FlowRecord] = []
        var key = cnm_flow_key()
        var next = cnm_flow_key()
        var value = cnm_flow()
        var first = true
        while true {
            let rc =
                first
                ? cnm_bpf_table_next(handle, Int32(table.rawValue), nil, &next, &value)
                : cnm_bpf_table_next(handle, Int32(table.rawValue), &key, &next, &value)
            guard rc == 0 else { return records }
            first = false
            records.append(FlowRecord(cnm_flow_record(key: next, flow: value)))
            key = next
        }
    }

    private func delete(_ record: FlowRecord, from table: cnm_bpf_table) {
        var key = cnm_flow_key(record.id, closedTag: record.closedTag)
        _ = cnm_bpf_table_delete(handle, Int32(table.rawValue), &key)
    }
}

/// The ring buffer's reader: a thread of its own blocked in epoll, woken to drain or to stop.
private final class ConsumerThread: @unchecked Sendable {
    private let handle: OpaquePointer
    private let deliver: @Sendable ([FlowRecord]) -> Void
    /// Drain requests made; the reader's mark is the last one whose records are all delivered.
    private let requested = Atomic<Int64>(0)
    private(set) var reader: ReaderThread!
    /// Filled by the C callback during one cnm_bpf_consume call, on the reader's thread only.
    fileprivate var batch: [FlowRecord] = []
    /// Records handed over at once at most.
    fileprivate static let batchLimit = 1024

    init(handle: OpaquePointer, deliver: @escaping @Sendable ([FlowRecord]) -> Void) {
        self.handle = handle
        self.deliver = deliver
        let wake: @Sendable () -> Void = { [handle = UInt(bitPattern: handle)] in
            cnm_bpf_wake(OpaquePointer(bitPattern: handle))
        }
        reader = ReaderThread(wake: wake) { [unowned self] reader in self.run(reader) }
        reader.advance(to: 0)
    }

    func start() { reader.start() }

    private func run(_ reader: ReaderThread) {
        let context = Unmanaged.passUnretained(self).toOpaque()
        while !reader.isStopping {
            let waited = cnm_bpf_wait(handle, -1)
            if waited < 0 {
                reader.fail("waiting on the ring buffer: \(String(cString: strerror(-waited)))")
                return
            }
            // Read after the wake: every record a drain request waits for is in the ring by now.
            let target = requested.load(ordering: .acquiring)
            let rc = cnm_bpf_consume(
                handle,
                { context, record in
                    let me = Unmanaged<ConsumerThread>.fromOpaque(context!).takeUnretainedValue()
                    me.batch.append(FlowRecord(record!.pointee))
                    // A burst keeps the ring full for as long as it lasts: hand records over as
                    // they come, so that what waits here stays small and the ring's space is freed.
                    if me.batch.count >= ConsumerThread.batchLimit {
                        me.deliver(me.batch)
                        me.batch.removeAll(keepingCapacity: true)
                    }
                }, context)
            // What a failed read took out of the ring before the error is still delivered.
            if !batch.isEmpty {
                deliver(batch)
                batch.removeAll(keepingCapacity: true)
            }
            if rc < 0 {
                reader.fail("reading the ring buffer: \(String(cString: strerror(-rc)))")
                return
            }
            reader.advance(to: target)
        }
    }

    /// Waits until every record in the ring when called has been delivered; false after `timeoutMicros`
    /// or when the reader is gone.
    func drain(timeoutMicros: UInt64) -> Bool {
        let request = requested.add(1, ordering: .acquiringAndReleasing).newValue
        cnm_bpf_wake(handle)
        return reader.wait(until: request, timeout: .microseconds(timeoutMicros))
    }

    func stop() { reader.stop() }
}
