/// The memory the agent may use: its cgroup's limit (`memory.max` on cgroup v2,
/// `memory.limit_in_bytes` on v1, the smallest of its cgroup and every cgroup above it) or
/// `DD_CNM_MEMORY_LIMIT`, whichever is smaller. The agent keeps its RSS under `budgetBytes`.
public struct MemoryLimit: Sendable, Equatable {
    public var bytes: UInt64
    /// Where the limit came from: the cgroup file read, or the variable.
    public var source: String

    /// The share of the limit the agent promises to stay under: the rest is headroom for what it
    /// cannot bound exactly (allocator slack, a request being served, the kernel's own accounting).
    public static let budgetPercent: UInt64 = 80

    public var budgetBytes: UInt64 { bytes / 100 * Self.budgetPercent }

    public init(bytes: UInt64, source: String) {
        self.bytes = bytes
        self.source = source
    }

    /// The smaller of two limits; either may be absent.
    public static func smaller(_ a: MemoryLimit?, _ b: MemoryLimit?) -> MemoryLimit? {
        guard let a else { return b }
        guard let b else { return a }
        return b.bytes < a.bytes ? b : a
    }

    /// Where a process's memory cgroup is, from its `/proc/<pid>/cgroup`.
    public struct CgroupPaths: Sendable, Equatable {
        /// The unified hierarchy's path (the `0::` line).
        public var unified: String?
        /// The v1 memory controller's path.
        public var memoryV1: String?

        public init(unified: String? = nil, memoryV1: String? = nil) {
            self.unified = unified
            self.memoryV1 = memoryV1
        }
    }

    public static func cgroupPaths(procCgroup text: String) -> CgroupPaths {
        var paths = CgroupPaths()
        for line in text.split(whereSeparator: \.isNewline) {
            // hierarchy-id:controllers:path; the path itself may hold colons.
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[2].hasPrefix("/") else { continue }
            if fields[0] == "0" && fields[1].isEmpty {
                paths.unified = String(fields[2])
            } else if fields[1].split(separator: ",").contains("memory") {
                paths.memoryV1 = String(fields[2])
            }
        }
        return paths
    }

    /// A cgroup limit file's value; nil when it sets no limit (`max`, or v1's "unlimited", which is
    /// the largest page-aligned signed 64-bit number) or cannot be read as one.
    public static func parseCgroupLimit(_ text: String) -> UInt64? {
        let value = text.trimmingWhitespace()
        if value == "max" { return nil }
        guard let bytes = UInt64(value), bytes > 0, bytes < 1 << 62 else { return nil }
        return bytes
    }

    /// `DD_CNM_MEMORY_LIMIT`: whole bytes, or a number with a binary (`Ki`, `Mi`, `Gi`) or decimal
    /// (`k`, `M`, `G`) suffix, optionally ending in `B`: `268435456`, `256Mi`, `256MiB`, `1G`.
    public static func parseSize(_ text: String) -> UInt64? {
        var digits = Substring(text.trimmingWhitespace())
        guard !digits.contains(" ") else { return nil }
        if digits.hasSuffix("B") || digits.hasSuffix("b") { digits = digits.dropLast() }
        let units: [(String, UInt64)] = [
            ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40),
            ("K", 1000), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
        ]
        var multiplier: UInt64 = 1
        for (suffix, value) in units where digits.hasSuffix(suffix) {
            multiplier = value
            digits = digits.dropLast(suffix.count)
            break
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit), let number = UInt64(digits) else { return nil }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
