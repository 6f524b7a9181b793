import CNMTestSupport
import Foundation
import Glibc
import Testing

/// Start-up as a user meets it: bad variables stop the agent with exit 78 and one clear line.
@Suite(.enabled(if: Environment.hasAgentBinary, "build the agent first (swift build): .build/debug/cnm-agent"))
struct StartupTests {
    func runAgent(_ env: [String: String]) throws -> (status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Environment.agentBinary)
        p.environment = ["PATH": "/usr/bin:/bin", "DD_CNM_TERMINAL": "never"].merging(env) { $1 }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test(arguments: [
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "abc"),
        ("DD_LOG_LEVEL", "loud"),
        ("DD_CNM_HTTP_ADDR", "nonsense"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS", "0"),
        // Each of these once started the agent: the first killed it with an overflow trap (SIGILL),
        // the second made the scheduler spin, the last two trapped at the first intake retry.
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "99999999999999"),
        ("DD_CNM_SAMPLE_INTERVAL", "0.0000001"),
        ("DD_FORWARDER_BACKOFF_MAX", "1e300"),
        ("DD_FORWARDER_TIMEOUT", "1e300"),
    ])
    func badValueExits78WithOneLine(variable: String, value: String) throws {
        // The intake's variables are read only when there is a key to ship with.
        let key = variable.hasPrefix("DD_FORWARDER_") ? ["DD_API_KEY": "0123456789abcdef0123456789abcdef"] : [:]
        let r = try runAgent([variable: value].merging(key) { $1 })
        #expect(r.status == 78)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "one line on stderr, got: \(r.stderr)")
        #expect(r.stderr.contains(variable) && r.stderr.contains(value) && r.stderr.contains("expected"))
    }

    @Test func portInUseExits78() throws {
        let (holder, port) = try TestSocket.listener()
        defer { close(holder) }
        let r = try runAgent(["DD_CNM_HTTP_ADDR": "127.0.0.1:\(port)", "DD_LOG_LEVEL": "off"])
        #expect(r.status == 78)
        let last = r.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.contains("DD_CNM_HTTP_ADDR") && last.contains("127.0.0.1:\(port)") && last.contains("in use"))
    }

    @Test func disabledSaysSoAndExits0() throws {
        let r = try runAgent(["DD_SYSTEM_PROBE_NETWORK_ENABLED": "false"])
        #expect(r.status == 0)
        #expect(r.stderr.contains("disabled"))
    }
}
