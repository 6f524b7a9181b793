import CNMHTTP
import CNMIntakeProto
import CNMModel
import CNMReport
import FoundationEssentials
import Logging
import ServiceLifecycle
import Synchronization

/// Ships each interval's connections to Datadog's process intake. `submit` only hands the report
/// over: encoding and sending run on the sender's own tasks, and the HTTP transfers on the HTTP
/// client's own thread, so a slow or unreachable intake never delays collection. What cannot be sent
/// yet waits in a bounded queue; when it overflows the oldest interval goes, and the loss is counted.
public final class IntakeSender: Service, Sendable {
    /// One interval's messages, sent in order; the queue holds whole intervals, as Datadog's agent
    /// does, so that a group is never half evicted.
    struct PendingInterval: Sendable {
        var groupID: Int32
        var bodies: [[UInt8]]
        /// Seconds since the epoch at the end of the interval: `X-DD-Agent-Timestamp`.
        var timestampSeconds: Int64
        var bytes: Int { bodies.reduce(0) { $0 + $1.count } }
    }

    enum Outcome: Equatable {
        case accepted
        /// Worth trying again after a pause: timeouts, connection errors, 408, 429, 5xx (`serverError`:
        /// the intake answered 5xx, the one kind that can be the message's fault).
        case retry(String, serverError: Bool)
        /// The intake will never take this message.
        case rejected(String, forbidden: Bool)
    }

    private struct State {
        var queue: DeliveryQueue<PendingInterval>
        var status: IntakeStatus
        var forbiddenLogged = false
        var failing = false
        /// Messages out of the queue and not yet sent or dropped.
        var inFlight = 0
    }

    private let settings: IntakeSettings
    private let host: HostDescription
    private let version: String
    private let logger: Logger
    private let publish: @Sendable (IntakeStatus) -> Void
    private let clock: @Sendable () -> Timestamp
    private let client: HTTPClient
    private let backoff: Backoff
    private let state: Mutex<State>
    private let reports: AsyncStream<IntervalReport>
    private let reportInput: AsyncStream<IntervalReport>.Continuation
    private let wake: AsyncStream<Void>
    private let wakeInput: AsyncStream<Void>.Continuation

    /// `clock` gives the wall-clock time of a delivery; `publish` receives the sender's status after every
    /// change (for `/status`).
    public init(
        settings: IntakeSettings,
        host: HostDescription,
        version: String,
        logger: Logger,
        clock: @escaping @Sendable () -> Timestamp,
        publish: @escaping @Sendable (IntakeStatus) -> Void
    ) throws(HTTPError) {
        self.clock = clock
        self.settings = settings
        self.host = host
        self.version = version
        self.logger = logger
        self.publish = publish
        self.client = try HTTPClient(label: "cnm.intake")
        self.backoff = Backoff(base: settings.backoffBaseSeconds, max: settings.backoffMaxSeconds)
        var status = IntakeStatus(endpoint: settings.printableEndpoint, apiKey: settings.redactedAPIKey)
        status.connectionRollup = settings.connectionRollup
        self.state = Mutex(
            State(queue: DeliveryQueue(maxItems: settings.queueSize, maxBytes: settings.queueBytes), status: status))
        // The encoder keeps up with one report per interval; a small buffer only absorbs a hiccup.
        (reports, reportInput) = AsyncStream.makeStream(of: IntervalReport.self, bufferingPolicy: .bufferingOldest(8))
        (wake, wakeInput) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        publish(status)
    }

    /// Hands an interval's report to the sender; returns at once.
    public func submit(_ report: IntervalReport) {
        if case .dropped = reportInput.yield(report) {
            update { $0.status.dropped += 1 }
            logger.warning("intake encoder behind: an interval's connections were dropped")
        }
    }

