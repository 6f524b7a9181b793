import CNMModel
import CNMNetlink
import CNMSystem
import CNMTestSupport
import Glibc
import Testing

/// A measurement, not a timed assertion: what one TCP dump of 10,000 established loopback sockets (5,000
/// connections) costs in wall time and CPU. Run it alone:
///
///     CNM_NETLINK_BENCH=1 swift test -c release --filter DumpCost
@Suite struct DumpCost {
    static let connections = 5_000
    static let dumps = 20

    @Test(
        .enabled(
            if: getenv("CNM_NETLINK_BENCH") != nil, "a measurement: set CNM_NETLINK_BENCH=1 to run it"))
    func tenThousandEstablishedSockets() throws {
        // Two descriptors per connection, plus the listener and the test runner's own.
        var limit = rlimit()
        try check("getrlimit", getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit))
        let needed = rlim_t(2 * Self.connections + 256)
        if limit.rlim_cur < needed {
            limit.rlim_cur = needed
            limit.rlim_max = max(limit.rlim_max, needed)
            try check("setrlimit(RLIMIT_NOFILE)", setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit))
        }

        let listener = try TestSocket.make(for: "127.0.0.1", SOCK_STREAM)
        try TestSocket.bind(listener, to: "127.0.0.1")
        try check("listen", listen(listener, 128))
        let port = try TestSocket.localPort(listener)
        var fds: [Int32] = [listener]
        defer { closeAll(fds) }
        for _ in 0..<Self.connections {
            let client = try TestSocket.make(for: "127.0.0.1", SOCK_STREAM)
            fds.append(client)
            try TestSocket.connect(client, to: "127.0.0.1", port: port)
            fds.append(try check("accept", accept(listener, nil, nil)))
        }

        let netns = try NetworkNamespace.currentInode()
        let socket = try SockDiagSocket()
        var count = try socket.dump(.tcp, .v4, netns: netns).filter { $0.state == .established }.count
        #expect(count >= 2 * Self.connections)

        var startUsage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &startUsage)
        let startCPU = threadCPUSeconds()
        let start = monotonicSeconds()
        for _ in 0..<Self.dumps {
            count = try socket.dump(.tcp, .v4, netns: netns).count
        }
        let wall = (monotonicSeconds() - start) / Double(Self.dumps)
        let cpu = (threadCPUSeconds() - startCPU) / Double(Self.dumps)
        var endUsage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &endUsage)
        let user = (seconds(endUsage.ru_utime) - seconds(startUsage.ru_utime)) / Double(Self.dumps)
        let system = (seconds(endUsage.ru_stime) - seconds(startUsage.ru_stime)) / Double(Self.dumps)
        print(
            """
            dump of \(count) TCP sockets, mean of \(Self.dumps): wall \(milliseconds(wall)) ms, \
            thread CPU \(milliseconds(cpu)) ms (process user \(milliseconds(user)) ms, \
            system \(milliseconds(system)) ms)
            """)
    }

    private func threadCPUSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    private func seconds(_ time: timeval) -> Double {
        Double(time.tv_sec) + Double(time.tv_usec) / 1e6
    }

    private func milliseconds(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10_000).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
