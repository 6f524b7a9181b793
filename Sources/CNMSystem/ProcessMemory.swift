internal import CLinux
import CNMModel
import Glibc

/// The agent's own memory, read when asked: RSS from `/proc/self/statm`, the heap from glibc.
public enum ProcessMemory {
    public static func current() -> MemoryUsage {
        var inUse: UInt64 = 0
        var free: UInt64 = 0
        cnm_linux_heap_usage(&inUse, &free)
        return MemoryUsage(residentBytes: residentBytes() ?? 0, heapInUseBytes: inUse, heapFreeBytes: free)
    }

    /// statm's second field: the resident set, in pages.
    static func residentBytes() -> UInt64? {
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let fields = buffer[..<n].split(separator: UInt8(ascii: " "))
        guard fields.count >= 2, let pages = UInt64(String(decoding: fields[1], as: UTF8.self)) else { return nil }
        return pages * UInt64(max(sysconf(Int32(_SC_PAGESIZE)), 0))
    }
}
