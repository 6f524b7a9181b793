import CNMModel

/// An output of the agent: something that takes every interval's report (the API's store, the
/// terminal table, the intake, an exporter).
public protocol ReportSubscriber: Sendable {
    /// Called once per interval, in order, on the collector's task: hand the report over and
    /// return. A subscriber that blocks here delays the next report for every other one.
    func receive(_ report: IntervalReport)
}

/// The one stream of reports the collector publishes to. An output is added by conforming to
/// `ReportSubscriber` and naming it where the agent is assembled; the collector never changes.
public struct ReportStream: Sendable {
    public let subscribers: [any ReportSubscriber]

    public init(_ subscribers: [any ReportSubscriber]) {
        self.subscribers = subscribers
    }

    public func publish(_ report: IntervalReport) {
        for subscriber in subscribers { subscriber.receive(report) }
    }
}
