import CNMProcfs
import Glibc
import Testing

/// Prints the CPU time of `owners(for:)` on the real /proc for 10,000 sockets held by this process.
/// A measurement, not a check: run it on purpose with
/// `CNM_MEASURE_SCAN=1 swift test -c release --filter scanCostOfTenThousandSockets`.
@Test(.enabled(if: getenv("CNM_MEASURE_SCAN") != nil))
func scanCostOfTenThousandSockets() throws {
    let count = 10_000
    var limit = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    if limit.rlim_cur < rlim_t(count + 1_000) {
        limit.rlim_cur = rlim_t(count + 1_000)
        limit.rlim_max = max(limit.rlim_max, limit.rlim_cur)
        try #require(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, "raise RLIMIT_NOFILE")
    }

    var fds: [Int32] = []
    var inodes = Set<UInt64>()
    defer { for fd in fds { close(fd) } }
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        fds.append(fd)
        var info = stat()
        fstat(fd, &info)
        inodes.insert(UInt64(info.st_ino))
    }

    var scanner = SocketOwnerScanner(procRoot: "/proc")
    func measure(_ label: String, _ wanted: Set<UInt64>) -> Int {
        var before = timespec()
        var after = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &before)
        let found = scanner.owners(for: wanted).count
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &after)
        let micros = (after.tv_sec - before.tv_sec) * 1_000_000 + (after.tv_nsec - before.tv_nsec) / 1_000
        print("\(label): \(micros) µs CPU, \(found) owners, \(scanner.health)")
        return found
    }

    #expect(measure("cold", inodes) == count)
    #expect(measure("warm", inodes) == count)
    let extra = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    fds.append(extra)
    var info = stat()
    fstat(extra, &info)
    #expect(measure("one new socket", inodes.union([UInt64(info.st_ino)])) == count + 1)
}
