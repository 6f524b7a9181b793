import CNMHTTP
import FoundationEssentials
import Glibc
import Synchronization

/// A point in time as events carry it: nanoseconds since 1970 on the daemon's clock.
public struct DockerEventTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var nanosecondsSince1970: Int64

    public init(nanosecondsSince1970: Int64) {
        self.nanosecondsSince1970 = nanosecondsSince1970
    }

    /// Nil when the time, in nanoseconds, would not fit (a year past 2262 or before 1677).
    public init?(secondsSince1970: Int64) {
        let (nanoseconds, overflow) = secondsSince1970.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return nil }
        self.init(nanosecondsSince1970: nanoseconds)
    }

    /// This host's wall clock.
    public static var now: DockerEventTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return DockerEventTime(nanosecondsSince1970: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    public var secondsSince1970: Int64 { nanosecondsSince1970 / 1_000_000_000 }

    public static func < (a: Self, b: Self) -> Bool { a.nanosecondsSince1970 < b.nanosecondsSince1970 }

    /// `seconds.nanoseconds`, the form `since` takes without losing precision.
    public var description: String {
        // Times before 1970 are not events' (decoding rejects them); 0 stands in for them here.
        guard nanosecondsSince1970 >= 0 else { return "0.000000000" }
        let fraction = String(nanosecondsSince1970 % 1_000_000_000)
        return "\(secondsSince1970).\(String(repeating: "0", count: 9 - fraction.count))\(fraction)"
    }
}

/// One container event from `GET /events`.
public struct DockerEvent: Sendable, Equatable {
    public enum Action: Sendable, Hashable, CustomStringConvertible {
        case start
        case die
        case destroy
        case rename
        /// Any other action as the daemon spells it (`create`, `kill`, `health_status: healthy`, ...).
        case other(String)

        public init(_ name: String) {
            switch name {
            case "start": self = .start
            case "die": self = .die
            case "destroy": self = .destroy
            case "rename": self = .rename
            default: self = .other(name)
            }
        }

        public var description: String {
            switch self {
            case .start: "start"
            case .die: "die"
            case .destroy: "destroy"
            case .rename: "rename"
            case .other(let name): name
            }
        }
    }

    public var action: Action
    public var containerID: String
    /// `Actor.Attributes`: the container's labels plus `name`, `image` and per-action extras
    /// (`exitCode` for die, `oldName` for rename).
    public var attributes: [String: String]
    public var time: DockerEventTime

    public init(action: Action, containerID: String, attributes: [String: String] = [:], time: DockerEventTime) {
        self.action = action
        self.containerID = containerID
        self.attributes = attributes
        self.time = time
    }

    /// The container's name (its new one, for rename), without a leading `/`.
    public var name: String? { attributes["name"] }
    public var image: String? { attributes["image"] }
    /// For rename, the previous name, without the leading `/` the daemon sends.
    public var oldName: String? {
        attributes["oldName"].map { $0.hasPrefix("/") ? String($0.dropFirst()) : $0 }
    }
}

/// What an event stream held besides the events delivered, for `/status`.
public struct DockerEventCounts: Sendable, Equatable {
    /// Container events delivered.
    public var events: UInt64 = 0
    /// Of those, how many had an action outside `DockerEvent.Action`'s named cases.
    public var otherActions: UInt64 = 0
    /// Events about something other than a container, skipped.
    public var otherTypes: UInt64 = 0
    /// Lines that were not JSON, or not an event (no action, id or time), skipped.
    public var invalidLines: UInt64 = 0

    public init() {}

    public mutating func add(_ other: DockerEventCounts) {
        events += other.events
        otherActions += other.otherActions
        otherTypes += other.otherTypes
        invalidLines += other.invalidLines
    }
}

/// Counts shared between a stream and whoever reports on it.
public final class DockerEventCounters: Sendable {
    private let state = Mutex(DockerEventCounts())

    public init() {}

    public var counts: DockerEventCounts { state.withLock { $0 } }

    func add(_ counts: DockerEventCounts) {
        state.withLock { $0.add(counts) }
    }
}

