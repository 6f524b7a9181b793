import Foundation

/// A procfs look-alike in a temporary directory: pid dirs with fd links, comm, stat and cgroup files.
final class FakeProc {
    let root: String
    private let files = FileManager.default

    init() throws {
        root = NSTemporaryDirectory() + "cnm-fake-proc-" + UUID().uuidString
        try files.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    deinit {
        try? files.removeItem(atPath: root)
    }

    /// A process whose fds 3, 4, … are the given socket inodes.
    func addProcess(
        _ pid: Int32,
        comm: String,
        startTime: UInt64 = 1000,
        cgroup: String = "0::/init.scope\n",
        sockets: [UInt64] = []
    ) throws {
        try files.createDirectory(atPath: "\(root)/\(pid)/fd", withIntermediateDirectories: true)
        try write(pid, "comm", comm + "\n")
        try setStartTime(pid, startTime, comm: comm)
        try write(pid, "cgroup", cgroup)
        for inode in sockets { try addSocket(inode, to: pid) }
    }

    func addSocket(_ inode: UInt64, to pid: Int32) throws {
        try addLink(pid, "fd/\(nextFD(pid))", to: "socket:[\(inode)]")
    }

    func addLink(_ pid: Int32, _ relative: String, to target: String) throws {
        let path = "\(root)/\(pid)/\(relative)"
        try files.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        try files.createSymbolicLink(atPath: path, withDestinationPath: target)
    }

    /// `stat` as the kernel writes it; field 22 is the start time.
    func setStartTime(_ pid: Int32, _ startTime: UInt64, comm: String) throws {
        try write(
            pid, "stat",
            "\(pid) (\(comm)) S 1 \(pid) \(pid) 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 \(startTime) 1000 0\n")
    }

    func write(_ pid: Int32, _ relative: String, _ content: String) throws {
        let path = "\(root)/\(pid)/\(relative)"
        try files.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        try content.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// What a real procfs root holds besides pid dirs.
    func addNonProcessEntries() throws {
        try files.createSymbolicLink(atPath: "\(root)/self", withDestinationPath: "1")
        try files.createDirectory(atPath: "\(root)/net", withIntermediateDirectories: true)
        try "1 2 3\n".write(toFile: "\(root)/loadavg", atomically: false, encoding: .utf8)
    }

    func remove(_ pid: Int32, _ relative: String = "") throws {
        try files.removeItem(atPath: "\(root)/\(pid)/\(relative)")
    }

    private func nextFD(_ pid: Int32) -> Int {
        3 + ((try? files.contentsOfDirectory(atPath: "\(root)/\(pid)/fd").count) ?? 0)
    }
}
