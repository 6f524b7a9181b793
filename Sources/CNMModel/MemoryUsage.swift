/// What the agent's own process holds: its resident set, and how much of its heap is in use. A
/// steady heap in use with a moving RSS is freed memory not yet returned; a growing heap in use is a
/// leak or a table growing.
public struct MemoryUsage: Sendable, Equatable {
    public var residentBytes: UInt64
    public var heapInUseBytes: UInt64
    public var heapFreeBytes: UInt64

    public init(residentBytes: UInt64, heapInUseBytes: UInt64, heapFreeBytes: UInt64) {
        self.residentBytes = residentBytes
        self.heapInUseBytes = heapInUseBytes
        self.heapFreeBytes = heapFreeBytes
    }
}