/// Turns the body of `GET /events`, one JSON object per line, into events, whatever the chunks
/// it arrives in. Lines that are not container events are counted and dropped, never fatal.
public struct DockerEventDecoder: Sendable {
    /// A longer line is dropped as invalid rather than buffered without bound.
    public static let maxLineBytes = 1 << 20

    /// What was decoded and skipped since this was last reset.
    public var counts = DockerEventCounts()
    private var line: [UInt8] = []
    /// Inside a line already over the limit: the rest of it is dropped.
    private var discarding = false

    public init() {}

    /// The events completed by `chunk`, in order.
    public mutating func decode(_ chunk: some Collection<UInt8>) -> [DockerEvent] {
        var events: [DockerEvent] = []
        var rest = chunk[...]
        while !rest.isEmpty {
            let newline = rest.firstIndex(of: UInt8(ascii: "\n"))
            let piece = rest[..<(newline ?? rest.endIndex)]
            rest = newline.map { rest[rest.index(after: $0)...] } ?? rest[rest.endIndex...]
            if !discarding {
                line.append(contentsOf: piece)
                if line.count > Self.maxLineBytes {
                    counts.invalidLines += 1
                    line = []
                    discarding = true
                }
            }
            if newline != nil {
                if !discarding, let event = decodeLine() { events.append(event) }
                line = []
                discarding = false
            }
        }
        return events
    }

    /// The last line, when the stream ended without a newline after it.
    public mutating func finish() -> [DockerEvent] {
        defer {
            line = []
            discarding = false
        }
        guard !discarding, let event = decodeLine() else { return [] }
        return [event]
    }

    private mutating func decodeLine() -> DockerEvent? {
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
        guard line.contains(where: { !isSpace($0) }) else { return nil }
        guard let message = try? JSONDecoder().decode(Message.self, from: Data(line)) else {
            counts.invalidLines += 1
            return nil
        }
        // Before API 1.22 events had no type, and were all about containers.
        if let type = message.type, type != "container" {
            counts.otherTypes += 1
            return nil
        }
        // A time the daemon sends is outside data: one too large for nanoseconds makes the line invalid.
        let nanoseconds =
            message.timeNano.flatMap { $0 > 0 ? $0 : nil }
            ?? message.time.flatMap { $0 > 0 ? DockerEventTime(secondsSince1970: $0)?.nanosecondsSince1970 : nil }
        guard let action = message.action ?? message.status, !action.isEmpty,
            let id = message.actor?.id ?? message.id, !id.isEmpty,
            let nanoseconds
        else {
            counts.invalidLines += 1
            return nil
        }
        var attributes = message.actor?.attributes ?? [:]
        if attributes["image"] == nil, let image = message.from {
            attributes["image"] = image
        }
        let event = DockerEvent(
            action: DockerEvent.Action(action), containerID: id, attributes: attributes,
            time: DockerEventTime(nanosecondsSince1970: nanoseconds))
        counts.events += 1
        if case .other = event.action { counts.otherActions += 1 }
        return event
    }

    /// `EventMessage`, with the fields of the format before API 1.22 (`status`, `id`, `from`).
    private struct Message: Decodable {
        struct Actor: Decodable {
            var id: String?
            var attributes: [String: String]?

            enum CodingKeys: String, CodingKey {
                case id = "ID"
                case attributes = "Attributes"
            }
        }

        var type: String?
        var action: String?
        var actor: Actor?
        var time: Int64?
        var timeNano: Int64?
        var status: String?
        var id: String?
        var from: String?

        enum CodingKeys: String, CodingKey {
            case type = "Type"
            case action = "Action"
            case actor = "Actor"
            case time, timeNano, status, id, from
        }
    }
}

