import CNMModel
import Glibc

/// What went wrong while reading procfs, counted since the scanner was made. Nothing here is fatal:
/// the entry is skipped and the scan goes on, and the caller decides what is worth a log line.
public struct ScanHealth: Sendable, Equatable {
    /// Processes or fds that went away between being listed and being read: ordinary churn.
    public var vanished: UInt64 = 0
    /// Reads refused, once per process for its fds: without ptrace access (CAP_SYS_PTRACE, and every
    /// capability the process holds), its fds and namespace are hidden even from root.
    public var permissionDenied: UInt64 = 0
    /// Entries of an unexpected type or content: a garbled stat or cgroup file, a file where a
    /// directory belongs, a link that is not `kind:[N]`.
    public var malformed: UInt64 = 0
    /// Walks over the processes' fds.
    public var scans: UInt64 = 0
    /// Fd links read during those walks.
    public var fdsRead: UInt64 = 0

    public init() {}
}

/// Finds which process holds a socket, by its inode, from `<procRoot>/<pid>/fd/*` links.
///
/// Walking every process's fds costs a readlink per fd on the host, so it is done only when asked for
/// an inode not seen before, and stops as soon as every such inode is found. Owners found are kept for
/// as long as their inode is asked for; inodes a complete walk did not find (no process holds them, or
/// the process is hidden) do not start a walk again, but are looked for whenever one runs.
///
/// When several processes share a socket (after fork), the lowest pid wins: usually the parent that
/// made it, and the same answer whatever the order processes are read in.
///
/// A value type used from one collector thread; each call mutates its caches.
public struct SocketOwnerScanner: Sendable {
    /// `HOST_PROC` when set (e.g. `/host/proc` when the agent runs in a container), else `/proc`.
    public static var configuredProcRoot: String {
        guard let value = getenv("HOST_PROC"), value.pointee != 0 else { return "/proc" }
        return String(cString: value)
    }

    public let procRoot: String
    public internal(set) var health = ScanHealth()

    private var known: [UInt64: SocketOwner] = [:]
    private var unfindable: Set<UInt64> = []
    /// Container ids by pid, with the start time that tells the process from a later one reusing its pid.
    private var processes: [Int32: (startTime: UInt64, containerID: String?)] = [:]

    public init(procRoot: String = SocketOwnerScanner.configuredProcRoot) {
        self.procRoot = procRoot
    }

    /// The owners of those of `inodes` that some process holds. Caches are trimmed to `inodes`, so pass
    /// every inode still of interest, not only new ones.
    public mutating func owners(for inodes: Set<UInt64>) -> [UInt64: SocketOwner] {
        // Trimmed in place: in steady state little changes, and rebuilding 10k entries per call shows.
        for inode in known.keys.filter({ !inodes.contains($0) }) { known[inode] = nil }
        unfindable.formIntersection(inodes)
        if inodes.contains(where: { known[$0] == nil && !unfindable.contains($0) }) {
            let wanted = inodes.filter { known[$0] == nil }
            walk(lookingFor: wanted, stoppingOnceFound: wanted.subtracting(unfindable))
        }
        return known
    }

    private mutating func walk(lookingFor wanted: Set<UInt64>, stoppingOnceFound unseen: Set<UInt64>) {
        health.scans += 1
        guard let pids = processIDs() else { return }
        let alive = Set(pids)
        processes = processes.filter { alive.contains($0.key) }

        var remaining = unseen
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: linkBufferSize) { buffer in
            for pid in pids {
                let held = socketInodes(of: pid, among: wanted, buffer: buffer)
                guard !held.isEmpty, let owner = owner(pid) else { continue }
                for inode in held where known[inode] == nil {
                    known[inode] = owner
                    remaining.remove(inode)
                }
                if remaining.isEmpty { return }
            }
        }
        // Only a walk that went through every process may call an inode unfindable.
        if !remaining.isEmpty { unfindable.formUnion(wanted) }
        unfindable.subtract(known.keys)
    }

    /// The processes under `procRoot`, lowest pid first. A root that cannot be listed is misconfigured,
    /// so a missing one counts as malformed rather than vanished.
    mutating func processIDs() -> [Int32]? {
        switch listPIDs(in: procRoot) {
        case .success(let pids): return pids
        case .failure(let failure):
            health.count(failure == .vanished ? .malformed : failure)
            return nil
        }
    }

    /// The inodes among `wanted` that `pid` holds an fd to. Reading fd links needs ptrace access to the
    /// process (a root agent lacking a capability the process has is refused too): the first refusal
    /// ends the process's walk and counts once, as every other link would be refused alike.
    private mutating func socketInodes(
        of pid: Int32,
        among wanted: Set<UInt64>,
        buffer: UnsafeMutableBufferPointer<UInt8>
    ) -> [UInt64] {
        var held: [UInt64] = []
        let failure = forEachEntry(in: "\(procRoot)/\(pid)/fd") { directory, name in
            health.fdsRead += 1
            switch readLink(at: directory, name, into: buffer) {
            case .success(let target):
                if let inode = linkInode(target, kind: "socket"), wanted.contains(inode) { held.append(inode) }
            case .failure(let failure):
                health.count(failure)
                return failure != .denied
            }
            return true
        }
        // What was read before a listing failed is still true.
        if let failure { health.count(failure) }
        return held
    }

    /// Who `pid` is, or nil when it went away meanwhile.
    private mutating func owner(_ pid: Int32) -> SocketOwner? {
        let base = "\(procRoot)/\(pid)"
        let name: ProcessName
        switch readSmallFile(base + "/comm") {
        case .success(let comm):
            let text = comm.last == UInt8(ascii: "\n") ? comm.dropLast() : comm[...]
            name = text.withUnsafeBytes { ProcessName(bytes: $0) }
        case .failure(let failure):
            health.count(failure)
            return nil
        }

        var start: UInt64?
        switch readSmallFile(base + "/stat") {
        case .success(let stat):
            start = startTime(fromStat: stat)
            if start == nil { health.malformed += 1 }
        case .failure(let failure):
            health.count(failure)
            if failure == .vanished { return nil }
        }
        if let start, let cached = processes[pid], cached.startTime == start {
            return SocketOwner(pid: pid, processName: name, containerID: cached.containerID)
        }

        switch readSmallFile(base + "/cgroup") {
        case .success(let cgroup):
            let membership = CgroupMembership(parsing: String(decoding: cgroup, as: UTF8.self))
            if !membership.isWellFormed { health.malformed += 1 }
            if let start { processes[pid] = (start, membership.containerID) }
            return SocketOwner(pid: pid, processName: name, containerID: membership.containerID)
        case .failure(let failure):
            health.count(failure)
            return failure == .vanished ? nil : SocketOwner(pid: pid, processName: name, containerID: nil)
        }
    }
}
