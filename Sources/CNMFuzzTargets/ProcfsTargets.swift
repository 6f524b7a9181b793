import CNMECS
import CNMModel
import CNMProcfs

extension FuzzTargets {
    /// A `/proc/<pid>/cgroup` file, and the last path component of each of its lines as a cgroup name
    /// (what the eBPF programs report).
    ///
    /// Checks that an id found is in the text, is recognised again as a cgroup name, and is in the form
    /// the ECS task metadata gives ids, so the two sources agree on it.
    public static func cgroup(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        if let id = containerID(fromCgroup: text) {
            invariant(text.contains(id), "\(id) is not in the file")
            invariant(containerID(fromCgroupName: id) == id, "\(id) is not recognised as a cgroup name")
            invariant(normalizedECSContainerID(id) == id, "\(id) is not in a task metadata form")
        }
        for line in text.split(whereSeparator: \.isNewline).prefix(64) {
            let name = line.split(separator: "/").last.map(String.init) ?? ""
            guard let id = containerID(fromCgroupName: name) else { continue }
            invariant(containerID(fromCgroupName: id) == id, "\(id) from \(name) is not recognised again")
        }
    }

    /// A network namespace's `net/fib_trie` and `net/if_inet6`, the same text read as each.
    ///
    /// Checks that the addresses come out sorted and unique, and that `if_inet6` gives IPv6 only.
    public static func namespaceAddresses(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        let local = NamespaceAddresses.localIPv4Addresses(fibTrie: text)
        invariant(local.isStrictlyAscending, "fib_trie addresses not sorted or repeated")
        let global = NamespaceAddresses.globalIPv6Addresses(ifInet6: text)
        invariant(global.allSatisfy { $0.family == .v6 }, "an IPv4 address from if_inet6")
    }

    /// An fd or namespace link target (`socket:[N]`, `net:[N]`) and a `/proc/<pid>/stat` line, the same
    /// bytes read as each.
    ///
    /// Checks that an inode comes only from a target of the right kind.
    public static func procfsLinks(_ input: [UInt8]) {
        let copy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: input.count)
        defer { copy.deallocate() }
        _ = copy.initialize(from: input)
        let target = UnsafeBufferPointer(copy)
        if linkInode(target, kind: "socket") != nil {
            invariant(
                input.starts(with: Array("socket:[".utf8)) && input.last == UInt8(ascii: "]"), "not a socket link")
        }
        if linkInode(target, kind: "net") != nil {
            invariant(input.starts(with: Array("net:[".utf8)) && input.last == UInt8(ascii: "]"), "not a net link")
        }
        _ = startTime(fromStat: input)
    }
}