extension DockerClient {
    /// `GET /events` for containers: calls `onConnected` once the daemon accepts the stream, then
    /// `onEvent` for each event as it comes, and counts what it skips in `counters`. Never returns
    /// on its own: the daemon ending the stream throws `.connectionClosed`; the caller's task being
    /// cancelled stops the transfer at once and returns. `since` replays the events the daemon
    /// still holds from that time on, itself included. With an `idleTimeout`, a stream (or a daemon
    /// yet to answer) silent for about that long throws `.idle` (or `.timeout` before the answer).
    public func events(
        since: DockerEventTime? = nil,
        idleTimeout: Duration = .zero,
        counters: DockerEventCounters? = nil,
        isolation: isolated (any Actor)? = #isolation,
        onConnected: () async -> Void = {},
        onEvent: (DockerEvent) async -> Void
    ) async throws(DockerError) {
        var path = "/events?filters=" + Self.percentEncoded(#"{"type":["container"]}"#)
        if let since { path += "&since=\(since)" }
        var request = self.request(try await url(path), timeout: .zero)
        request.idleTimeout = idleTimeout
        var decoder = DockerEventDecoder()
        var status: Int?
        var errorBody = Data()
        func deliver(_ events: [DockerEvent]) async {
            counters?.add(decoder.counts)
            decoder.counts = DockerEventCounts()
            for event in events { await onEvent(event) }
        }
        do {
            for try await part in stream(request) {
                switch part {
                case .head(let code):
                    status = code
                    if (200..<300).contains(code) { await onConnected() }
                case .body(let bytes) where status.map { (200..<300).contains($0) } == true:
                    await deliver(decoder.decode(bytes))
                case .body(let bytes):
                    errorBody.append(bytes.prefix(max(0, 4096 - errorBody.count)))
                }
            }
        } catch let error as HTTPError {
            if error.kind == .timedOut, let status, (200..<300).contains(status) {
                throw DockerError(
                    kind: .idle, message: "GET /events on \(host): nothing came for \(idleTimeout.components.seconds) s"
                )
            }
            throw dockerError(error, request: "GET /events")
        } catch {
            throw DockerError(kind: .transport, message: "GET /events on \(host): \(error)")
        }
        if Task.isCancelled { return }
        guard let status, (200..<300).contains(status) else {
            let message = "GET /events on \(host): HTTP \(status ?? 0): \(Self.daemonMessage(errorBody))"
            throw DockerError(kind: .httpStatus, message: message, httpStatus: status)
        }
        await deliver(decoder.finish())
        throw DockerError(kind: .connectionClosed, message: "GET /events on \(host): the daemon ended the stream")
    }
}

/// How an event watch is going, for `/status`.
public struct DockerEventHealth: Sendable, Equatable {
    public var connected = false
    /// Streams the daemon accepted.
    public var connections: UInt64 = 0
    /// Failed attempts and lost streams by kind; a stream the daemon ended is `.connectionClosed`.
    public var failures: [DockerError.Kind: UInt64] = [:]
    /// The most recent failure, kept after reconnecting.
    public var lastError: String?
    public var counts = DockerEventCounts()
    /// Events replayed after a reconnect that had been delivered already, dropped.
    public var replayed: UInt64 = 0
    /// The newest event's time, where a reconnect resumes.
    public var lastEventTime: DockerEventTime?
    /// Events stamped more than `DockerEventWatcher.futureTolerance` ahead of this host's clock:
    /// delivered, but never where a reconnect resumes, so that one bad clock cannot make every
    /// later event look old and a reconnect skip them.
    public var futureTimes: UInt64 = 0
    /// Streams given up on after `DockerEventWatcher.idleTimeout` of silence and opened again
    /// (from the last event, so none is missed): a half-open connection is found this way, and on a
    /// quiet host it costs one request a minute. Not counted as failures.
    public var idleReconnects: UInt64 = 0

    public init() {}
}

/// Keeps a container event stream open: reconnects after every failure with exponential backoff
/// and resumes from the last event seen, so none is lost while the stream was down (as long as
/// the daemon still holds it). Run it in a task of its own; cancelling that task ends it.
public final class DockerEventWatcher: Sendable {
    /// How far ahead of this host's clock an event's time may be (a daemon reached over tcp:// has
    /// a clock of its own), in nanoseconds: 10 minutes.
    public static let futureTolerance: Int64 = 600 * 1_000_000_000

    public enum Update: Sendable, Equatable {
        /// The daemon accepted the stream.
        case connected
        /// The stream failed or could not be opened. Reported when the watcher goes down and when
        /// the reason changes, not for every retry that fails the same way.
        case disconnected(DockerError)
        case event(DockerEvent)
    }

