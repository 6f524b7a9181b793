internal import CLinux
import Glibc

/// Network namespaces as the model names them (by inode) and as sockets are created in them.
public enum NetworkNamespace {
    /// The inode of the namespace file at `path` (such as `/proc/<pid>/ns/net`): the namespace's id.
    public static func inode(atPath path: String) throws(SystemError) -> UInt64 {
        var status = stat()
        try retryingEINTR("stat \(path)") { stat(path, &status) }
        return UInt64(status.st_ino)
    }

    /// The inode of the calling process's network namespace (`/proc/self/ns/net`).
    public static func currentInode() throws(SystemError) -> UInt64 {
        try inode(atPath: "/proc/self/ns/net")
    }

    /// Runs `body` on the calling thread inside the network namespace at `path`, then moves the thread back to its
    /// own namespace, whether `body` threw or not. Sockets created in `body` stay in that namespace. `setns` moves
    /// only the calling thread, and `body` cannot suspend, so nothing else runs on this thread in the meantime.
    /// Entering needs CAP_SYS_ADMIN; a failure to enter is thrown as `entering` makes it into the body's error.
    public static func run<T, E: Error>(
        in path: String,
        entering: (SystemError) -> E,
        _ body: () throws(E) -> T
    ) throws(E) -> T {
        let original: Int32
        let target: Int32
        do {
            // The thread's own namespace, which may differ from the process's.
            original = try openNamespace("/proc/thread-self/ns/net")
        } catch {
            throw entering(error)
        }
        defer { close(original) }
        do {
            target = try openNamespace(path)
        } catch {
            throw entering(error)
        }
        defer { close(target) }
        do {
            try retryingEINTR("setns \(path)") { cnm_linux_setns_net(target) }
        } catch {
            throw entering(error)
        }
        defer {
            // Left in the other namespace, this thread would from now on create sockets there and report that
            // namespace's sockets as its own: stop rather than go on wrong.
            if cnm_linux_setns_net(original) != 0 {
                fatalError("cannot return to the original network namespace: \(String(cString: strerror(errno)))")
            }
        }
        return try body()
    }

    private static func openNamespace(_ path: String) throws(SystemError) -> Int32 {
        try retryingEINTR("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
    }
}
