import Testing

@testable import CNMModel

@Suite struct GenerationsTests {
    /// What a cache of cgroups relies on: an entry set again each interval stays, one left alone is
    /// gone two intervals later, and a stored nil (a cgroup of no container) is an answer.
    @Test func anEntryLivesAsLongAsItIsUsed() {
        var cache = Generations<UInt64, String?>()
        cache.set("c1", for: 1)
        cache.set(nil, for: 2)
        cache.set("c3", for: 3)
        for _ in 0..<5 {
            cache.advance()
            #expect(cache.refresh(1) == .some("c1"))
        }
        #expect(cache[1] == .some("c1"))
        #expect(cache[3] == nil, "unused for five intervals")
        var fresh = Generations<UInt64, String?>()
        fresh.set(nil, for: 2)
        fresh.advance()
        #expect(fresh[2] == .some(nil), "a known 'no container' is kept for the next interval")
        fresh.advance()
        #expect(fresh[2] == nil)
    }
}
