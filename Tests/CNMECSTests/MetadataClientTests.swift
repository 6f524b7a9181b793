import CNMECS
import CNMTestSupport
import Foundation
import Glibc
import Testing

/// The client against a local HTTP server serving the fixtures, errors and silence.
@Suite struct MetadataClientTests {
    private static let taskARN = "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c"

    private func fixture(_ path: String) throws -> String {
        String(decoding: try Fixtures.ecs(path), as: UTF8.self)
    }

    /// Runs `fetchTask` and returns its error, failing the test when it succeeds.
    private func fetchTaskError(_ client: ECSMetadataClient) async -> ECSMetadataError? {
        do {
            let fetched = try await client.fetchTask()
            Issue.record("expected an error, got a task from \(fetched.path)")
            return nil
        } catch {
            return error
        }
    }

    @Test func taskWithTags() async throws {
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, try fixture("awsdocs/examples/ec2-v4-taskWithTags.json"))
            ])
        // A trailing slash on the base URI is dropped.
        let client = try ECSMetadataClient(baseURI: server.baseURL + "/v4/abc/")
        #expect(client.baseURI == server.baseURL + "/v4/abc")
        let fetched = try await client.fetchTask()
        #expect(fetched.path == .taskWithTags)
        #expect(fetched.taskWithTagsFailure == nil)
        #expect(fetched.task.taskARN == Self.taskARN)
        #expect(fetched.task.taskTags == ["tag-use": "task-metadata-endpoint-test"])
        #expect(fetched.task.containers?.count == 2)
        #expect(server.finish().map(\.requestLine) == ["GET /v4/abc/taskWithTags HTTP/1.1"])
    }

    /// A body that reports failed tag lookups but holds the task is the answer: `/task` would give
    /// the same task without the tags.
    @Test func taskWithTagsReportingErrors() async throws {
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, try fixture("awsdocs/examples/ec2-v4-taskWithTags-error.json"))
            ])
        let fetched = try await ECSMetadataClient(baseURI: server.baseURL + "/v4/abc").fetchTask()
        #expect(fetched.path == .taskWithTags)
        #expect(fetched.task.errors?.map(\.errorField) == ["ContainerInstanceTags", "TaskTags"])
        #expect(fetched.task.tags.contains("task_family:curltest"))
        #expect(server.finish().map(\.requestLine) == ["GET /v4/abc/taskWithTags HTTP/1.1"])
    }

    @Test func fallsBackToTaskOnHTTPError() async throws {
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(404, "404 page not found"),
                .http(200, try fixture("v4/otel-go/metadatav4-response-task-fargate.json")),
                .http(200, try fixture("v4/otel-go/metadatav4-response-task-fargate.json")),
            ])
        let client = try ECSMetadataClient(baseURI: server.baseURL + "/v4/abc")
        let fetched = try await client.fetchTask()
        #expect(fetched.path == .task)
        #expect(fetched.task.launchType == .fargate)
        let failure = try #require(fetched.taskWithTagsFailure)
        #expect(failure.kind == "ecs_http_404")
        #expect(failure.reason == .httpStatus(404))
        #expect(failure.message.contains("404 page not found"))
        // A 404 is remembered: the next fetch asks /task alone, and has no failure to report.
        let again = try await client.fetchTask()
        #expect(again.path == .task && again.taskWithTagsFailure == nil)
        #expect(
            server.finish().map(\.requestLine) == [
                "GET /v4/abc/taskWithTags HTTP/1.1", "GET /v4/abc/task HTTP/1.1", "GET /v4/abc/task HTTP/1.1",
            ])
    }

    /// A body of errors alone, with nothing of the task.
    @Test func fallsBackToTaskOnAnErrorOnlyBody() async throws {
        let errorsOnly = #"{"Errors": [{"ErrorField": "TaskTags", "ErrorCode": "AccessDeniedException"}]}"#
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, errorsOnly),
                .http(200, try fixture("awsdocs/examples/ec2-v4-task.json")),
            ])
        let fetched = try await ECSMetadataClient(baseURI: server.baseURL).fetchTask()
        #expect(fetched.path == .task)
        #expect(fetched.taskWithTagsFailure?.kind == "ecs_invalid_json")
        #expect(fetched.task.taskARN == Self.taskARN)
        #expect(server.finish().map(\.requestLine) == ["GET /taskWithTags HTTP/1.1", "GET /task HTTP/1.1"])
    }

    @Test func bothFailingGivesTheTaskError() async throws {
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(500, "internal error"),
                .http(503, ""),
            ])
        let error = await fetchTaskError(try ECSMetadataClient(baseURI: server.baseURL))
        #expect(error?.kind == "ecs_http_503")
        #expect(error?.message.contains("(empty body)") == true)
        #expect(server.finish().map(\.requestLine).count == 2)
    }

    @Test func truncatedJSON() async throws {
        let body = try fixture("awsdocs/examples/ec2-v4-task.json")
        let half = String(body.prefix(body.count / 2))
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, half), .http(200, half),
            ])
        let error = await fetchTaskError(try ECSMetadataClient(baseURI: server.baseURL))
        #expect(error?.reason == .invalidJSON)
        #expect(error?.kind == "ecs_invalid_json")
        #expect(server.finish().map(\.requestLine).count == 2)
    }

    @Test func notJSON() async throws {
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, "<html>hello</html>"), .http(200, "[1, 2]"),
            ])
        let error = await fetchTaskError(try ECSMetadataClient(baseURI: server.baseURL))
        #expect(error?.kind == "ecs_invalid_json")
        _ = server.finish().map(\.requestLine)
    }

    /// The connection closes before the announced body has all arrived.
    @Test func bodyCutShort() async throws {
        let cut = "HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n{\"Cluster\": \"default\""
        let server = try ScriptedHTTPServer(.loopback, replies: [.raw(cut), .raw(cut)])
        let error = await fetchTaskError(try ECSMetadataClient(baseURI: server.baseURL))
        #expect(error?.kind == "ecs_connection_closed")
        _ = server.finish().map(\.requestLine)
    }

    @Test func notHTTP() async throws {
        let server = try ScriptedHTTPServer(.loopback, replies: [.raw("garbage\r\n\r\n"), .raw("garbage\r\n\r\n")])
        let error = await fetchTaskError(try ECSMetadataClient(baseURI: server.baseURL))
        #expect(error?.kind == "ecs_bad_response")
        _ = server.finish().map(\.requestLine)
    }

    /// JSON nested far deeper than any task document (a body built to exhaust a recursive parser's
    /// stack) is invalid JSON, not a crash; and a body just under the 4 MiB default bound is read
    /// whole and judged like any other.
    @Test func deeplyNestedAndFourMebibyteBodiesAreInvalidNotFatal() async throws {
        let nested = String(repeating: #"{"Containers":["#, count: 100_000)
        let padded = #"{"Cluster":"default","Padding":""# + String(repeating: "x", count: (4 << 20) - 200) + #""}"#
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, nested), .http(200, nested), .http(200, padded), .http(200, padded),
            ])
        let client = try ECSMetadataClient(baseURI: server.baseURL)
        let deep = await fetchTaskError(client)
        #expect(deep?.kind == "ecs_invalid_json")
        let large = await fetchTaskError(client)
        #expect(large?.kind == "ecs_invalid_json", "a task without TaskARN or containers: \(String(describing: large))")
        #expect(server.finish().count == 4)
    }

    @Test func responseTooLarge() async throws {
        let body = try fixture("awsdocs/examples/ec2-v4-task.json")
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, body), .http(200, body),
            ])
        let client = try ECSMetadataClient(baseURI: server.baseURL, maxResponseBytes: 1000)
        let error = await fetchTaskError(client)
        #expect(error?.kind == "ecs_response_too_large")
        _ = server.finish().map(\.requestLine)
    }

    /// A server that accepts connections (the kernel does, from the backlog) but never answers:
    /// each of the two requests ends at the timeout.
    @Test func silentServerTimesOut() async throws {
        let (fd, port) = try TestSocket.bound()
        defer { close(fd) }
        try #require(listen(fd, 8) == 0)
        let client = try ECSMetadataClient(baseURI: "http://127.0.0.1:\(port)/v4/abc", timeoutMilliseconds: 200)
        let clock = ContinuousClock()
        let start = clock.now
        let error = await fetchTaskError(client)
        let elapsed = clock.now - start
        #expect(error?.reason == .timeout)
        #expect(error?.kind == "ecs_timeout")
        #expect(elapsed >= .milliseconds(380))
        // It gave up rather than hung (what bounds the elapsed time is the timeout, not this machine's load).
        #expect(elapsed < .seconds(30))
    }

    /// Nothing listens: `/task` is not tried, as it would be refused alike.
    @Test func connectionRefused() async throws {
        let (fd, port) = try TestSocket.bound()
        defer { close(fd) }
        let client = try ECSMetadataClient(baseURI: "http://127.0.0.1:\(port)")
        let error = await fetchTaskError(client)
        #expect(error?.kind == "ecs_connection_failed")
        #expect(error?.message.contains("/taskWithTags") == true)
    }

    @Test(arguments: ["", "/", "169.254.170.2/v4", "ftp://169.254.170.2/v4", "http://", "http:///"])
    func invalidBaseURI(uri: String) {
        let error = #expect(throws: ECSMetadataError.self) {
            try ECSMetadataClient(baseURI: uri)
        }
        #expect(error?.kind == "ecs_invalid_endpoint")
    }

    @Test func container() async throws {
        let server = try ScriptedHTTPServer(
            .loopback,
            replies: [
                .http(200, try fixture("v4/otel-go/metadatav4-response-container-fargate.json"))
            ])
        let client = try ECSMetadataClient(baseURI: server.baseURL + "/v4/cd189a933e5849daa93386466019ab50-2495160603")
        let container = try await client.fetchContainer()
        #expect(container.dockerID == "cd189a933e5849daa93386466019ab50-2495160603")
        #expect(container.name == "curl")
        #expect(server.finish().map(\.requestLine) == ["GET /v4/cd189a933e5849daa93386466019ab50-2495160603 HTTP/1.1"])
    }
}
