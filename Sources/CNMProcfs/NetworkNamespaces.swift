import Glibc

extension SocketOwnerScanner {
    /// Every network namespace some process is in: its inode → `<procRoot>/<pid>/ns/net`, a file to
    /// open for `setns`, from the lowest pid in it. That process may exit before the file is opened.
    /// Namespaces only a hidden process is in (EACCES without CAP_SYS_PTRACE) are missing, and counted.
    public mutating func networkNamespaces() -> [UInt64: String] {
        guard let pids = processIDs() else { return [:] }
        var namespaces: [UInt64: String] = [:]
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: linkBufferSize) { buffer in
            for pid in pids {
                let path = "\(procRoot)/\(pid)/ns/net"
                switch readLink(at: AT_FDCWD, path, into: buffer) {
                case .success(let target):
                    guard let inode = linkInode(target, kind: "net") else {
                        health.malformed += 1
                        continue
                    }
                    if namespaces[inode] == nil { namespaces[inode] = path }
                case .failure(let failure):
                    health.count(failure)
                }
            }
        }
        return namespaces
    }

    /// The agent's own network namespace. Always from `/proc/self`, even under `HOST_PROC`: the host's
    /// procfs shows the host's pids, among which the agent has another number.
    public static func ownNetworkNamespace() -> UInt64? {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: linkBufferSize) { buffer in
            guard case .success(let target) = readLink(at: AT_FDCWD, "/proc/self/ns/net", into: buffer) else {
                return nil
            }
            return linkInode(target, kind: "net")
        }
    }
}
