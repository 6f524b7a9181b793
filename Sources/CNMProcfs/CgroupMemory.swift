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
        guard case .success(let bytes) = readSmallFile(procCgroup) else { return nil }
        let paths = MemoryLimit.cgroupPaths(procCgroup: String(decoding: bytes, as: UTF8.self))
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
            if case .success(let text) = readSmallFile(location),
                let bytes = MemoryLimit.parseCgroupLimit(String(decoding: text, as: UTF8.self))
            {
                found = MemoryLimit.smaller(found, MemoryLimit(bytes: bytes, source: location))
            }
            guard !components.isEmpty else { return found }
            components.removeLast()
        }
    }
}
