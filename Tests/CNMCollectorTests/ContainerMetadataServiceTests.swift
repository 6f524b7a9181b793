import CNMModel
import CNMReport
import CNMTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import CNMCollector

/// The container-metadata service against a scripted Docker daemon and ECS endpoint on loopback,
/// serving the shared fixtures' real responses: no root, no dockerd.
@Suite(.timeLimit(.minutes(1)))
struct ContainerMetadataServiceTests {
    static let fixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/fixtures")

    static func fixture(_ path: String) throws -> [String: Any] {
        let url = fixtures.appendingPathComponent(path)
        try #require(FileManager.default.fileExists(atPath: url.path), "fixture missing: \(url.path)")
        let value = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        if let list = value as? [[String: Any]] { return try #require(list.first) }
        return try #require(value as? [String: Any])
    }

    static func json(_ value: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: value), as: UTF8.self)
    }

    /// A Docker daemon whose containers (id → name) the test changes while it runs. `/version`,
    /// `/containers/json` and `/containers/{id}/json` answer from Moby's own examples with the
    /// ids and names put in; `/events` is held open without a word; `failing` answers 500.
    final class Daemon: Sendable {
        /// What the test changes while the daemon runs.
        final class State: Sendable {
            let containers = Mutex<[(id: String, name: String)]>([])
            let failing = Atomic<Bool>(false)
            let hanging = Atomic<Bool>(false)
            /// Sent on `/events` at once (then the stream is held open); none by default.
            let events = Mutex<String>("")
            /// Inspects are held unanswered (the client's timeout ends them).
            let stallInspects = Atomic<Bool>(false)
            /// The list says every container exited.
            let exited = Atomic<Bool>(false)
        }
        let state = State()
        let server: ScriptedHTTPServer
        var host: String { "tcp://127.0.0.1:\(server.port)" }
        var listings: Int { server.requests.filter { $0.path.contains("/containers/json") }.count }

        init() throws {
            let summary = try ContainerMetadataServiceTests.json(
                ContainerMetadataServiceTests.fixture("docker/moby-api-v1.24/containers-list.example1.json"))
            let inspect = try ContainerMetadataServiceTests.json(
                ContainerMetadataServiceTests.fixture("docker/moby-api-v1.24/container-inspect.example1.json"))
            let state = self.state
            server = try ScriptedHTTPServer { request in
                (try? Self.answer(request, state, summary: summary, inspect: inspect)) ?? .http(500, "{}")
            }
        }

        private static func answer(
            _ request: ScriptedHTTPServer.Request,
            _ state: State,
            summary: String, inspect: String
        ) throws -> ScriptedHTTPServer.Reply {
            if state.hanging.load(ordering: .relaxed) { return .holdUntilClientCloses }
            let path = request.path
            if path.hasSuffix("/version") { return .http(200, #"{"ApiVersion":"1.43"}"#) }
            if path.contains("/events") {
                let lines = state.events.withLock { $0 }
                guard !lines.isEmpty else { return .holdUntilClientCloses }
                return .script { connection in
                    connection.head()
                    connection.chunk(lines)
                    _ = connection.waitForClientToClose(timeout: .seconds(60))
                }
            }
            if state.stallInspects.load(ordering: .relaxed), path.contains("/containers/"),
                !path.contains("/containers/json")
            {
                return .holdUntilClientCloses
            }
            if state.failing.load(ordering: .relaxed) { return .http(500, #"{"message":"scripted failure"}"#) }
            let listed = state.containers.withLock { $0 }
            let exited = state.exited.load(ordering: .relaxed)
            func object(_ text: String) throws -> [String: Any] {
                try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
            }
            if path.contains("/containers/json") {
                let entries = try listed.map { c -> [String: Any] in
                    var entry = try object(summary)
                    entry["Id"] = c.id
                    entry["Names"] = ["/" + c.name]
                    entry["State"] = exited ? "exited" : "running"
                    return entry
                }
                return .http(200, try ContainerMetadataServiceTests.json(entries))
            }
            for c in listed where path.contains("/containers/\(c.id)/json") {
                var entry = try object(inspect)
                entry["Id"] = c.id
                entry["Name"] = "/" + c.name
                return .http(200, try ContainerMetadataServiceTests.json(entry))
            }
            return .http(404, #"{"message":"no such container"}"#)
        }
    }

    /// Runs a service for `body`, then shuts it down and waits for it to end.
    static func withService(
        docker: Daemon, ecs: String? = nil,
        _ body: (ContainerMetadataService, StatusStore) async throws -> Void
    ) async throws {
        var configuration = Configuration()
        configuration.dockerHost = docker.host
        configuration.ecsMetadataURI = ecs
        let store = StatusStore(
            status: AgentStatus(
                version: "0", hostname: "h", startedAt: Timestamp(nanoseconds: 0), intervalSeconds: 30,
                mode: .ebpf, modeReason: "test"))
        let service = ContainerMetadataService(
            configuration: configuration, status: store, logger: Logger(label: "test"))
        let running = Task { try await service.run() }
        do {
            try await body(service, store)
        } catch {
            running.cancel()
            _ = await running.result
            throw error
        }
        running.cancel()
        _ = await running.result
    }

    static let id = String(repeating: "ab12", count: 16)

    /// A flood of start events while every inspect stalls: the events stream is read to its end at
    /// once (inspects run apart from it), each container waits once however many events name it,
    /// and past the bound the waiting inspects give way to one listing, which names them all.
    @Test func anEventFloodWithStalledInspectsNeitherHoldsTheStreamNorGrowsWithoutBound() async throws {
        let docker = try Daemon()
        let ids = (0..<2_000).map { String(format: "%064x", $0 + 1) }
        docker.state.containers.withLock { $0 = ids.map { ($0, "flood-\($0.suffix(4))") } }
        docker.state.stallInspects.store(true, ordering: .relaxed)
        let base: Int64 = 1_700_000_000_000_000_000
        docker.state.events.withLock { text in
            text = ids.enumerated().map { n, id in
                #"{"Type":"container","Action":"start","Actor":{"ID":"\#(id)","Attributes":{"name":"x"}},"time":1700000000,"timeNano":\#(base + Int64(n))}"#
                    + "\n"
            }.joined()
        }
        try await Self.withService(docker: docker) { service, store in
            let status = try await waitFor("every event read", timeout: .seconds(20), every: .milliseconds(10)) {
                let events = store.status.dockerEvents
                return events.counters["events"] == 2_000 ? events : nil
            }
            #expect(status.counters["inspect_overflows"] ?? 0 >= 1, "\(status.counters)")
            // The listing names every container although no inspect ever answered.
            let snapshot = await service.snapshot(knowing: Set(ids), timeout: .seconds(20))
            #expect(ids.allSatisfy { snapshot.tags[$0] != nil }, "\(snapshot.tags.count) of 2000 named")
            let inspects = docker.server.requests.filter {
                $0.path.contains("/containers/") && !$0.path.contains("/containers/json")
            }
            // One at a time, and at most a bounded number per refresh: not one per event.
            #expect(inspects.count < 200, "\(inspects.count) inspects sent")
            #expect(store.status.docker.counters["inspect_failures"] ?? 0 >= 1)
        }
    }

    /// A host that kept thousands of exited containers: each refresh inspects a bounded number of
    /// them (never-inspected first), the rest are named from the list, and every one is named.
    @Test func thousandsOfExitedContainersCostABoundedNumberOfInspectsPerRefresh() async throws {
        let docker = try Daemon()
        let ids = (0..<3_000).map { String(format: "%064x", $0 + 1) }
        docker.state.containers.withLock { $0 = ids.map { ($0, "old-\($0.suffix(4))") } }
        docker.state.exited.store(true, ordering: .relaxed)
        try await Self.withService(docker: docker) { service, store in
            let snapshot = await service.snapshot(knowing: Set(ids), timeout: .seconds(20))
            #expect(ids.allSatisfy { snapshot.tags[$0] != nil }, "\(snapshot.tags.count) of 3000 named")
            let listings = docker.listings
            let inspects = docker.server.requests.filter {
                $0.path.contains("/containers/") && !$0.path.contains("/containers/json")
            }.count
            #expect(inspects <= (listings + 1) * 32, "\(inspects) inspects for \(listings) listings")
            #expect(store.status.docker.counters["listed_only"] ?? 0 > 0)
        }
    }

    @Test func aSnapshotNamesTheContainersDockerLists() async throws {
        let docker = try Daemon()
        docker.state.containers.withLock { $0 = [(Self.id, "web")] }
        try await Self.withService(docker: docker) { service, store in
            let snapshot = await service.snapshot(knowing: [Self.id], timeout: .seconds(20))
            let tags = try #require(snapshot.tags[Self.id], "known: \(snapshot.tags.keys.sorted())")
            #expect(tags.contains("container_name:web"))
            #expect(tags.contains("container_id:\(Self.id)"))
            #expect(store.status.docker.state == "ok")
            #expect(store.status.docker.counters["containers"] == 1)
        }
    }

    /// A container met before the daemon listed it is awaited: the report asks for a refresh and
    /// gets the next snapshot, well before the 10 s periodic refresh would come.
    @Test func aContainerThatStartsLaterIsAwaitedByAskingForARefresh() async throws {
        let docker = try Daemon()
        try await Self.withService(docker: docker) { service, _ in
            _ = try await waitFor("the first listing", timeout: .seconds(20), every: .milliseconds(10)) {
                docker.listings > 0 && service.current.tags.isEmpty ? true : nil
            }
            let before = docker.listings
            docker.state.containers.withLock { $0 = [(Self.id, "late")] }
            let snapshot = await service.snapshot(knowing: [Self.id], timeout: .seconds(5))
            #expect(snapshot.tags[Self.id]?.contains("container_name:late") == true)
            #expect(docker.listings > before)
        }
    }

    /// A daemon that holds every request costs the tags, not the report: the wait ends at its deadline.
    @Test func aHangingDaemonEndsTheWaitAtItsDeadline() async throws {
        let docker = try Daemon()
        docker.state.hanging.store(true, ordering: .relaxed)
        try await Self.withService(docker: docker) { service, store in
            try await waitFor("the first request", timeout: .seconds(20), every: .milliseconds(10)) {
                docker.server.requests.isEmpty ? nil : ()
            }
            let snapshot = await service.snapshot(knowing: [Self.id], timeout: .milliseconds(300))
            #expect(snapshot.tags.isEmpty)
            // The refresh is still held by the daemon (its HTTP timeout is 5 s): the wait did not wait for it.
            #expect(store.status.docker.state == "starting")
        }
    }

    /// A daemon that starts failing keeps the tags it gave, and says so in `/status`.
    @Test func aFailingDaemonKeepsTheLastTagsAndIsCounted() async throws {
        let docker = try Daemon()
        docker.state.containers.withLock { $0 = [(Self.id, "web")] }
        try await Self.withService(docker: docker) { service, store in
            #expect(await service.snapshot(knowing: [Self.id], timeout: .seconds(20)).tags[Self.id] != nil)
            docker.state.failing.store(true, ordering: .relaxed)
            let failures = docker.server.requests.count
            service.requestRefresh()
            let status = try await waitFor("the failure in /status", timeout: .seconds(20), every: .milliseconds(10)) {
                store.status.docker.state == "unavailable" ? store.status : nil
            }
            #expect(docker.server.requests.count > failures)
            #expect(status.docker.reason.contains("500"))
            #expect(status.problems.keys.contains { $0.hasPrefix("docker_") })
            #expect(service.current.tags[Self.id]?.contains("container_name:web") == true)
        }
    }

    /// On ECS, a container's tags are Docker's and the task's together.
    @Test func dockerAndECSTagsAreMerged() async throws {
        var task = try Self.fixture("ecs/v4/datadog/ec2-bridge-taskWithTags-nginx.json")
        var container = try #require((task["Containers"] as? [[String: Any]])?.first)
        container["DockerId"] = Self.id
        task["Containers"] = [container]
        let ecs = try ScriptedHTTPServer(answering: .http(200, try Self.json(task)))
        let docker = try Daemon()
        docker.state.containers.withLock { $0 = [(Self.id, "ecs-nginx-1-my-nginx")] }
        try await Self.withService(docker: docker, ecs: ecs.baseURL + "/v4/abc") { service, store in
            let tags = try await waitFor("merged tags", timeout: .seconds(20), every: .milliseconds(10)) {
                let tags = await service.snapshot(knowing: [Self.id], timeout: .seconds(1)).tags[Self.id] ?? []
                return tags.contains("task_family:nginx") && tags.contains("container_name:ecs-nginx-1-my-nginx")
                    ? tags : nil
            }
            #expect(tags.contains("ecs_cluster_name:ecs-cluster"))
            #expect(store.status.ecs?.state == "ok")
        }
        #expect(ecs.requests.contains { $0.path == "/v4/abc/taskWithTags" })
    }
}
