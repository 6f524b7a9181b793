import CNMSystem
import Testing

@Suite struct ProcessMemoryTests {
    /// 512 MiB allocated and touched shows in the heap in use and in the RSS, and is gone from the
    /// heap in use once freed. The figures are the whole process's, and other tests allocate and free
    /// meanwhile: half the block is the margin they get.
    @Test func heapInUseFollowsAnAllocation() {
        let before = ProcessMemory.current()
        #expect(before.residentBytes > 0 && before.heapInUseBytes > 0)
        let size = 512 << 20
        let block = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        block.initializeMemory(as: UInt8.self, repeating: 1, count: size)
        let during = ProcessMemory.current()
        #expect(during.heapInUseBytes >= before.heapInUseBytes + UInt64(size) / 2)
        #expect(during.residentBytes >= before.residentBytes + UInt64(size) / 2)
        block.deallocate()
        let after = ProcessMemory.current()
        #expect(after.heapInUseBytes + UInt64(size) / 2 < during.heapInUseBytes)
    }
}
