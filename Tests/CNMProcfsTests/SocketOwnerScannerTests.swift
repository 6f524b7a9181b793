import CNMModel
import CNMProcfs
import Foundation
import Testing

private let containerA = String(repeating: "a", count: 64)
private let containerB = String(repeating: "b", count: 64)

private func dockerCgroup(_ id: String) -> String {
    "12:pids:/docker/\(id)\n1:name=systemd:/docker/\(id)\n0::/\n"
}

@Suite struct FakeProcfsScans {
    @Test func findsOwnersWithNameAndContainer() throws {
        let proc = try FakeProc()
        try proc.addProcess(1, comm: "init", sockets: [100])
        // A name that fools a parser splitting stat at the first ')'.
        try proc.addProcess(42, comm: "a) S 9 (b", cgroup: dockerCgroup(containerA), sockets: [200, 100])
        var scanner = SocketOwnerScanner(procRoot: proc.root)

        let owners = scanner.owners(for: [100, 200, 999])

        #expect(owners[100] == SocketOwner(pid: 1, processName: "init", containerID: nil))  // lowest pid
        #expect(owners[200] == SocketOwner(pid: 42, processName: "a) S 9 (b", containerID: containerA))
        #expect(owners[999] == nil)
        #expect(scanner.health.scans == 1)
        #expect(scanner.health.fdsRead == 3)
        #expect(scanner.health.vanished + scanner.health.permissionDenied + scanner.health.malformed == 0)
    }

    @Test func walksOnlyForInodesNotSeenBefore() throws {
        let proc = try FakeProc()
        try proc.addProcess(42, comm: "app", sockets: [200])
        var scanner = SocketOwnerScanner(procRoot: proc.root)
        _ = scanner.owners(for: [200, 999])

        // 200 is cached and 999 was not found by a complete walk: neither walks again.
        #expect(scanner.owners(for: [200, 999]).keys.sorted() == [200])
        #expect(scanner.health.scans == 1)

        try proc.addSocket(300, to: 42)
        #expect(scanner.owners(for: [200, 300, 999]).keys.sorted() == [200, 300])
        #expect(scanner.health.scans == 2)

        // Inodes no longer asked for are forgotten: asking again walks again.
        _ = scanner.owners(for: [300])
        _ = scanner.owners(for: [200, 300])
        #expect(scanner.health.scans == 3)
    }

    @Test func stopsOnceEveryNewInodeIsFound() throws {
        let proc = try FakeProc()
        try proc.addProcess(1, comm: "first", sockets: [100, 101])
        try proc.addProcess(2, comm: "second", sockets: [200, 201, 202])
        var scanner = SocketOwnerScanner(procRoot: proc.root)

        #expect(scanner.owners(for: [100]).keys.sorted() == [100])
        #expect(scanner.health.fdsRead == 2)
    }

    @Test func badEntriesAreCountedAndSkipped() throws {
        let proc = try FakeProc()
        try proc.write(10, "comm", "gone\n")  // listed, but its fd dir is already gone
        try proc.write(11, "fd", "a file where a directory belongs")
        try proc.addLink(12, "fd", to: "fd")  // a symlink loop
        try proc.addLink(13, "fd/3", to: "socket:[130]")  // exited before its comm was read
        try proc.addProcess(14, comm: "badstat", cgroup: dockerCgroup(containerA), sockets: [140])
        try proc.write(14, "stat", "14 (badstat\n")
        try proc.addProcess(15, comm: "badcgroup", cgroup: "nonsense\n", sockets: [150])
        try proc.addProcess(16, comm: "oddfd")
        try proc.write(16, "fd/3", "not a link")
        try proc.addProcess(20, comm: "fine", sockets: [200])
        try proc.addNonProcessEntries()
        var scanner = SocketOwnerScanner(procRoot: proc.root)

        let owners = scanner.owners(for: [130, 140, 150, 200])

        #expect(owners[130] == nil)
        #expect(owners[140] == SocketOwner(pid: 14, processName: "badstat", containerID: containerA))
        #expect(owners[150] == SocketOwner(pid: 15, processName: "badcgroup", containerID: nil))
        #expect(owners[200] == SocketOwner(pid: 20, processName: "fine", containerID: nil))
        #expect(scanner.health.vanished == 2)  // 10's fd dir, 13's comm
        #expect(scanner.health.malformed == 5)  // 11's and 12's fd, 14's stat, 15's cgroup, 16's fd 3
        #expect(scanner.health.permissionDenied == 0)
    }

