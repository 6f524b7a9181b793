/// What `/status` says of shipping to Datadog's process intake.
public struct IntakeStatus: Sendable, Equatable, Encodable {
    public var endpoint: String
    /// Only the key's last four characters.
    public var apiKey: String
    /// Messages the intake accepted.
    public var sent: UInt64 = 0
    /// Attempts that failed in a way worth trying again (timeouts, connection errors, 408, 429, 5xx).
    public var retried: UInt64 = 0
    /// Messages given up on: the queue overflowed (oldest first), the intake refused them (4xx), a
    /// message kept failing with 5xx while others got through, or the agent stopped before sending.
    public var dropped: UInt64 = 0
    /// Of `dropped`, those pushed out of a full queue.
    public var droppedQueueFull: UInt64 = 0
    /// Of `dropped`, messages answered 5xx again and again while the message behind each was taken.
    public var droppedPoison: UInt64 = 0
    /// Of `dropped`, those still queued or in flight when the agent stopped.
    public var droppedAtShutdown: UInt64 = 0
    /// Messages out of the queue and not yet sent or dropped (the interval being sent).
    public var inFlight = 0
    /// Intervals waiting, besides the one being sent, and their messages' bytes.
    public var queueDepth = 0
    public var queueBytes = 0
    public var lastError: String?
    public var lastSuccess: Timestamp?
    /// Whether short-lived connections are rolled up before they are shipped.
    public var connectionRollup = false
    /// Connections merged into another by the rollup (their counts are in that one).
    public var connectionsRolledUp: UInt64 = 0

    public init(endpoint: String, apiKey: String) {
        self.endpoint = endpoint
        self.apiKey = apiKey
    }

    enum CodingKeys: String, CodingKey {
        case endpoint, sent, retried, dropped
        case apiKey = "api_key"
        case droppedQueueFull = "dropped_queue_full"
        case droppedPoison = "dropped_poison"
        case droppedAtShutdown = "dropped_at_shutdown"
        case inFlight = "in_flight"
        case queueDepth = "queue_depth"
        case queueBytes = "queue_bytes"
        case lastError = "last_error"
        case lastSuccessUnixSeconds = "last_success_unix_s"
        case connectionRollup = "connection_rollup"
        case connectionsRolledUp = "connections_rolled_up"
    }

    public func encode(to encoder: any Encoder) throws {
        var e = encoder.container(keyedBy: CodingKeys.self)
        try e.encode(endpoint, forKey: .endpoint)
        try e.encode(apiKey, forKey: .apiKey)
        try e.encode(sent, forKey: .sent)
        try e.encode(retried, forKey: .retried)
        try e.encode(dropped, forKey: .dropped)
        try e.encode(droppedQueueFull, forKey: .droppedQueueFull)
        try e.encode(droppedPoison, forKey: .droppedPoison)
        try e.encode(droppedAtShutdown, forKey: .droppedAtShutdown)
        try e.encode(inFlight, forKey: .inFlight)
        try e.encode(queueDepth, forKey: .queueDepth)
        try e.encode(queueBytes, forKey: .queueBytes)
        try e.encode(lastError, forKey: .lastError)
        try e.encode(lastSuccess.map { $0.nanoseconds / 1_000_000_000 }, forKey: .lastSuccessUnixSeconds)
        try e.encode(connectionRollup, forKey: .connectionRollup)
        try e.encode(connectionsRolledUp, forKey: .connectionsRolledUp)
    }
}
