import CLinux
import CNMTestSupport
import Foundation
import Glibc
import Testing

/// The lab itself works: losses it is told to cause happen, the kernel recovers from them, and it leaves nothing.
@Suite(
    .serialized,
    .enabled(if: getuid() == 0, "needs root: creates network namespaces"),
    .enabled(if: NetworkLab.toolsAvailable, "needs ip, nft and sysctl (iproute2, nftables, procps)")
)
struct NetworkLabTests {
    @Test(arguments: [false, true])
    func randomDropsCostRetransmitsButEveryByteArrives(v6: Bool) throws {
        let lab = try NetworkLab()
        defer { try? lab.close() }
        try lab.dropRandomly(in: .b, oneIn: 20)
        let server = lab.address(of: .b, v6: v6)
        let (listener, port) = try withNetworkNamespace(lab.path(of: .b)) { try TestSocket.listener(on: server) }
        defer { close(listener) }
        let connecting = ContinuousClock.now
        let client = try withNetworkNamespace(lab.path(of: .a)) { try TestSocket.connect(to: server, port: port) }
        defer { close(client) }
        // The lab is ready when its init returns: no first SYN lost to neighbour discovery.
        #expect(ContinuousClock.now - connecting < .milliseconds(500))
        let accepted = try TestSocket.accept(listener)
        defer { close(accepted) }

        let start = ContinuousClock.now
        let received = try TestSocket.transfer(2_000_000, from: client, to: accepted, timeout: .seconds(20))
        let elapsed = ContinuousClock.now - start
        let retransmits = try kernelTotalRetransmits(fd: client)
        let dropped = try lab.droppedPackets(in: .b)
        print("NetworkLab v6=\(v6): 2000000 bytes in \(elapsed), \(dropped) dropped, \(retransmits) retransmitted")

        #expect(received == 2_000_000)
        #expect(dropped > 0)
        #expect(retransmits > 0)
        #expect(elapsed < .seconds(10))
    }

    @Test func droppedSYNsMakeAConnectTimeOut() throws {
        let lab = try NetworkLab()
        defer { try? lab.close() }
        try lab.setSysctl(in: .a, "net.ipv4.tcp_syn_retries", "1")
        #expect(try lab.sysctl(in: .a, "net.ipv4.tcp_syn_retries") == "1")
        let server = lab.address(of: .b, v6: false)
        let (listener, port) = try withNetworkNamespace(lab.path(of: .b)) { try TestSocket.listener(on: server) }
        defer { close(listener) }

        // Before the rule the same connect succeeds: what fails below is the dropped SYNs, nothing else.
        let reached = try withNetworkNamespace(lab.path(of: .a)) { try TestSocket.connect(to: server, port: port) }
        close(reached)
        close(try TestSocket.accept(listener))

        try lab.dropSYNs(in: .b, toPort: port)
        let start = ContinuousClock.now
        var failure: SystemCallError?
        do {
            let fd = try withNetworkNamespace(lab.path(of: .a)) {
                try TestSocket.connect(to: server, port: port, timeout: .seconds(10))
            }
            close(fd)
        } catch let error as SystemCallError {
            failure = error
        }
        let elapsed = ContinuousClock.now - start
        let dropped = try lab.droppedPackets(in: .b)
        print(
            "NetworkLab SYN drop: \(failure.map { "\($0)" } ?? "connected") after \(elapsed), \(dropped) SYNs dropped")

        #expect(failure?.errno == ETIMEDOUT)
        #expect(elapsed > .milliseconds(500))
        #expect(elapsed < .seconds(5))
        #expect(dropped >= 2)
        // The root namespace keeps its own setting.
        #expect(try NetworkLab.command("sysctl", ["-n", "net.ipv4.tcp_syn_retries"]) != "1\n")
    }

    @Test func closeDeletesBothNamespacesAndMayBeRepeated() throws {
        let lab = try NetworkLab()
        let paths = NetworkLab.Side.allCases.map { lab.path(of: $0) }
        #expect(paths.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(try NetworkLab.command("ip", ["netns", "list"]).contains(lab.name(of: .a)))

        try lab.close()
        #expect(!paths.contains { FileManager.default.fileExists(atPath: $0) })
        #expect(!(try NetworkLab.command("ip", ["netns", "list"]).contains(lab.id)))
        try lab.close()
    }

    @Test func releasingTheLabDeletesItsNamespaces() throws {
        var paths: [String] = []
        do {
            let lab = try NetworkLab()
            paths = NetworkLab.Side.allCases.map { lab.path(of: $0) }
        }
        #expect(!paths.isEmpty)
        #expect(!paths.contains { FileManager.default.fileExists(atPath: $0) })
    }

    @Test func theThreadComesBackToItsOwnNamespace() throws {
        let lab = try NetworkLab()
        defer { try? lab.close() }
        let home = try inode("/proc/thread-self/ns/net")
        let inside = try withNetworkNamespace(lab.path(of: .a)) { try inode("/proc/thread-self/ns/net") }
        #expect(inside == (try inode(lab.path(of: .a))))
        #expect(inside != home)
        #expect(try inode("/proc/thread-self/ns/net") == home)
    }

    @Test func aFailingCommandReportsItselfAndItsStandardError() throws {
        let missing = "cnmlab-missing-\(UInt32.random(in: 0...UInt32.max))"
        let failure = try #require(throws: TestFailure.self) {
            try NetworkLab.command("ip", ["netns", "del", missing])
        }
        #expect(failure.description.contains("ip netns del \(missing)"))
        #expect(failure.description.contains("No such file or directory"))

        let start = ContinuousClock.now
        let hung = try #require(throws: TestFailure.self) {
            try NetworkLab.command("sleep", ["30"], timeout: .milliseconds(200))
        }
        #expect(hung.description.contains("did not exit within"))
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test func tcpInfoMirrorPutsTotalRetransAtByte100() {
        #expect(MemoryLayout<cnm_linux_tcp_info>.offset(of: \.tcpi_total_retrans) == 100)
    }

    private func inode(_ path: String) throws -> UInt {
        var s = stat()
        guard stat(path, &s) == 0 else { throw TestFailure("stat \(path): errno \(errno)") }
        return UInt(s.st_ino)
    }
}
