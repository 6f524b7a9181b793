import CNMModel
import Foundation
import Glibc
import Testing

@testable import CNMProcfs

@Suite struct CgroupMemoryTests {
    /// A directory tree laid out like `/sys/fs/cgroup`, and a `/proc/<pid>/cgroup` naming a cgroup in it.
    struct FakeTree {
        let root: URL

        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("cnm-cgroup-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        }

        func write(_ path: String, _ text: String) throws {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }

        func limit(procCgroup: String) throws -> MemoryLimit? {
            try write("proc-cgroup", procCgroup)
            return CgroupMemory.limit(procCgroup: root.appendingPathComponent("proc-cgroup").path, root: root.path)
        }

        func remove() { try? FileManager.default.removeItem(at: root) }
    }

    @Test func aParentsLimitBindsItsChildren() throws {
        let tree = try FakeTree()
        defer { tree.remove() }
        // v1: the task's cgroup sets none, its parent 512 MiB, the root none.
        try tree.write("memory/memory.limit_in_bytes", "9223372036854771712\n")
        try tree.write("memory/ecs/memory.limit_in_bytes", "\(512 << 20)\n")
        try tree.write("memory/ecs/task/memory.limit_in_bytes", "9223372036854771712\n")
        var found = try tree.limit(procCgroup: "9:memory:/ecs/task\n1:name=systemd:/ecs/task\n")
        #expect(found?.bytes == 512 << 20)
        #expect(found?.source == tree.root.path + "/memory/ecs/memory.limit_in_bytes")

        // A child's lower limit wins over its parent's.
        try tree.write("memory/ecs/task/memory.limit_in_bytes", "\(200 << 20)\n")
        found = try tree.limit(procCgroup: "9:memory:/ecs/task\n")
        #expect(found?.bytes == 200 << 20)

        // v2: memory.max, "max" where unset.
        try tree.write("memory.max", "max\n")  // the root has none in truth; a file saying so changes nothing
        try tree.write("system.slice/memory.max", "max\n")
        try tree.write("system.slice/agent.service/memory.max", "\(96 << 20)\n")
        found = try tree.limit(procCgroup: "0::/system.slice/agent.service\n")
        #expect(found?.bytes == 96 << 20 && found?.source.hasSuffix("/system.slice/agent.service/memory.max") == true)
    }

    /// A container without its own cgroup namespace sees the host's path in `/proc/self/cgroup` but
    /// only its own cgroup, at the mount's root: the walk up reaches it.
    @Test func aContainerFindsItsLimitAtTheMountRoot() throws {
        let tree = try FakeTree()
        defer { tree.remove() }
        try tree.write("memory/memory.limit_in_bytes", "\(128 << 20)\n")
        let found = try tree.limit(procCgroup: "4:memory:/docker/0123456789abcdef\n")
        #expect(found == MemoryLimit(bytes: 128 << 20, source: tree.root.path + "/memory/memory.limit_in_bytes"))
    }

    @Test func noLimitWhereNoneIsSetOrNothingCanBeRead() throws {
        let tree = try FakeTree()
        defer { tree.remove() }
        #expect(try tree.limit(procCgroup: "0::/\n") == nil, "no files")
        try tree.write("memory.max", "garbage")
        #expect(try tree.limit(procCgroup: "0::/\n") == nil, "an unreadable value")
        #expect(CgroupMemory.limit(procCgroup: tree.root.path + "/missing", root: tree.root.path) == nil)
    }

    /// The real kernel: a memory cgroup made for the test with a 200 MiB limit, and a process in it.
    @Test(.enabled(if: getuid() == 0, "needs root: makes a memory cgroup"))
    func aProcessInARealCgroupHasItsLimit() throws {
        let unified = FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")
        let name = "cnm-test-memory-\(getpid())"
        let directory = unified ? "/sys/fs/cgroup/\(name)" : "/sys/fs/cgroup/memory/\(name)"
        let file = unified ? "memory.max" : "memory.limit_in_bytes"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        // Runs after the process is gone; a cgroup is removed once its last task has left it.
        defer {
            let deadline = ContinuousClock.now + .seconds(5)
            while rmdir(directory) != 0 && errno == EBUSY && ContinuousClock.now < deadline { usleep(10_000) }
        }
        try "\(200 << 20)".write(toFile: directory + "/" + file, atomically: false, encoding: .utf8)

        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["60"]
        try sleeper.run()
        defer {
            kill(sleeper.processIdentifier, SIGKILL)
            sleeper.waitUntilExit()
        }
        try "\(sleeper.processIdentifier)".write(
            toFile: directory + "/cgroup.procs", atomically: false, encoding: .utf8)

        let found = CgroupMemory.limit(procCgroup: "/proc/\(sleeper.processIdentifier)/cgroup")
        #expect(found == MemoryLimit(bytes: 200 << 20, source: directory + "/" + file))
    }
}
