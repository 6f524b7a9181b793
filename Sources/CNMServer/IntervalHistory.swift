import CNMModel
import CNMReport
import NIOCore
import Synchronization

/// The API's intervals, each encoded as JSON once, when it is published, and served to every reader
/// as those same bytes: twenty readers of 60,000 connections cost one encode, not twenty.
public final class IntervalHistory: ReportSubscriber {
    /// One encoded interval.
    public struct Interval: Sendable {
        public var sequence: UInt64
        public var connections: Int
        /// The interval's JSON object (`IntervalJSON`).
        public var json: ByteBuffer
    }

    /// At most this many intervals are kept, for readers that poll less often than the interval.
    public let retained: Int
    /// And at most this many bytes of JSON in all; the latest interval is kept whatever its size.
    public let maxBytes: Int
    private let describe: @Sendable () -> (host: String, mode: AgentStatus.Mode)
    private let intervals = Mutex<[Interval]>([])

    /// `describe` names the host and mode that each interval's JSON carries.
    public init(
        retained: Int = 16, maxBytes: Int = 64 << 20,
        describe: @escaping @Sendable () -> (host: String, mode: AgentStatus.Mode)
    ) {
        self.retained = max(1, retained)
        self.maxBytes = maxBytes
        self.describe = describe
    }

    public convenience init(status: StatusStore, retained: Int = 16, maxBytes: Int = 64 << 20) {
        self.init(retained: retained, maxBytes: maxBytes) {
            let s = status.status
            return (s.hostname, s.mode)
        }
    }

    public func receive(_ report: IntervalReport) {
        let (host, mode) = describe()
        let json = IntervalJSON.encode(report, host: host, mode: mode)
        let interval = Interval(sequence: report.sequence, connections: report.connections.count, json: json)
        intervals.withLock { kept in
            kept.append(interval)
            var bytes = kept.reduce(0) { $0 + $1.json.readableBytes }
            var drop = 0
            while kept.count - drop > 1 && (kept.count - drop > retained || bytes > maxBytes) {
                bytes -= kept[drop].json.readableBytes
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

    /// The bytes of JSON kept, for `/status`.
    public var bytes: Int { intervals.withLock { $0.reduce(0) { $0 + $1.json.readableBytes } } }
}
