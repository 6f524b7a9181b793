import CNMModel
import Glibc

/// Reads the memory limit of a process's cgroup.
public enum CgroupMemory {
    /// The smallest limit set on the process's memory cgroup or any cgroup above it (a parent's
    /// limit binds its children), from the files under `root`. Nil when none is set or none can be
    /// read. In a container with its own cgroup namespace, `/proc/self/cgroup` says `/` and the
    /// container's cgroup is the mount's root: that is where the walk ends in any case.
    public static func limit(
        procCgroup: String = "/proc/self/cgroup", root: String = "/sys/fs/cgroup"
    ) -> MemoryLimit? {
        guard let text = readSmallFile(procCgroup) else { return nil }
        let paths = MemoryLimit.cgroupPaths(procCgroup: text)
        var found: MemoryLimit?
        if let path = paths.memoryV1 {
            found = smallest(under: root + "/memory", path: path, file: "memory.limit_in_bytes")
        }
        if let path = paths.unified {
            found = MemoryLimit.smaller(found, smallest(under: root, path: path, file: "memory.max"))
        }
        return found
    }

    /// The smallest limit in `file` of `path` and each of its parents, below `mount`.
    static func smallest(under mount: String, path: String, file: String) -> MemoryLimit? {
        var found: MemoryLimit?
        var components = path.split(separator: "/").map(String.init)
        while true {
            let directory = ([mount] + components).joined(separator: "/")
            let location = directory + "/" + file
            if let text = readSmallFile(location), let bytes = MemoryLimit.parseCgroupLimit(text) {
                found = MemoryLimit.smaller(found, MemoryLimit(bytes: bytes, source: location))
            }
            guard !components.isEmpty else { return found }
            components.removeLast()
        }
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += buffer[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
