import CNMModel
import CNMReport
import NIOCore
import Synchronization

/// A compressor for the intervals kept behind the latest: their JSON shrinks some fiftyfold (12 MB
/// for 20,000 connections becomes about 220 KB), so history costs little of the memory budget. The
/// server does not link a compression library itself; the agent passes one in (zstd).
public struct IntervalCompression: Sendable {
    /// The compressed bytes, or nil to keep the JSON as it is.
    public var compress: @Sendable (ByteBuffer) -> [UInt8]?
    /// The JSON again, `size` bytes, or nil when the bytes do not decompress.
    public var decompress: @Sendable (_ compressed: [UInt8], _ size: Int) -> [UInt8]?

    public init(
        compress: @escaping @Sendable (ByteBuffer) -> [UInt8]?,
        decompress: @escaping @Sendable ([UInt8], Int) -> [UInt8]?
    ) {
        self.compress = compress
        self.decompress = decompress
    }
}

/// The API's intervals, each encoded as JSON once, when it is published, and served to every reader
/// as those same bytes: twenty readers of 60,000 connections cost one encode, not twenty. Those
/// behind the latest are kept compressed when a compressor is given, and decompressed for the
/// readers that ask for them (`?after=N` from a reader that fell behind).
public final class IntervalHistory: ReportSubscriber {
    /// One encoded interval.
    public struct Interval: Sendable {
        public var sequence: UInt64
        public var connections: Int
        fileprivate var stored: Stored

        fileprivate enum Stored: Sendable {
            case plain(ByteBuffer)
            case compressed([UInt8], size: Int)
        }

        /// What it takes of memory.
        public var storedBytes: Int {
            switch stored {
            case .plain(let json): json.readableBytes
            case .compressed(let bytes, _): bytes.count
            }
        }

        var isCompressed: Bool {
            if case .compressed = stored { true } else { false }
        }
    }

    /// At most this many intervals are kept, for readers that poll less often than the interval.
    public let retained: Int
    /// And at most this many bytes in all, as stored; the latest interval is kept whatever its size.
    public let maxBytes: Int
    private let describe: @Sendable () -> (host: String, mode: AgentStatus.Mode)
    private let compression: IntervalCompression?
    private let intervals = Mutex<[Interval]>([])
    private let failures = Mutex<UInt64>(0)

    /// `describe` names the host and mode that each interval's JSON carries.
    public init(
        retained: Int = 16, maxBytes: Int = 64 << 20, compression: IntervalCompression? = nil,
        describe: @escaping @Sendable () -> (host: String, mode: AgentStatus.Mode)
    ) {
        self.retained = max(1, retained)
        self.maxBytes = maxBytes
        self.compression = compression
        self.describe = describe
    }

    public convenience init(
        status: StatusStore, retained: Int = 16, maxBytes: Int = 64 << 20, compression: IntervalCompression? = nil
    ) {
        self.init(retained: retained, maxBytes: maxBytes, compression: compression) {
            let s = status.status
            return (s.hostname, s.mode)
        }
    }

    public func receive(_ report: IntervalReport) {
        let (host, mode) = describe()
        let json = IntervalJSON.encode(report, host: host, mode: mode)
        let interval = Interval(
            sequence: report.sequence, connections: report.connections.count, stored: .plain(json))
        // The interval it replaces as the latest is compressed outside the lock: readers of the
        // latest do not wait for it.
        let previous: Interval? = intervals.withLock { kept in
            defer { kept.append(interval) }
            return kept.last
        }
        if let compression, let previous, case .plain(let plain) = previous.stored,
            let compressed = compression.compress(plain)
        {
            intervals.withLock { kept in
                if let index = kept.lastIndex(where: { $0.sequence == previous.sequence }) {
                    kept[index].stored = .compressed(compressed, size: plain.readableBytes)
                }
            }
        }
        intervals.withLock { kept in
            var bytes = kept.reduce(0) { $0 + $1.storedBytes }
            var drop = 0
            while kept.count - drop > 1 && (kept.count - drop > retained || bytes > maxBytes) {
                bytes -= kept[drop].storedBytes
                drop += 1
            }
            kept.removeFirst(drop)
        }
    }

    public var latest: Interval? { intervals.withLock { $0.last } }

    /// Kept intervals with a sequence number above `sequence`, oldest first.
    public func intervals(after sequence: UInt64) -> [Interval] {
        intervals.withLock { $0.filter { $0.sequence > sequence } }
    }

    /// The interval's JSON object (`IntervalJSON`), decompressed if it was kept compressed; one
    /// that does not decompress (never expected) is served as its sequence and the reason, and counted.
    public func json(_ interval: Interval) -> ByteBuffer {
        switch interval.stored {
        case .plain(let json):
            return json
        case .compressed(let bytes, let size):
            if let json = compression?.decompress(bytes, size), json.count == size { return ByteBuffer(bytes: json) }
            failures.withLock { $0 += 1 }
            return ByteBuffer(
                string: #"{"sequence":\#(interval.sequence),"error":"the retained interval did not decompress"}"#)
        }
    }

    /// How many intervals are kept, for `/status`.
    public var count: Int { intervals.withLock { $0.count } }

    /// The bytes kept, as stored, for `/status`.
    public var bytes: Int { intervals.withLock { $0.reduce(0) { $0 + $1.storedBytes } } }

    /// Retained intervals that did not decompress when read.
    public var decompressionFailures: UInt64 { failures.withLock { $0 } }
}
