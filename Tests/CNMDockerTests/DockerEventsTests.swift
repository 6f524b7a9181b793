import CNMDocker
import CNMHTTP
import CNMTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// The event stream against scripted servers: decoding whatever the chunking, skipping what is
/// not a container event, reconnecting, version negotiation and cancellation.
@Suite struct DockerEventsTests {
    static let id = "ede54ee1afda366ab42f824e8a5ffd195155d853ceaec74a927f249ea270c743"

    static func line(_ action: String, id: String = id, name: String = "web", nano: Int64) -> String {
        #"{"Type":"container","Action":"\#(action)","Actor":{"ID":"\#(id)","Attributes":{"name":"\#(name)","image":"alpine"}},"scope":"local","time":\#(nano / 1_000_000_000),"timeNano":\#(nano)}"#
            + "\n"
    }

    static func event(_ action: DockerEvent.Action, id: String = id, name: String = "web", nano: Int64) -> DockerEvent {
        DockerEvent(
            action: action, containerID: id, attributes: ["name": name, "image": "alpine"],
            time: DockerEventTime(nanosecondsSince1970: nano))
    }

    /// The v1.24 example stream, one object per line as the daemon sends it (the fixture is pretty-printed).
    static func exampleStream() throws -> String {
        let text = String(decoding: try Fixtures.data("moby-api-v1.24/events.example1.jsonstream"), as: UTF8.self)
        let objects = text.components(separatedBy: "\n}\n").filter { !$0.isEmpty }.map { $0 + "}" }
        return objects.map { $0.replacingOccurrences(of: "\n", with: " ") + "\n" }.joined()
    }

    @Test func decodesTheExampleStreamWhateverTheChunks() throws {
        let stream = Array(try Self.exampleStream().utf8)
        var whole = DockerEventDecoder()
        let expected = whole.decode(stream) + whole.finish()
        #expect(
            expected.map(\.action) == [.other("create"), .other("attach"), .start, .other("resize"), .die, .destroy])
        #expect(Set(expected.map(\.containerID)) == [Self.id])
        let start = try #require(expected.first { $0.action == .start })
        #expect(start.time == DockerEventTime(nanosecondsSince1970: 1_461_943_101_607_533_796))
        #expect(start.time.secondsSince1970 == 1_461_943_101)
        #expect(start.name == "my-container")
        #expect(start.image == "alpine")
        #expect(start.attributes["com.example.some-label"] == "some-label-value")
        #expect(expected.first { $0.action == .die }?.attributes["exitCode"] == "0")
        var counts = DockerEventCounts()
        counts.events = 6
        counts.otherActions = 3
        counts.otherTypes = 3
        #expect(whole.counts == counts)

