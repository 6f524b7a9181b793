import CNMModel
import CNMTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import CNMIntake

/// The sender against an intake that misbehaves in the ways a real one can: one message it cannot
/// take, an outage, and a stop with messages waiting. Each interval's end time (its
/// `X-DD-Agent-Timestamp`) says which message a request carried.
@Suite(.serialized) struct SenderFaultTests {
    final class Intake: Sendable {
        /// Answers by the interval's timestamp; the default for the others.
        let answers = Mutex<(byTimestamp: [String: Int], otherwise: Int)>(([:], 202))
        let seen = Mutex<[(timestamp: String, status: Int)]>([])
        var log: [(timestamp: String, status: Int)] { seen.withLock { $0 } }
        func count(_ timestamp: String, _ status: Int) -> Int {
            log.filter { $0.timestamp == timestamp && $0.status == status }.count
        }
    }

    /// The sender's status as last published.
    final class Published: Sendable {
        let latest = Mutex<IntakeStatus?>(nil)
        func withLock<T>(_ body: (IntakeStatus?) -> T) -> T { latest.withLock { body($0) } }
    }

    static func start(_ intake: Intake) throws -> ScriptedHTTPServer {
        try ScriptedHTTPServer(on: "127.0.0.1") { request in
            let timestamp = request.header("X-DD-Agent-Timestamp") ?? ""
            let status = intake.answers.withLock { $0.byTimestamp[timestamp] ?? $0.otherwise }
            intake.seen.withLock { $0.append((timestamp, status)) }
            return .http(status, "{}")
        }
    }

    /// Runs a sender against `baseURL` for `body`, then stops it and returns its last status.
    static func running(
        _ baseURL: String, timeoutSeconds: Double = 5, _ body: (IntakeSender, Published) async throws -> Void
    ) async throws -> IntakeStatus {
        var settings = IntakeSettings(apiKey: "cnm-test-key-0000abcd")
        settings.baseURL = baseURL
        settings.backoffBaseSeconds = 0.005
        settings.backoffMaxSeconds = 0.02
        settings.timeoutSeconds = timeoutSeconds
        let status = Published()
        let sender = try IntakeSender(
            settings: settings, host: PayloadTests.host, version: "test", logger: Logger(label: "test"),
            clock: { Timestamp(nanoseconds: 0) }, publish: { s in status.latest.withLock { $0 = s } })
        let run = Task { try await sender.run() }
        defer { run.cancel() }
        try await body(sender, status)
        run.cancel()
        _ = try? await run.value
        return try #require(status.withLock { $0 })
    }

    /// An interval with one connection, ending at `seconds`.
    static func report(_ sequence: UInt64, endingAt seconds: Int64) -> IntervalReport {
        IntervalReport(
            sequence: sequence, start: .init(nanoseconds: (seconds - 30) * 1_000_000_000),
            end: .init(nanoseconds: seconds * 1_000_000_000), connections: [PayloadTests.connection(Int(sequence))])
    }

    /// The project's `waitFor`, polling often: these waits are for a few milliseconds of backoff.
    static func waitFor(_ what: String, _ condition: () -> Bool) async throws {
        _ = try await CNMTestSupport.waitFor(what, timeout: .seconds(20), every: .milliseconds(5)) {
            condition() ? true : nil
        }
    }

    /// A message the intake answers 500 forever no longer blocks the ones behind it: once the next one
    /// is taken, it is dropped and counted, after a bounded number of attempts.
    @Test(.timeLimit(.minutes(1)))
    func aPoisonMessageIsDroppedOnceTheNextIsTaken() async throws {
        let intake = Intake()
        intake.answers.withLock { $0.byTimestamp["1000"] = 500 }
        let server = try Self.start(intake)
        let final = try await Self.running(server.baseURL) { sender, status in
            sender.submit(Self.report(1, endingAt: 1000))
            sender.submit(Self.report(2, endingAt: 2000))
            sender.submit(Self.report(3, endingAt: 3000))
            try await Self.waitFor("both good messages sent") { status.withLock { $0?.sent } == 2 }
        }
        #expect(final.droppedPoison == 1 && final.dropped == 1)
        #expect(intake.count("1000", 500) == IntakeSender.suspectAfterServerErrors + 1)
        #expect(intake.count("2000", 202) == 1 && intake.count("3000", 202) == 1)
        #expect(final.droppedAtShutdown == 0 && final.queueDepth == 0 && final.inFlight == 0)
    }

    /// When every message fails, the intake is down, not the message: nothing is dropped, and after
    /// recovery each message arrives once (the one behind may go first when the intake came back on
    /// its probe: each carries its own timestamp).
    @Test(.timeLimit(.minutes(1)))
    func anOutageDropsNothing() async throws {
        let intake = Intake()
        intake.answers.withLock { $0.otherwise = 503 }
        let server = try Self.start(intake)
        let final = try await Self.running(server.baseURL) { sender, status in
            sender.submit(Self.report(1, endingAt: 1000))
            sender.submit(Self.report(2, endingAt: 2000))
            // Well past the point where the first would be suspect, and its probe failed too.
            try await Self.waitFor("three rounds of suspicion") {
                intake.count("1000", 503) >= 3 * IntakeSender.suspectAfterServerErrors
                    && intake.count("2000", 503) >= 2
            }
            intake.answers.withLock { $0.otherwise = 202 }
            try await Self.waitFor("both sent after recovery") { status.withLock { $0?.sent } == 2 }
        }
        #expect(final.dropped == 0 && final.droppedPoison == 0)
        #expect(intake.log.filter { $0.status == 202 }.map(\.timestamp).sorted() == ["1000", "2000"])
    }

    /// What waits in the queue or is being retried when the sender stops is counted as dropped.
    @Test(.timeLimit(.minutes(1)))
    func messagesLeftAtShutdownAreCountedDropped() async throws {
        let intake = Intake()
        intake.answers.withLock { $0.otherwise = 503 }
        let server = try Self.start(intake)
        let final = try await Self.running(server.baseURL) { sender, status in
            for n in 1...4 { sender.submit(Self.report(UInt64(n), endingAt: Int64(n) * 1000)) }
            try await Self.waitFor("all four queued or in flight") {
                status.withLock { ($0?.queueDepth ?? 0) + ($0?.inFlight ?? 0) } == 4 && intake.log.count >= 2
            }
        }
        #expect(final.droppedAtShutdown == 4 && final.dropped == 4)
        #expect(final.queueDepth == 0 && final.inFlight == 0 && final.sent == 0)
    }

    /// An intake that trickles its answer a byte a second is cut off by the request timeout and
    /// retried: it cannot hold the sender.
    @Test(.timeLimit(.minutes(1)))
    func aTricklingIntakeIsCutOffByTheTimeout() async throws {
        let trickle = try ScriptedHTTPServer(
            answering: .script { connection in
                for byte in "HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}" {
                    connection.send(String(byte))
                    if connection.waitForClientToClose(timeout: .seconds(1)) { return }
                }
            })
        let final = try await Self.running(trickle.baseURL, timeoutSeconds: 1) { sender, status in
            sender.submit(Self.report(1, endingAt: 1000))
            let began = ContinuousClock.now
            try await Self.waitFor("two attempts cut off") { (status.withLock { $0?.retried } ?? 0) >= 2 }
            #expect(ContinuousClock.now - began < .seconds(10))
        }
        #expect(final.sent == 0 && final.droppedPoison == 0, "a timeout never makes a message suspect")
        #expect((final.lastError ?? "").contains("timedOut"), "\(final.lastError ?? "")")
    }
}