    @Test func processVanishingBetweenCalls() throws {
        let proc = try FakeProc()
        try proc.addProcess(42, comm: "app", cgroup: dockerCgroup(containerA), sockets: [200, 201])
        try proc.addProcess(50, comm: "other", sockets: [500])
        var scanner = SocketOwnerScanner(procRoot: proc.root)
        #expect(scanner.owners(for: [200])[200]?.pid == 42)

        try proc.remove(42)
        let owners = scanner.owners(for: [200, 201, 500])

        #expect(owners[200]?.pid == 42)  // found before, kept while asked for
        #expect(owners[201] == nil)
        #expect(owners[500]?.pid == 50)
        #expect(scanner.health.scans == 2)
    }

    @Test func reusedPidIsResolvedAgain() throws {
        let proc = try FakeProc()
        try proc.addProcess(42, comm: "app", startTime: 1000, cgroup: dockerCgroup(containerA), sockets: [200])
        var scanner = SocketOwnerScanner(procRoot: proc.root)
        #expect(scanner.owners(for: [200])[200]?.containerID == containerA)

        // Same process (same start time): the cached container id stands.
        try proc.write(42, "cgroup", dockerCgroup(containerB))
        try proc.addSocket(201, to: 42)
        #expect(scanner.owners(for: [201])[201]?.containerID == containerA)

        // A new process under the same pid.
        try proc.setStartTime(42, 2000, comm: "app")
        try proc.addSocket(202, to: 42)
        #expect(scanner.owners(for: [202])[202]?.containerID == containerB)
    }

    @Test(.enabled(if: geteuid() != 0, "file modes do not stop root, so a fake tree cannot refuse it"))
    func unreadableFdsAreCountedOncePerProcess() throws {
        let proc = try FakeProc()
        try proc.addProcess(42, comm: "unlistable", sockets: [420])
        try proc.addProcess(43, comm: "unreadable", sockets: [430, 431, 432])
        chmod("\(proc.root)/42/fd", 0)  // opendir refused
        chmod("\(proc.root)/43/fd", 0o444)  // listed, but no link may be read
        defer {
            chmod("\(proc.root)/42/fd", 0o755)
            chmod("\(proc.root)/43/fd", 0o755)
        }
        var scanner = SocketOwnerScanner(procRoot: proc.root)

        #expect(scanner.owners(for: [420, 430]).isEmpty)
        #expect(scanner.health.permissionDenied == 2)
        #expect(scanner.health.fdsRead == 1)
    }

    @Test func missingRootIsMalformedNotVanished() {
        var scanner = SocketOwnerScanner(procRoot: "/nonexistent/proc")
        #expect(scanner.owners(for: [1]).isEmpty)
        #expect(scanner.networkNamespaces().isEmpty)
        #expect(scanner.health.malformed == 2)
        #expect(scanner.health.vanished == 0)
    }

    @Test func networkNamespacesOnePidEach() throws {
        let proc = try FakeProc()
        try proc.addLink(1, "ns/net", to: "net:[4026531840]")
        try proc.addLink(7, "ns/net", to: "net:[4026531840]")
        try proc.addLink(9, "ns/net", to: "net:[4026532281]")
        try proc.addLink(11, "ns/net", to: "mnt:[4026531841]")
        try proc.addProcess(12, comm: "no-ns-dir")
        var scanner = SocketOwnerScanner(procRoot: proc.root)

        #expect(
            scanner.networkNamespaces() == [
                4_026_531_840: "\(proc.root)/1/ns/net",
                4_026_532_281: "\(proc.root)/9/ns/net",
            ])
        #expect(scanner.health.malformed == 1)
        #expect(scanner.health.vanished == 1)
    }
}

@Suite struct RealKernel {
    @Test func findsThisProcessAsOwnerOfItsSocket() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var info = stat()
        try #require(fstat(fd, &info) == 0)
        var scanner = SocketOwnerScanner(procRoot: "/proc")

        let owner = try #require(scanner.owners(for: [UInt64(info.st_ino)])[UInt64(info.st_ino)])

        #expect(owner.pid == getpid())
        #expect(scanner.health.malformed == 0)  // this process's stat and cgroup parsed
        let comm = try String(contentsOfFile: "/proc/self/comm", encoding: .utf8)
        #expect(owner.processName.description + "\n" == comm)
        #expect(
            owner.containerID
                == containerID(fromCgroup: try String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)))
    }

    @Test func ownNamespaceIsAmongTheListed() throws {
        var scanner = SocketOwnerScanner(procRoot: "/proc")
        let own = try #require(SocketOwnerScanner.ownNetworkNamespace())
        let path = try #require(scanner.networkNamespaces()[own])
        #expect(path.hasPrefix("/proc/") && path.hasSuffix("/ns/net"))
    }
}