        for split in 1..<stream.count {
            var decoder = DockerEventDecoder()
            let events = decoder.decode(stream[..<split]) + decoder.decode(stream[split...]) + decoder.finish()
            #expect(events == expected, "split at \(split)")
            #expect(decoder.counts == counts)
        }
        var bytewise = DockerEventDecoder()
        #expect(stream.flatMap { bytewise.decode([$0]) } == expected)
    }

    /// The docker-java sample carries both the legacy fields and the current ones.
    @Test func decodesLegacyFields() throws {
        let sample = String(decoding: try Fixtures.data("docker-java/v1.24-events-docs1.json"), as: UTF8.self)
        let legacy = #"{"status":"die","id":"\#(Self.id)","from":"busybox","time":1461943105}"#
        var decoder = DockerEventDecoder()
        let events = decoder.decode(Array((sample.replacingOccurrences(of: "\n", with: " ") + "\n" + legacy).utf8))
        let all = events + decoder.finish()
        #expect(all.count == 2)
        #expect(all.first?.action == .other("create"))
        #expect(all.first?.name == "my-container")
        #expect(all.first?.time == DockerEventTime(nanosecondsSince1970: 1_461_943_101_381_709_551))
        #expect(
            all.last
                == DockerEvent(
                    action: .die, containerID: Self.id, attributes: ["image": "busybox"],
                    time: try #require(.init(secondsSince1970: 1_461_943_105))))
    }

    @Test func renameCarriesTheOldName() {
        let line =
            #"{"Type":"container","Action":"rename","Actor":{"ID":"\#(Self.id)","Attributes":{"name":"new","oldName":"/old"}},"time":5,"timeNano":5000000001}"#
        var decoder = DockerEventDecoder()
        let event = decoder.decode(Array((line + "\n").utf8)).first
        #expect(event?.action == .rename)
        #expect(event?.name == "new")
        #expect(event?.oldName == "old")
        #expect(event?.time.description == "5.000000001")
    }

    @Test func overlongLineIsDroppedAndTheNextDecodes() {
        var decoder = DockerEventDecoder()
        let long = Array(repeating: UInt8(ascii: "x"), count: DockerEventDecoder.maxLineBytes + 10)
        var events = decoder.decode(long[..<1000])
        events += decoder.decode(long[1000...])
        events += decoder.decode(Array(("\n" + Self.line("die", nano: 9)).utf8))
        #expect(events == [Self.event(.die, nano: 9)])
        #expect(decoder.counts.invalidLines == 1)
    }

    /// An event split over two chunks, the second chunk only sent once the first's event arrived,
    /// then several events in one chunk, with skipped lines among them.
    @Test(.timeLimit(.minutes(1)))
    func streamSplitsSkipsAndCounts() async throws {
        let firstSent = DispatchSemaphore(value: 0)
        let start = Self.line("start", nano: 1_700_000_000_000_000_001)
        let splitAt = start.utf8.count / 2
        let server = try ScriptedHTTPServer(scripts: [
            { connection in
                connection.head()
                connection.chunk(Self.line("create", nano: 1_700_000_000_000_000_000) + String(start.prefix(splitAt)))
                guard firstSent.wait(timeout: .now() + 10) == .success else { return }
                connection.chunk(
                    String(start.dropFirst(splitAt)) + "not json at all\n"
                        + #"{"Type":"network","Action":"connect","Actor":{"ID":"n1"},"time":1}"# + "\n"
                        + #"{"Type":"container","Action":"exec_start: sh -c true","Actor":{"ID":"\#(Self.id)"},"time":1700000001,"Surprise":[1,{"x":null}]}"#
                        + "\n" + #"{"Type":"container","Actor":{"ID":"no-action"},"time":1}"# + "\n\n"
                        + Self.line("die", nano: 1_700_000_002_000_000_000)
                        + Self.line("destroy", nano: 1_700_000_002_000_000_001))
                connection.end()
            }
        ])
        let client = try DockerClient(host: "unix://\(server.socketPath)")
        let counters = DockerEventCounters()
        let inbox = Inbox<DockerEvent>()
        let task = Task {
            try await client.events(counters: counters) { inbox.append($0) }
        }
        _ = try await inbox.wait { $0.count == 1 }
        firstSent.signal()
        let error = await #expect(throws: DockerError.self) { try await task.value }
        #expect(error?.kind == .connectionClosed)
        #expect(
            inbox.items == [
                Self.event(.other("create"), nano: 1_700_000_000_000_000_000),
                Self.event(.start, nano: 1_700_000_000_000_000_001),
                DockerEvent(
                    action: .other("exec_start: sh -c true"), containerID: Self.id,
                    time: .init(nanosecondsSince1970: 1_700_000_001_000_000_000)),
                Self.event(.die, nano: 1_700_000_002_000_000_000),
                Self.event(.destroy, nano: 1_700_000_002_000_000_001),
            ])
        var counts = DockerEventCounts()
        counts.events = 5
        counts.otherActions = 2
        counts.otherTypes = 1
        counts.invalidLines = 2
        #expect(counters.counts == counts)
        let requests = server.finish().map(\.requestLine)
        #expect(requests == ["GET /events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D HTTP/1.1"])
    }

    /// Runs a watcher with short backoffs against `server` until it has connected `count` times,
    /// and returns it with every update it gave.
    static func watch(_ server: ScriptedHTTPServer, untilConnected count: Int) async throws -> (
        DockerEventWatcher, [DockerEventWatcher.Update]
    ) {
        let client = try DockerClient(host: "unix://\(server.socketPath)")
        let watcher = DockerEventWatcher(client: client, backoff: Backoff(base: 0.01, max: 0.04))
        let inbox = Inbox<DockerEventWatcher.Update>()
        let task = Task { await watcher.run { inbox.append($0) } }
        let updates = try await inbox.wait { $0.filter { $0 == .connected }.count == count }
        task.cancel()
        await task.value
        return (watcher, updates)
    }

    /// Times are outside data: a `time` too large for nanoseconds (no `timeNano`) or before 1970 makes
    /// the line invalid and is counted, instead of trapping on overflow.
    @Test func timesThatDoNotFitAreInvalidLines() {
        var decoder = DockerEventDecoder()
        let lines = [
            #"{"Type":"container","Action":"start","Actor":{"ID":"abc"},"time":9223372036854775807}"#,
            #"{"Type":"container","Action":"start","Actor":{"ID":"abc"},"time":9300000000}"#,
            #"{"Type":"container","Action":"start","Actor":{"ID":"abc"},"time":-5}"#,
            #"{"Type":"container","Action":"start","Actor":{"ID":"abc"},"time":1700000000}"#,
        ]
        let events = decoder.decode(Array((lines.joined(separator: "\n") + "\n").utf8))
        #expect(events.map(\.time) == [DockerEventTime(nanosecondsSince1970: 1_700_000_000_000_000_000)])
        #expect(decoder.counts.invalidLines == 3)
        #expect(DockerEventTime(secondsSince1970: .max) == nil)
        #expect(DockerEventTime(nanosecondsSince1970: -1).description == "0.000000000")
    }

    /// An event stamped far ahead of this host's clock is delivered but is not where a reconnect
    /// resumes: otherwise every later event would look older, and the reconnect would skip them.
    @Test(.timeLimit(.minutes(1)))
    func aFutureEventDoesNotPinTheResumePoint() async throws {
        let future: Int64 = 4_000_000_000_000_000_000  // the year 2096
        let t1: Int64 = 1_700_000_000_000_000_123
        let server = try ScriptedHTTPServer(scripts: [
            { connection in
                connection.head()
                connection.chunk(Self.line("start", nano: future) + Self.line("die", nano: t1))
                connection.end()
            },
            { connection in
                connection.head()
                _ = connection.waitForClientToClose(timeout: .seconds(10))
            },
        ])
        let (watcher, updates) = try await Self.watch(server, untilConnected: 2)
        #expect(updates.contains(.event(Self.event(.start, nano: future))))
        #expect(updates.contains(.event(Self.event(.die, nano: t1))))
        #expect(watcher.health.futureTimes == 1)
        #expect(watcher.health.lastEventTime == DockerEventTime(nanosecondsSince1970: t1))
        let requests = server.finish().map(\.requestLine)
        try #require(requests.count == 2)
        #expect(requests[1].contains("&since=1700000000.000000123 HTTP/1.1"))
    }

    /// A stream lost mid-chunk and one the daemon ends are both reconnected, each from the last
    /// event's time, and the event replayed at that instant is not delivered twice.
    @Test(.timeLimit(.minutes(1)))
    func watcherReconnectsFromTheLastEvent() async throws {
        let t1: Int64 = 1_700_000_000_000_000_123
        let t2: Int64 = 1_700_000_005_000_000_000
        let server = try ScriptedHTTPServer(scripts: [
            { connection in
                connection.head()
                connection.chunk(Self.line("start", nano: t1) + #"{"Type":"contai"#)
            },
            { connection in
                connection.head()
                connection.chunk(Self.line("start", nano: t1) + Self.line("die", nano: t2))
                connection.end()
            },
            { connection in
                connection.head()
                _ = connection.waitForClientToClose(timeout: .seconds(10))
            },
        ])
        let (watcher, updates) = try await Self.watch(server, untilConnected: 3)

        let closed = try #require(
            updates.compactMap { if case .disconnected(let error) = $0 { error } else { nil } }.first)
        #expect(closed.kind == .connectionClosed)
        #expect(updates.count == 7)
        #expect(
            updates.filter { if case .disconnected = $0 { false } else { true } } == [
                .connected, .event(Self.event(.start, nano: t1)),
                .connected, .event(Self.event(.die, nano: t2)),
                .connected,
            ])
        let health = watcher.health
        #expect(health.connections == 3)
        #expect(!health.connected)
        #expect(health.failures == [.connectionClosed: 2])
        #expect(health.replayed == 1)
        #expect(health.lastEventTime == DockerEventTime(nanosecondsSince1970: t2))
        #expect(health.counts.events == 3)
        #expect(health.counts.invalidLines == 0)

        let requests = server.finish().map(\.requestLine)
        try #require(requests.count == 3)
        #expect(!requests[0].contains("since="))
        #expect(requests[1].contains("&since=1700000000.000000123 HTTP/1.1"))
        #expect(requests[2].contains("&since=1700000005.000000000 HTTP/1.1"))
    }

    /// The daemon sends nothing between events, so a stream that died without a close (a half-open
    /// connection, a hung daemon) would look connected forever: after the idle timeout the watcher
    /// opens it again from the last event, counted apart from failures; a daemon that never answers
    /// at all is a failure (`.timeout`).
    @Test(.timeLimit(.minutes(1)))
    func aSilentStreamIsOpenedAgainFromTheLastEvent() async throws {
        let t1: Int64 = 1_700_000_000_000_000_123
        let server = try ScriptedHTTPServer(scripts: [
            { connection in
                connection.head()
                connection.chunk(Self.line("start", nano: t1))
                _ = connection.waitForClientToClose(timeout: .seconds(30))
            },
            { connection in
                // Accepts, never answers.
                _ = connection.waitForClientToClose(timeout: .seconds(30))
            },
            { connection in
                connection.head()
                _ = connection.waitForClientToClose(timeout: .seconds(30))
            },
        ])
        let client = try DockerClient(host: "unix://\(server.socketPath)")
        let watcher = DockerEventWatcher(
            client: client, backoff: Backoff(base: 0.01, max: 0.04), idleTimeout: .seconds(1))
        let inbox = Inbox<DockerEventWatcher.Update>()
        let began = ContinuousClock.now
        let task = Task { await watcher.run { inbox.append($0) } }
        let updates = try await inbox.wait(timeout: .seconds(40)) { $0.filter { $0 == .connected }.count == 2 }
        let took = ContinuousClock.now - began
        task.cancel()
        await task.value

        let health = watcher.health
        #expect(health.idleReconnects == 1)
        #expect(health.failures.keys.sorted { $0.rawValue < $1.rawValue } == [.timeout])
        let failures = updates.compactMap { if case .disconnected(let error) = $0 { error } else { nil } }
        #expect(failures.map(\.kind) == [.timeout], "only the daemon that never answered is reported")
        #expect(took >= .seconds(2), "each silence lasted at least the idle timeout")
        let requests = server.finish().map(\.requestLine)
        try #require(requests.count == 3)
        #expect(requests[1].contains("&since=1700000000.000000123 HTTP/1.1"))
        #expect(requests[2].contains("&since=1700000000.000000123 HTTP/1.1"))
    }

    /// A daemon that stays down is retried with growing waits but reported once.
    @Test(.timeLimit(.minutes(1)))
    func watcherReportsAnOutageOnce() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fd = try unixSocket(boundTo: directory + "/docker.sock")
        defer { close(fd) }
        let client = try DockerClient(host: "unix://\(directory)/docker.sock")
        let backoff = Backoff(base: 0.001, max: 0.02)
        let watcher = DockerEventWatcher(client: client, backoff: backoff)
        let inbox = Inbox<DockerEventWatcher.Update>()
        let task = Task { await watcher.run { inbox.append($0) } }
        try await waitFor("five refused connections", timeout: .seconds(10), every: .milliseconds(5)) {
            watcher.health.failures[.connectionRefused, default: 0] >= 5 ? () : nil
        }
        task.cancel()
        await task.value
        try #require(inbox.items.count == 1)
        guard case .disconnected(let error) = inbox.items[0] else {
            Issue.record("expected a disconnect, got \(inbox.items)")
            return
        }
        #expect(error.kind == .connectionRefused)
    }

    @Test(.timeLimit(.minutes(1)))
    func cancellingStopsTheTransferPromptly() async throws {
        let closedByClient = Mutex<Bool?>(nil)
        let server = try ScriptedHTTPServer(scripts: [
            { connection in
                connection.head()
                connection.chunk(Self.line("start", nano: 1))
                closedByClient.withLock { $0 = connection.waitForClientToClose(timeout: .seconds(10)) }
            },
            { connection in
                connection.head()
                let closed = connection.waitForClientToClose(timeout: .seconds(10))
                closedByClient.withLock { $0 = ($0 ?? false) && closed }
            },
        ])
        let client = try DockerClient(host: "unix://\(server.socketPath)")

        let inbox = Inbox<DockerEvent>()
        let task = Task { try await client.events { inbox.append($0) } }
        _ = try await inbox.wait { !$0.isEmpty }
        let cancelledAt = ContinuousClock.now
        task.cancel()
        try await task.value
        #expect(ContinuousClock.now - cancelledAt < .milliseconds(500))

        // The HTTP stream alone: leaving the loop drops the stream, which ends the transfer.
        let http = try HTTPClient()
        let request = HTTPRequest(url: "http://localhost/events", unixSocketPath: server.socketPath, timeout: .zero)
        for try await part in http.stream(request) {
            #expect(part == .head(status: 200))
            break
        }
        _ = server.finish().map(\.requestLine)
        #expect(closedByClient.withLock { $0 } == true)
    }

    @Test func errorStatusIsThrownWithTheDaemonsMessage() async throws {
        let daemon = try ScriptedHTTPServer(replies: [.http(status: 400, body: #"{"message": "bad filter"}"#)])
        let client = try DockerClient(host: "unix://\(daemon.socketPath)")
        let error = await #expect(throws: DockerError.self) {
            try await client.events(since: .init(secondsSince1970: 7)) { _ in }
        }
        #expect(error?.kind == .httpStatus)
        #expect(error?.httpStatus == 400)
        #expect(error?.message.hasSuffix("HTTP 400: bad filter") == true)
        #expect(daemon.finish().first?.requestLine.contains("&since=7.000000000 ") == true)
    }

    @Test(arguments: [("1.41", "/v1.41"), ("1.99", "/v1.45"), ("2.0", "/v1.45"), ("1.9", "/v1.9")])
    func negotiatesTheLowerVersion(daemonVersion: String, prefix: String) async throws {
        let daemon = try ScriptedHTTPServer(replies: [
            .http(status: 200, body: #"{"Version": "x", "ApiVersion": "\#(daemonVersion)", "MinAPIVersion": "1.12"}"#),
            .http(status: 200, body: "[]"),
            .http(status: 200, body: "OK"),
            .raw("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ])
        let client = try DockerClient(host: "unix://\(daemon.socketPath)", apiVersion: .negotiate)
        #expect(try await client.listContainers().isEmpty)
        try await client.ping()
        // A copy shares what the original negotiated.
        let copy = client
        #expect(try await copy.apiVersion()?.description == String(prefix.dropFirst(2)))
        await #expect(throws: DockerError.self) { try await copy.events { _ in } }
        let requests = daemon.finish().map(\.requestLine)
        #expect(
            requests == [
                "GET /version HTTP/1.1", "GET \(prefix)/containers/json?all=1 HTTP/1.1", "GET \(prefix)/_ping HTTP/1.1",
                "GET \(prefix)/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D HTTP/1.1",
            ])
    }

    /// No `/version` (404) or no `ApiVersion` in it: unversioned paths, as before negotiation.
    /// A daemon failing otherwise is asked again next time.
    @Test func fallsBackToUnversionedPaths() async throws {
        let daemon = try ScriptedHTTPServer(replies: [
            .http(status: 404, body: #"{"message": "page not found"}"#),
            .http(status: 200, body: "OK"),
            .http(status: 200, body: "OK"),
            .http(status: 500, body: #"{"message": "starting"}"#),
            .http(status: 200, body: #"{"Version": "1.8.0"}"#),
            .http(status: 200, body: "OK"),
        ])
        let notFound = try DockerClient(host: "unix://\(daemon.socketPath)", apiVersion: .negotiate)
        try await notFound.ping()
        try await notFound.ping()
        #expect(try await notFound.apiVersion() == nil)

        let flaky = try DockerClient(host: "unix://\(daemon.socketPath)", apiVersion: .negotiate)
        let error = await #expect(throws: DockerError.self) { try await flaky.ping() }
        #expect(error?.httpStatus == 500)
        try await flaky.ping()
        #expect(try await flaky.apiVersion() == nil)

        let requests = daemon.finish().map(\.requestLine)
        #expect(
            requests == [
                "GET /version HTTP/1.1", "GET /_ping HTTP/1.1", "GET /_ping HTTP/1.1",
                "GET /version HTTP/1.1", "GET /version HTTP/1.1", "GET /_ping HTTP/1.1",
            ])
    }

    @Test func apiVersionParsing() {
        #expect(DockerAPIVersion("1.41") == DockerAPIVersion(major: 1, minor: 41))
        #expect(DockerAPIVersion("1.9")! < DockerAPIVersion("1.41")!)
        for bad in ["", "1", "1.", "v1.41", "1.41.0", "a.b", "-1.2"] {
            #expect(DockerAPIVersion(bad) == nil, "\(bad)")
        }
    }

    @Test(
        .enabled("needs dockerd answering on /var/run/docker.sock: run scripts/start-dockerd.sh") {
            await RealDockerTests.daemonAnswers()
        },
        .timeLimit(.minutes(1))
    )
    func realDaemonReportsStartAndDie() async throws {
        guard (try? runDocker(["image", "inspect", RealDockerTests.image])) != nil else {
            Issue.record("\(RealDockerTests.image) is missing: run scripts/build-test-images.sh")
            return
        }
        let client = try DockerClient(apiVersion: .negotiate)
        let version = try #require(try await client.apiVersion())
        #expect(version <= DockerClient.maxAPIVersion)

        let watcher = DockerEventWatcher(client: client)
        let inbox = Inbox<DockerEventWatcher.Update>()
        let task = Task { await watcher.run { inbox.append($0) } }
        defer { task.cancel() }
        _ = try await inbox.wait { $0.contains(.connected) }

        let name = "cnm-etest-\(String(UInt32.random(in: .min ... .max), radix: 16))"
        try runDocker(["run", "--rm", "--pull", "never", "--name", name, RealDockerTests.image, "true"])
        let updates = try await inbox.wait { updates in
            let actions = updates.compactMap { if case .event(let e) = $0, e.name == name { e.action } else { nil } }
            return actions.contains(.start) && actions.contains(.die)
        }
        let events = updates.compactMap { if case .event(let e) = $0, e.name == name { e } else { nil } }
        #expect(Set(events.map(\.containerID)).count == 1)
        #expect(events.first?.image == RealDockerTests.image)
        #expect(watcher.health.counts.invalidLines == 0)
        task.cancel()
        await task.value
    }

    @discardableResult
    private func runDocker(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["docker"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SystemCallError("docker \(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// What a callback handed over, for the test to wait on with a deadline.
final class Inbox<Element: Sendable>: Sendable {
    private let received = Mutex<[Element]>([])

    func append(_ element: Element) {
        received.withLock { $0.append(element) }
    }

    var items: [Element] { received.withLock { $0 } }

    /// Everything received once `condition` holds; fails after `timeout`.
    func wait(timeout: Duration = .seconds(10), until condition: ([Element]) -> Bool) async throws -> [Element] {
        do {
            return try await waitFor("the updates awaited", timeout: timeout, every: .milliseconds(5)) {
                let items = self.items
                return condition(items) ? items : nil
            }
        } catch {
            throw TestFailure("\(error); received \(items)")
        }
    }
}
