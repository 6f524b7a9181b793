import CNMModel
import Glibc

/// The addresses of a process's network namespace, read from procfs without entering it. This is how
/// addresses Docker does not know of are found: an awsvpc task's ENI, moved by a CNI plugin into the
/// namespace of the task's pause container.
public struct NamespaceAddresses: Sendable, Equatable {
    /// The namespace's inode, the same for every process in it.
    public var namespace: UInt64
    /// Its own non-loopback addresses (IPv4 local routes and IPv6 global addresses), sorted.
    public var addresses: [IPAddress]

    /// The network namespace `<procRoot>/<pid>/ns/net` names; nil when the process is gone or hidden.
    public static func namespace(ofProcess pid: Int32, procRoot: String) -> UInt64? {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: linkBufferSize) { buffer -> UInt64? in
            guard case .success(let target) = readLink(at: AT_FDCWD, "\(procRoot)/\(pid)/ns/net", into: buffer)
            else { return nil }
            return linkInode(target, kind: "net")
        }
    }

    /// Reads the process's namespace and its `net/fib_trie` and `net/if_inet6`; nil when the process
    /// is gone or hidden, or its routes do not fit a container's (a host's full table is not wanted).
    public static func of(process pid: Int32, procRoot: String) -> NamespaceAddresses? {
        let base = "\(procRoot)/\(pid)"
        guard let inode = namespace(ofProcess: pid, procRoot: procRoot),
            case .success(let trie) = readSmallFile("\(base)/net/fib_trie")
        else { return nil }
        var addresses = Set(localIPv4Addresses(fibTrie: String(decoding: trie, as: UTF8.self)))
        // A namespace without IPv6 has no if_inet6 at all.
        if case .success(let inet6) = readSmallFile("\(base)/net/if_inet6") {
            addresses.formUnion(globalIPv6Addresses(ifInet6: String(decoding: inet6, as: UTF8.self)))
        }
        return NamespaceAddresses(namespace: inode, addresses: addresses.filter { !$0.isLoopback }.sorted())
    }

    /// The addresses with a `/32 host LOCAL` route in `/proc/net/fib_trie`: those the namespace owns.
    /// Each leaf line (`|-- 10.0.0.5`) is followed by its routes (`/32 host LOCAL`).
    public static func localIPv4Addresses(fibTrie text: String) -> [IPAddress] {
        var found = Set<IPAddress>()
        var leaf: IPAddress?
        for line in text.split(separator: "\n") {
            let trimmed = line.drop { $0 == " " }
            if trimmed.hasPrefix("|-- ") {
                leaf = IPAddress(parsing: trimmed.dropFirst(4))
            } else if trimmed.hasPrefix("/") {
                if let leaf, trimmed.hasPrefix("/32 host LOCAL") { found.insert(leaf) }
            } else {
                leaf = nil
            }
        }
        return found.sorted()
    }

    /// The global-scope addresses of `/proc/net/if_inet6` (32 hex digits, index, prefix, scope,
    /// flags, name); link-local and host-scope ones name no peer another namespace could reach.
    public static func globalIPv6Addresses(ifInet6 text: String) -> [IPAddress] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 4, fields[0].count == 32, fields[3] == "00" else { return nil }
            var bytes: [UInt8] = []
            var index = fields[0].startIndex
            while index < fields[0].endIndex {
                let next = fields[0].index(index, offsetBy: 2)
                guard let byte = UInt8(fields[0][index..<next], radix: 16) else { return nil }
                bytes.append(byte)
                index = next
            }
            return IPAddress(networkBytes: bytes)
        }
    }
}