    private struct State {
        var health = DockerEventHealth()
        /// Where the next connection starts: the last event's time, or when the first stream opened.
        var resumeFrom: DockerEventTime?
        /// Events at `health.lastEventTime` already delivered: `since` replays that instant.
        var deliveredAtLast: Set<String> = []
    }

    private let client: DockerClient
    private let backoff: Backoff
    /// A stream that stayed up this long starts the backoff over.
    private let healthyAfter: Duration
    /// A stream silent this long is opened again; the daemon sends nothing between events, so on a
    /// quiet host this is how a connection that died without a close is found.
    private let idleTimeout: Duration
    private let counters = DockerEventCounters()
    private let state: Mutex<State>

    /// `since` replays the events from that time on at the first connection; without it the watch
    /// starts with the events after it connects.
    public init(
        client: DockerClient, since: DockerEventTime? = nil, backoff: Backoff = Backoff(base: 0.5, max: 30),
        healthyAfter: Duration = .seconds(10), idleTimeout: Duration = .seconds(60)
    ) {
        self.client = client
        self.backoff = backoff
        self.healthyAfter = healthyAfter
        self.idleTimeout = idleTimeout
        self.state = Mutex(State(resumeFrom: since))
    }

    public var health: DockerEventHealth {
        var health = state.withLock { $0.health }
        health.counts = counters.counts
        return health
    }

    /// Watches until the task is cancelled, handing every update to `handle` in order. One run at
    /// a time per watcher.
    public func run(isolation: isolated (any Actor)? = #isolation, _ handle: (Update) async -> Void) async {
        defer { state.withLock { $0.health.connected = false } }
        var attempt = 0
        var reportedFailure: DockerError.Kind?
        while !Task.isCancelled {
            var connectedAt: ContinuousClock.Instant?
            let since = state.withLock { $0.resumeFrom }
            let failure: DockerError
            do {
                try await client.events(
                    since: since, idleTimeout: idleTimeout, counters: counters, isolation: isolation
                ) {
                    connectedAt = .now
                    state.withLock { state in
                        state.health.connected = true
                        state.health.connections += 1
                        if state.resumeFrom == nil { state.resumeFrom = .now }
                    }
                    reportedFailure = nil
                    await handle(.connected)
                } onEvent: { event in
                    guard isNew(event) else { return }
                    await handle(.event(event))
                }
                return
            } catch {
                failure = error
            }
            if failure.kind == .idle {
                // Not a failure: open it again at once, from the last event.
                state.withLock {
                    $0.health.connected = false
                    $0.health.idleReconnects += 1
                }
                attempt = 0
                continue
            }
            state.withLock { state in
                state.health.connected = false
                state.health.failures[failure.kind, default: 0] += 1
                state.health.lastError = failure.description
            }
            if reportedFailure != failure.kind {
                reportedFailure = failure.kind
                await handle(.disconnected(failure))
            }
            if let connectedAt, ContinuousClock.now - connectedAt >= healthyAfter {
                attempt = 0
            }
            try? await Task.sleep(for: backoff.duration(attempt: attempt))
            attempt += 1
        }
    }

    /// Records the event as where to resume from; false for a replay of one already delivered.
    private func isNew(_ event: DockerEvent) -> Bool {
        let key = "\(event.containerID) \(event.action)"
        let latest = DockerEventTime.now.nanosecondsSince1970.addingReportingOverflow(Self.futureTolerance)
        return state.withLock { state in
            if !latest.overflow, event.time.nanosecondsSince1970 > latest.partialValue {
                state.health.futureTimes += 1
                return true
            }
            if let last = state.health.lastEventTime, event.time <= last {
                // An older event is new (the daemon's order is not strictly by time), but not where to resume.
                guard event.time == last, !state.deliveredAtLast.insert(key).inserted else { return true }
                state.health.replayed += 1
                return false
            }
            state.health.lastEventTime = event.time
            state.resumeFrom = event.time
            state.deliveredAtLast = [key]
            return true
        }
    }
}
