import CNMDocker
import CNMTestSupport
import Foundation
import Glibc
import Testing

/// The client and cache against a fake daemon on a unix socket: each way a daemon can fail comes
/// back as its own error kind, and the cache keeps its last good map through all of them.
@Suite struct DockerClientTests {
    static let id = "4f1b3c2a" + String(repeating: "e", count: 56)
    static let list = #"[{"Id": "\#(id)", "Names": ["/web"], "Image": "team/app:v2", "Labels": {}}]"#
    static let inspect = #"""
        {"Id": "\#(id)", "Name": "/web", "Image": "sha256:abc", "Config": {"Image": "team/app:v2",
         "Env": ["A=1"], "Labels": {"tier": "front"}}, "NetworkSettings": {"Networks": {"bridge":
         {"IPAddress": "172.17.0.9", "GlobalIPv6Address": "fd00::9"}}}, "Unknown": [1, 2]}
        """#

    private func client(_ daemon: ScriptedHTTPServer, timeout: Duration = .seconds(5)) throws -> DockerClient {
        try DockerClient(host: "unix://\(daemon.socketPath)", timeout: timeout)
    }

    private func failure(_ call: () async throws(DockerError) -> Void) async -> DockerError? {
        do {
            try await call()
            return nil
        } catch {
            return error
        }
    }

    @Test func refreshKeepsLastGoodMapThroughFailures() async throws {
        let truncated = String(Self.list.dropLast(10))
        let daemon = try ScriptedHTTPServer(replies: [
            .http(status: 200, body: Self.list),
            .http(status: 200, body: Self.inspect),
            .http(status: 500, body: #"{"message": "daemon is sad"}"#),
            .raw("garbage, not HTTP\r\n\r\n"),
            .http(status: 200, body: truncated),
            .closeWithoutAnswer,
        ])
        let cache = DockerMetadataCache(client: try client(daemon), keepingEnv: ["A"])

        try await cache.refresh()
        let good = try #require(cache.metadata(forContainerID: Self.id))
        #expect(good.name == "web")
        #expect(good.env == ["A": "1"])
        #expect(good.labels == ["tier": "front"])
        #expect(good.ipAddresses.map(\.description) == ["172.17.0.9", "fd00::9"])
        #expect(
            good.tags == [
                "container_name:web", "container_id:\(Self.id)", "image_name:team/app", "short_image:app",
                "image_tag:v2", "docker_image:team/app:v2",
            ])

        let expected: [DockerError.Kind] = [.httpStatus, .badResponse, .undecodableBody, .connectionClosed]
        for kind in expected {
            let error = await failure { () async throws(DockerError) in try await cache.refresh() }
            #expect(error?.kind == kind, "\(error.map(String.init(describing:)) ?? "no error")")
            #expect(cache.containers == [Self.id: good])
        }

        let health = cache.health
        #expect(health.refreshes == 5)
        #expect(health.failures == Dictionary(uniqueKeysWithValues: expected.map { ($0, 1) }))
        #expect(health.consecutiveFailures == 4)
        #expect(health.containers == 1)
        #expect(health.lastError?.hasPrefix("connection_closed: GET /containers/json?all=1 on unix://") == true)

        let requests = daemon.finish().map(\.requestLine)
        #expect(requests.first == "GET /containers/json?all=1 HTTP/1.1")
        #expect(requests.dropFirst().first == "GET /containers/\(Self.id)/json HTTP/1.1")
        #expect(requests.count == 6)
    }

    @Test func statusAndDaemonMessage() async throws {
        let daemon = try ScriptedHTTPServer(replies: [.http(status: 500, body: #"{"message": "daemon is sad"}"#)])
        let client = try client(daemon)
        let error = await failure { () async throws(DockerError) in _ = try await client.listContainers() }
        #expect(error?.kind == .httpStatus)
        #expect(error?.httpStatus == 500)
        #expect(error?.message.hasSuffix("HTTP 500: daemon is sad") == true)
        _ = daemon.finish()
    }

    /// A body cut short of its Content-Length is a closed connection, not a decoding problem.
    @Test func bodyShorterThanAnnounced() async throws {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        let daemon = try ScriptedHTTPServer(replies: [.raw(head + String(Self.list.prefix(20)))])
        let client = try client(daemon)
        let error = await failure { () async throws(DockerError) in _ = try await client.listContainers() }
        #expect(error?.kind == .connectionClosed)
        _ = daemon.finish()
    }

    @Test func silentDaemonTimesOut() async throws {
        // The daemon holds the connection 5 s, then closes it: a client without a working timeout
        // would see a closed connection, not a timeout, and only after the stall.
        let daemon = try ScriptedHTTPServer(replies: [.stall(milliseconds: 5000)])
        let client = try client(daemon, timeout: .milliseconds(200))
        let start = ContinuousClock.now
        let error = await failure { () async throws(DockerError) in _ = try await client.listContainers() }
        #expect(error?.kind == .timeout)
        #expect(ContinuousClock.now - start < .seconds(5))
        _ = daemon.finish()
    }

    @Test func responseOverTheLimit() async throws {
        let daemon = try ScriptedHTTPServer(replies: [.http(status: 200, body: Self.list)])
        let client = try DockerClient(host: "unix://\(daemon.socketPath)", maxResponseBytes: 16)
        let error = await failure { () async throws(DockerError) in _ = try await client.listContainers() }
        #expect(error?.kind == .responseTooLarge)
        _ = daemon.finish()
    }

    /// A container that exits between the list and its inspect is left out, not an error.
    @Test func containerGoneBeforeInspect() async throws {
        let gone = String(repeating: "d", count: 64)
        let list = #"[{"Id": "\#(gone)"}, {"Id": "\#(Self.id)"}]"#
        let daemon = try ScriptedHTTPServer(replies: [
            .http(status: 200, body: list),
            .http(status: 404, body: #"{"message": "No such container"}"#),
            .http(status: 200, body: Self.inspect),
        ])
        let cache = DockerMetadataCache(client: try client(daemon))
        try await cache.refresh()
        #expect(cache.containers.map(\.key) == [Self.id])
        _ = daemon.finish()
    }

    @Test func socketMissing() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let client = try DockerClient(host: "unix://\(directory)/docker.sock")
        let error = await failure { () async throws(DockerError) in try await client.ping() }
        #expect(error?.kind == .socketMissing)
        #expect(error?.message.contains(directory) == true)
    }

    /// A socket file nobody listens on, as a crashed daemon leaves behind.
    @Test func connectionRefused() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fd = try unixSocket(boundTo: directory + "/docker.sock")
        defer { close(fd) }
        let client = try DockerClient(host: "unix://\(directory)/docker.sock")
        let error = await failure { () async throws(DockerError) in try await client.ping() }
        #expect(error?.kind == .connectionRefused)
    }

    /// `tcp://` goes to plain HTTP on that port: a bound port nobody listens on refuses.
    @Test func tcpHost() async throws {
        let (fd, port) = try TestSocket.bound()
        defer { close(fd) }
        let client = try DockerClient(host: "tcp://127.0.0.1:\(port)")
        let error = await failure { () async throws(DockerError) in try await client.ping() }
        #expect(error?.kind == .connectionRefused)
        #expect(error?.message.contains("tcp://127.0.0.1:\(port)") == true)
    }

    @Test(arguments: ["ssh://user@host", "npipe:////./pipe/docker_engine", "/var/run/docker.sock", "tcp://"])
    func unsupportedHosts(_ host: String) {
        let error = #expect(throws: DockerError.self) { try DockerClient(host: host) }
        #expect(error?.kind == .invalidHost)
    }
}