    public func run() async throws {
        logger.info(
            "shipping connections to Datadog",
            metadata: [
                "endpoint": "\(settings.printableEndpoint)", "api_key": "\(settings.redactedAPIKey)",
                "max_conns_per_message": "\(settings.maxConnectionsPerMessage)",
            ])
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await report in self.reports { self.enqueue(report) }
                }
                group.addTask { await self.sendLoop() }
            }
        }
        countUnsentAtShutdown()
    }

    /// Encodes a report into its messages and queues them as one interval.
    func enqueue(_ report: IntervalReport) {
        var report = report
        if settings.connectionRollup {
            let (connections, merged) = ConnectionRollup.rollUp(report.connections)
            report.connections = connections
            if merged > 0 { update { $0.status.connectionsRolledUp += UInt64(merged) } }
        }
        let groupID = Int32(truncatingIfNeeded: report.sequence)
        let messages = ConnectionsPayload.serializedMessages(
            for: report, host: host, groupID: groupID, maxPerMessage: settings.maxConnectionsPerMessage)
        guard !messages.isEmpty else { return }
        let milliseconds = report.end.nanoseconds / 1_000_000
        var bodies: [[UInt8]] = []
        for message in messages {
            do {
                bodies.append(try IntakeMessage.encode(serialized: message, timestampMilliseconds: milliseconds))
            } catch {
                logger.error("cannot encode an intake message, dropped", metadata: ["error": "\(error)"])
                update {
                    $0.status.dropped += 1
                    $0.status.lastError = "\(error)"
                }
            }
        }
        guard !bodies.isEmpty else { return }
        let pending = PendingInterval(groupID: groupID, bodies: bodies, timestampSeconds: milliseconds / 1000)
        let evicted = update { state in
            let evicted = state.queue.push(pending, bytes: pending.bytes)
            let lost = evicted.reduce(UInt64(0)) { $0 + UInt64($1.bodies.count) }
            state.status.dropped += lost
            state.status.droppedQueueFull += lost
            return evicted
        }
        if !evicted.isEmpty {
            logger.warning(
                "intake queue full: dropped the oldest intervals",
                metadata: [
                    "groups": "\(evicted.map(\.groupID))", "messages": "\(evicted.reduce(0) { $0 + $1.bodies.count })",
                    "queue_size": "\(settings.queueSize)", "queue_bytes": "\(settings.queueBytes)",
                ])
        }
        wakeInput.yield()
    }

    /// One message taken out of the queue.
    struct Outgoing: Sendable {
        var body: [UInt8]
        var groupID: Int32
        var timestampSeconds: Int64
    }

    /// A message the intake answered 5xx this many times in a row is suspected of being what the
    /// intake cannot take (a poison message): the next message is tried once. If the intake takes
    /// that one and then answers the suspect 5xx once more, the suspect is dropped and counted; if
    /// the next fails too, the intake is down and nothing is dropped. Timeouts, connection errors,
    /// 408 and 429 never make a message suspect.
    static let suspectAfterServerErrors = 5

    private func sendLoop() async {
        var wakeups = wake.makeAsyncIterator()
        // Messages taken out of the queue, oldest first; the first is the one being delivered. Each
        // counts as in flight until it is sent or dropped, so that a shutdown can count what it leaves.
        var outgoing: [Outgoing] = [] {
            didSet { update { $0.inFlight = outgoing.count } }
        }
        @discardableResult
        func takeInterval() -> Bool {
            guard let pending = update({ $0.queue.pop() }) else { return false }
            outgoing += pending.bodies.map {
                Outgoing(body: $0, groupID: pending.groupID, timestampSeconds: pending.timestampSeconds)
            }
            return true
        }
        var attempt = 0
        while !Task.isCancelled {
            if outgoing.isEmpty && !takeInterval() {
                guard await wakeups.next() != nil else { return }
                continue
            }
            switch await deliver(outgoing[0], attempt: &attempt) {
            case .cancelled:
                return
            case .done:
                outgoing.removeFirst()
                attempt = 0
            case .suspect(let reason):
                if outgoing.count < 2 { takeInterval() }
                // Alone, the suspect holds nothing up: it keeps being retried with backoff.
                guard outgoing.count >= 2 else { continue }
                switch await tryOnce(outgoing[1]) {
                case .cancelled:
                    return
                case .rejected:
                    outgoing.remove(at: 1)
                case .failed:
                    break  // the intake is down, not the message: both wait
                case .accepted:
                    outgoing.remove(at: 1)
                    // The intake takes messages now: one more try tells a message it cannot take
                    // from an intake that came back between the two.
                    switch await tryOnce(outgoing[0]) {
                    case .cancelled:
                        return
                    case .accepted, .rejected:
                        outgoing.removeFirst()
                        attempt = 0
                    case .failed(serverError: false):
                        break
                    case .failed(serverError: true):
                        let poison = outgoing.removeFirst()
                        attempt = 0
                        update {
                            $0.status.dropped += 1
                            $0.status.droppedPoison += 1
                            $0.status.lastError = reason
                        }
                        logger.warning(
                            "the intake takes other messages but keeps answering one with \(reason): dropped it",
                            metadata: ["endpoint": "\(settings.printableEndpoint)", "group": "\(poison.groupID)"])
                    }
                }
            }
        }
    }

    enum Delivery {
        /// Accepted, or refused for good (counted as dropped).
        case done
        /// Answered 5xx `suspectAfterServerErrors` times in a row (the last answer given).
        case suspect(String)
        case cancelled
    }

    /// Sends one message until the intake takes or refuses it, or until it is suspect. `attempt`
    /// carries the backoff across calls for the same message.
    private func deliver(_ message: Outgoing, attempt: inout Int) async -> Delivery {
        var serverErrors = 0
        while !Task.isCancelled {
            let outcome = await post(message.body, timestampSeconds: message.timestampSeconds)
            switch outcome {
            case .accepted:
                recordAccepted()
                return .done
            case .retry(let reason, let serverError):
                let first = update { state in
                    state.status.retried += 1
                    state.status.lastError = reason
                    defer { state.failing = true }
                    return !state.failing
                }
                let delay = backoff.delay(attempt: attempt)
                attempt += 1
                let metadata: Logger.Metadata = [
                    "endpoint": "\(settings.printableEndpoint)", "error": "\(reason)", "group": "\(message.groupID)",
                    "retry_in_s": "\((delay * 100).rounded() / 100)",
                ]
                if first {
                    logger.warning("intake unavailable, retrying with backoff", metadata: metadata)
                } else {
                    logger.debug("intake still unavailable", metadata: metadata)
                }
                do {
                    try await Task.sleep(for: .milliseconds(Int64(delay * 1000)))
                } catch {
                    return .cancelled
                }
                serverErrors = serverError ? serverErrors + 1 : 0
                if serverErrors >= Self.suspectAfterServerErrors { return .suspect(reason) }
            case .rejected(let reason, let forbidden):
                recordRejected(reason, forbidden: forbidden, groupID: message.groupID)
                return .done
            }
        }
        return .cancelled
    }

    enum Attempt {
        case accepted, rejected, cancelled
        case failed(serverError: Bool)
    }

    /// One attempt at a message, without waiting after a failure.
    private func tryOnce(_ message: Outgoing) async -> Attempt {
        guard !Task.isCancelled else { return .cancelled }
        switch await post(message.body, timestampSeconds: message.timestampSeconds) {
        case .accepted:
            recordAccepted()
            return .accepted
        case .retry(let reason, let serverError):
            update {
                $0.status.retried += 1
                $0.status.lastError = reason
            }
            return .failed(serverError: serverError)
        case .rejected(let reason, let forbidden):
            recordRejected(reason, forbidden: forbidden, groupID: message.groupID)
            return .rejected
        }
    }

    private func recordAccepted() {
        let recovered = update { state in
            state.status.sent += 1
            state.status.lastSuccess = clock()
            defer { state.failing = false }
            return state.failing
        }
        if recovered {
            logger.notice("intake reachable again", metadata: ["endpoint": "\(settings.printableEndpoint)"])
        }
    }

    private func recordRejected(_ reason: String, forbidden: Bool, groupID: Int32) {
        let firstForbidden = update { state in
            state.status.dropped += 1
            state.status.lastError = reason
            defer { if forbidden { state.forbiddenLogged = true } }
            return forbidden && !state.forbiddenLogged
        }
        if firstForbidden {
            logger.error(
                """
                Datadog rejected the API key ending in \(settings.apiKey.suffix(4)): \(settings.intakeHost) \
                answered 403 Forbidden; connections are not shipped until DD_API_KEY is fixed
                """,
                metadata: ["endpoint": "\(settings.printableEndpoint)"])
        } else if !forbidden {
            logger.warning(
                "intake refused a message, dropped it",
                metadata: [
                    "endpoint": "\(settings.printableEndpoint)", "reason": "\(reason)", "group": "\(groupID)",
                ])
        }
    }

    /// What is still queued or in flight when the sender stops is lost with the process: counted as
    /// dropped and said, not forgotten.
    private func countUnsentAtShutdown() {
        let lost = update { state in
            var lost = UInt64(state.inFlight)
            while let pending = state.queue.pop() { lost += UInt64(pending.bodies.count) }
            state.inFlight = 0
            state.status.dropped += lost
            state.status.droppedAtShutdown += lost
            return lost
        }
        if lost > 0 {
            logger.warning(
                "stopping with intake messages not sent: dropped",
                metadata: ["messages": "\(lost)", "endpoint": "\(settings.printableEndpoint)"])
        }
    }

    func post(_ body: [UInt8], timestampSeconds: Int64) async -> Outcome {
        let request = HTTPRequest(
            method: .post(body: Data(body)),
            url: settings.endpoint,
            headers: [
                ("DD-Api-Key", settings.apiKey),
                ("X-Dd-Hostname", host.hostname),
                ("X-DD-Agent-Timestamp", "\(timestampSeconds)"),
                ("X-Dd-Processagentversion", version),
                // Datadog's agent sends 0 on connections messages: containers travel in the payload.
                ("X-Dd-ContainerCount", "0"),
                ("Content-Type", "application/x-protobuf"),
                ("User-Agent", "cnm-agent/\(version)"),
                // No "Expect: 100-continue" round trip before the body.
                ("Expect", ""),
            ],
            connectTimeout: .milliseconds(Int64(min(settings.timeoutSeconds, 10) * 1000)),
            timeout: .milliseconds(Int64(settings.timeoutSeconds * 1000)),
            maxResponseBytes: 1 << 20,
            verifyTLS: settings.verifyTLS,
            proxy: settings.proxy
        )
        do {
            let response = try await client.perform(request)
            return Self.classify(status: response.status, body: response.body)
        } catch {
            // libcurl's text may quote the proxy's or the intake's URL, credentials and all.
            return .retry(Redaction.credentials(in: "\(error.kind): \(error.message)"), serverError: false)
        }
    }

    /// What an answer from the intake means for the message.
    static func classify(status: Int, body: Data) -> Outcome {
        switch status {
        case 200..<300:
            return .accepted
        case 408, 429:
            return .retry("HTTP \(status)", serverError: false)
        case 500..<600:
            return .retry("HTTP \(status)", serverError: true)
        case 403:
            return .rejected("HTTP 403: API key rejected", forbidden: true)
        default:
            // The body is the intake's to say, not ours to store: its length only.
            return .rejected("HTTP \(status)\(body.isEmpty ? "" : " (\(body.count)-byte body)")", forbidden: false)
        }
    }

    @discardableResult
    private func update<T>(_ change: (inout State) -> T) -> T {
        let (result, status) = state.withLock { state in
            let result = change(&state)
            state.status.queueDepth = state.queue.count
            state.status.queueBytes = state.queue.bytes
            state.status.inFlight = state.inFlight
            return (result, state.status)
        }
        publish(status)
        return result
    }
}

extension IntakeSender: ReportSubscriber {
    /// Queues the report for the sender's own task: delivery never delays collection.
    public func receive(_ report: IntervalReport) { submit(report) }
}
