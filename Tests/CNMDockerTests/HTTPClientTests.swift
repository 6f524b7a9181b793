import CNMDocker
import CNMHTTP
import CNMTestSupport
import Foundation
import Testing

@Suite struct HTTPClientTests {
    /// From synchronous code the blocking overload is the one chosen.
    private func performBlocking(_ client: HTTPClient, _ request: HTTPRequest) throws -> HTTPResponse {
        try client.perform(request)
    }

    @Test func postSendsHeadersAndBody() async throws {
        let daemon = try ScriptedHTTPServer(replies: [
            .http(status: 201, body: "created"),
            .http(status: 200, body: "second"),
        ])
        let client = try HTTPClient()
        let post = HTTPRequest(
            method: .post(body: Data("{\"a\": 1}".utf8)),
            url: "http://localhost/things",
            unixSocketPath: daemon.socketPath,
            headers: [("Content-Type", "application/json"), ("X-Test", "yes")]
        )
        let created = try await client.perform(post)
        #expect(created == HTTPResponse(status: 201, body: Data("created".utf8)))

        // The blocking variant, on the same handle, with nothing left over from the POST.
        let get = HTTPRequest(url: "http://localhost/again", unixSocketPath: daemon.socketPath)
        let second = try performBlocking(client, get)
        #expect(second.status == 200)
        #expect(second.body == Data("second".utf8))

        let requests = daemon.finish()
        try #require(requests.count == 2)
        #expect(requests[0].requestLine == "POST /things HTTP/1.1")
        #expect(requests[0].head.contains("\r\nX-Test: yes\r\n"))
        #expect(requests[0].body == "{\"a\": 1}")
        #expect(requests[1].requestLine == "GET /again HTTP/1.1")
        #expect(!requests[1].head.contains("X-Test"))
        #expect(requests[1].body.isEmpty)
    }

    @Test func refusesNonHTTPURLs() throws {
        let client = try HTTPClient()
        let error = #expect(throws: HTTPError.self) {
            try client.perform(HTTPRequest(url: "file:///etc/passwd"))
        }
        #expect(error?.kind == .failed)
    }
}
