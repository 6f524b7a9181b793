import CNMModel

/// What `/status` shows: which mode runs and why, and counters of everything that went wrong.
public struct AgentStatus: Sendable {
    public enum Mode: String, Sendable {
        /// Before the collector has picked: the API answers from the first moment.
        case starting
        case ebpf
        case ebpfless
    }

    /// A collection strategy that was considered at start-up, and why it was or was not chosen.
    public struct Strategy: Sendable {
        public var name: String
        public var chosen: Bool
        public var reason: String

        public init(name: String, chosen: Bool, reason: String) {
            self.name = name
            self.chosen = chosen
            self.reason = reason
        }
    }

    /// A kind of problem, how often it happened and the last time's details.
    public struct Problem: Sendable {
        public var count: UInt64 = 0
        public var last: String?

        public init(count: UInt64 = 0, last: String? = nil) {
            self.count = count
            self.last = last
        }
    }

    /// One part of the agent as `/status` shows it: a state from a small fixed set per component
    /// (documented in docs/api.md, for scripts to compare), the reason in words (for people), and
    /// its counters under stable names.
    public struct Component: Sendable, Equatable {
        public var state: String
        public var reason: String
        public var counters: [String: UInt64]

        public init(_ state: String, _ reason: String, counters: [String: UInt64] = [:]) {
            self.state = state
            self.reason = reason
            self.counters = counters
        }
    }

    public var version: String
    public var hostname: String
    public var startedAt: Timestamp
    public var intervalSeconds: Int
    public var mode: Mode
    public var modeReason: String
    public var strategies: [Strategy] = []
    /// How sockets that close between two reads keep their last bytes: `ring_buffer` (eBPF),
    /// `destroy_notifications` or `sampled` (eBPF-less).
    public var closedConnections = Component("starting", "the collector has not picked a mode yet")
    /// Packet capture: `on`, `unavailable` (and why) or `off` (and why).
    public var capture = Component("starting", "the collector has not picked a mode yet")
    public var sampleSeconds: Double = 0
    public var polls: UInt64 = 0
    public var reports: UInt64 = 0
    public var lastPollMicros: UInt64 = 0
    public var namespaces = 0
    public var tracker = ConnectionTracker.Health()
    /// Keyed by a short stable name (`netlink_dump`, `proc_vanished`, `docker_unreachable`, ...).
    public var problems: [String: Problem] = [:]
    public var firstCollectionDone = false
    /// The Docker API's last answer: `ok`, `unavailable` or `invalid_host`.
    public var docker = Component("starting", "not contacted yet")
    /// The Docker events stream: `connected` or `disconnected`, with events taken and lines skipped.
    public var dockerEvents = Component("starting", "not connected yet")
    /// The ECS task metadata endpoint's last answer (`ok`, `unavailable`, `invalid_endpoint`); nil outside ECS.
    public var ecs: Component?
    /// Shipping to Datadog's process intake; nil without `DD_API_KEY`.
    public var intake: IntakeStatus?

    public init(
        version: String,
        hostname: String,
        startedAt: Timestamp,
        intervalSeconds: Int,
        mode: Mode,
        modeReason: String
    ) {
        self.version = version
        self.hostname = hostname
        self.startedAt = startedAt
        self.intervalSeconds = intervalSeconds
        self.mode = mode
        self.modeReason = modeReason
    }

    public mutating func count(_ problem: String, by amount: UInt64 = 1, detail: String? = nil) {
        guard amount > 0 else { return }
        var p = problems[problem] ?? Problem()
        p.count += amount
        if let detail { p.last = detail }
        problems[problem] = p
    }
}
