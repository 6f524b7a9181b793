/// One entry point per parser of data from outside the agent (packets, the kernel's netlink replies,
/// Docker, ECS, procfs, the environment, the intake's framing), each taking arbitrary bytes and driving
/// the parser the agent uses on them. A target traps when the parser does, or when one of the
/// invariants it checks fails; otherwise it returns. `cnm-fuzz` runs them under libFuzzer, and the
/// tests run them over the committed seeds and reproducers in `Fuzz/`.
public enum FuzzTargets {
    public typealias Target = (name: String, run: @Sendable ([UInt8]) -> Void)

    /// Every target, by the name `CNM_FUZZ_TARGET` and the `Fuzz/` directories use.
    public static let all: [Target] = [
        ("packet-flows", packetFlows),
        ("sock-diag", sockDiagReply),
        ("tcp-info", tcpInfo),
        ("docker-events", dockerEvents),
        ("docker-container", dockerContainer),
        ("ecs-metadata", ecsMetadata),
        ("cgroup", cgroup),
        ("namespace-addresses", namespaceAddresses),
        ("procfs-links", procfsLinks),
        ("image-reference", imageReference),
        ("ip-address", ipAddress),
        ("configuration", configuration),
        ("intake-message", intakeMessage),
        ("intake-tags", intakeTags),
    ]

    public static func named(_ name: String) -> Target? {
        all.first { $0.name == name }
    }
}

/// Traps, in every build configuration, when an invariant a target checks does not hold: libFuzzer
/// then saves the input as a reproducer.
func invariant(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition { fatalError("invariant failed: \(message())", line: line) }
}

/// Calls `body` with a copy of `bytes` in an allocation of exactly their size, so that the address
/// sanitizer catches a read one byte past the end (an array's spare capacity would hide it).
func withExactBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) -> R) -> R {
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
    defer { copy.deallocate() }
    bytes.withUnsafeBytes { source in
        if !source.isEmpty { copy.copyMemory(from: source) }
    }
    return body(UnsafeRawBufferPointer(copy))
}

/// Reads a fuzz input front to back, for targets whose input is a sequence of records.
struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset >= bytes.count }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// Up to `count` bytes: fewer when the input ends first.
    mutating func bytes(_ count: Int) -> [UInt8] {
        let end = min(bytes.count, offset + count)
        defer { offset = end }
        return Array(bytes[offset..<end])
    }
}

extension Array where Element: Comparable {
    /// Sorted ascending with no element twice.
    var isStrictlyAscending: Bool {
        zip(self, dropFirst()).allSatisfy { $0 < $1 }
    }
}
