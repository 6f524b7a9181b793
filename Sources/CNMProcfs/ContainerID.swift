/// The container a process runs in, from the text of its `/proc/<pid>/cgroup`; nil for a host process
/// or when no line names a container.
///
/// Recognised in any path segment, cgroup v1 or v2, absolute or relative to the reader's cgroup namespace:
/// a 64-hex id alone (`/docker/<id>`, `/kubepods/<qos>/pod<uid>/<id>`, `/ecs/<task>/<id>`, old `/<id>`),
/// behind a runtime prefix and before a suffix (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`), after colons (`…slice:cri-containerd:<id>`), and under `/ecs/`
/// the Fargate form `<32hex>-<digits>`, kept whole because it is the task metadata's `DockerId`.
/// Conmon scopes (`libpod-conmon-<id>`, `crio-conmon-<id>`) are the runtime's monitor on the host, not
/// the container. The innermost id of a path wins (docker-in-docker, kube-proxy's sub-cgroup), and a v1
/// hierarchy's id wins over the unified `0::` line, which in hybrid mode may still name an outer
/// container (a kind node) while the runtime placed the process in v1 controllers.
///
/// Deliberately not recognised: short or UUID-shaped names (`/docker/abc123`, Cloud Foundry
/// `/garden/<guid>`), which no Docker or ECS API would know.
public func containerID(fromCgroup text: String) -> String? {
    CgroupMembership(parsing: text).containerID
}

/// What a cgroup file says, and whether it had any `hierarchy:controllers:path` line at all.
struct CgroupMembership {
    var containerID: String?
    var isWellFormed: Bool

    init(parsing text: String) {
        var unified: Substring?
        var sawLine = false
        for rawLine in text.split(whereSeparator: \.isNewline) {
            guard let line = CgroupLine(rawLine) else { continue }
            sawLine = true
            guard let id = innermostContainerID(inPath: line.path) else { continue }
            if line.isUnified {
                unified = unified ?? id
            } else {
                containerID = String(id)
                isWellFormed = true
                return
            }
        }
        containerID = unified.map(String.init)
        isWellFormed = sawLine
    }
}

/// One `hierarchy-ID:controller-list:cgroup-path` line (see cgroups(7)); the path may hold colons.
private struct CgroupLine {
    var isUnified: Bool
    var path: Substring

    init?(_ raw: Substring) {
        let line = raw.trimmingBlanks()
        guard let first = line.firstIndex(of: ":") else { return nil }
        let hierarchy = line[..<first]
        guard !hierarchy.isEmpty, hierarchy.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        let rest = line[line.index(after: first)...]
        guard let second = rest.firstIndex(of: ":") else { return nil }
        isUnified = hierarchy == "0" && rest[..<second].isEmpty
        path = rest[rest.index(after: second)...]
    }
}

private func innermostContainerID(inPath path: Substring) -> Substring? {
    var found: Substring?
    var underECS = false
    for segment in path.split(separator: "/") {
        if segment == "ecs" {
            underECS = true
        } else if let id = containerID(inSegment: segment, underECS: underECS) {
            found = id
        }
    }
    return found
}

private func containerID(inSegment segment: Substring, underECS: Bool) -> Substring? {
    var name = segment
    if let colon = name.lastIndex(of: ":") { name = name[name.index(after: colon)...] }
    if underECS && isFargateID(name) { return name }
    if let dot = name.firstIndex(of: ".") { name = name[..<dot] }
    if let dash = name.lastIndex(of: "-") {
        guard !name[..<dash].hasSuffix("conmon") else { return nil }
        name = name[name.index(after: dash)...]
    }
    return isHex(name, count: 64) ? name : nil
}

/// `<32 hex task id>-<up to 10 digits>`, the id ECS on Fargate (platform 1.4+) gives a container.
private func isFargateID(_ name: Substring) -> Bool {
    guard let dash = name.firstIndex(of: "-"), isHex(name[..<dash], count: 32) else { return false }
    let digits = name.utf8[name.utf8.index(after: dash)...]
    return (1...10).contains(digits.count) && parseDecimal(digits) != nil
}

private func isHex(_ text: Substring, count: Int) -> Bool {
    text.utf8.count == count
        && text.utf8.allSatisfy {
            ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f"))
        }
}

extension Substring {
    fileprivate func trimmingBlanks() -> Substring {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let start = firstIndex(where: { !blank($0) }), let end = lastIndex(where: { !blank($0) }) else {
            return self[endIndex...]
        }
        return self[start...end]
    }
}

/// The container a cgroup belongs to, from the cgroup's own name (the last path component, all the
/// eBPF programs keep): the same forms as in a path, including Fargate's `<32hex>-<digits>`.
public func containerID(fromCgroupName name: String) -> String? {
    guard !name.contains("/") else { return nil }
    // The name alone cannot show whether it sits under /ecs/: Fargate's form is accepted as it is.
    return containerID(inSegment: Substring(name), underECS: true).map(String.init)
}

/// The container the process `pid` (`self` for this one) runs in, from its cgroup file under
/// `procRoot`; nil outside a container or when the file cannot be read.
public func containerID(ofProcess pid: String = "self", procRoot: String = "/proc") -> String? {
    guard case .success(let bytes) = readSmallFile("\(procRoot)/\(pid)/cgroup") else { return nil }
    return containerID(fromCgroup: String(decoding: bytes, as: UTF8.self))
}
