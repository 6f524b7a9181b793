import Glibc

/// Why a procfs read failed, in the terms `ScanHealth` counts.
enum ReadFailure: Error {
    /// ENOENT/ESRCH: the process or fd went away between listing and reading it.
    case vanished
    /// EACCES/EPERM: e.g. another user's fds or namespaces without CAP_SYS_PTRACE.
    case denied
    /// Any other error (ENOTDIR, ELOOP, ...), or content that does not parse.
    case malformed

    init(errno code: Int32) {
        switch code {
        case ENOENT, ESRCH: self = .vanished
        case EACCES, EPERM: self = .denied
        default: self = .malformed
        }
    }
}

extension ScanHealth {
    mutating func count(_ failure: ReadFailure) {
        switch failure {
        case .vanished: vanished += 1
        case .denied: permissionDenied += 1
        case .malformed: malformed += 1
        }
    }
}

/// Procfs files read here are a few KiB at most; anything larger is not what we expect.
private let maxFileSize = 64 * 1024

/// The whole content of a small file.
func readSmallFile(_ path: String) -> Result<[UInt8], ReadFailure> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(ReadFailure(errno: errno)) }
    defer { close(fd) }
    var content: [UInt8] = []
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { chunk in
        while true {
            let n = read(fd, chunk.baseAddress, chunk.count)
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(ReadFailure(errno: errno))
            }
            if n == 0 { return .success(content) }
            content.append(contentsOf: UnsafeBufferPointer(rebasing: chunk[..<n]))
            if content.count > maxFileSize { return .failure(.malformed) }
        }
    }
}

/// Calls `body` with the open directory's fd (for `*at` calls) and each entry's name, `.` and `..`
/// excepted, until `body` returns false. Returns why the listing failed, if it did.
func forEachEntry(
    in path: String,
    _ body: (_ directory: Int32, _ name: UnsafePointer<CChar>) -> Bool
) -> ReadFailure? {
    guard let dir = opendir(path) else { return ReadFailure(errno: errno) }
    defer { closedir(dir) }
    let fd = dirfd(dir)
    let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
    while true {
        errno = 0
        guard let entry = readdir(dir) else { return errno == 0 ? nil : ReadFailure(errno: errno) }
        let name = (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self)
        if name[0] == 0x2E && (name[1] == 0 || (name[1] == 0x2E && name[2] == 0)) { continue }
        guard body(fd, name) else { return nil }
    }
}

/// Numeric entries of a procfs root (the processes), lowest pid first.
func listPIDs(in root: String) -> Result<[Int32], ReadFailure> {
    var pids: [Int32] = []
    let failure = forEachEntry(in: root) { _, name in
        if let pid = parseDecimal(UnsafeRawBufferPointer(start: name, count: strlen(name))), pid <= Int32.max {
            pids.append(Int32(pid))
        }
        return true
    }
    if let failure { return .failure(failure) }
    return .success(pids.sorted())
}

/// Link targets read here (`socket:[N]`, `net:[N]`) are short; longer ones are other files.
let linkBufferSize = 64

/// `readlinkat` into `buffer`: the target's bytes, or why not. A target filling the whole buffer
/// may be truncated, which is fine for the short kernel-made targets looked for.
func readLink(
    at directory: Int32,
    _ name: UnsafePointer<CChar>,
    into buffer: UnsafeMutableBufferPointer<UInt8>
) -> Result<UnsafeBufferPointer<UInt8>, ReadFailure> {
    let n = buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
        readlinkat(directory, name, $0, buffer.count)
    }
    guard n >= 0 else { return .failure(ReadFailure(errno: errno)) }
    return .success(UnsafeBufferPointer(rebasing: buffer[..<n]))
}

/// The N of `<kind>:[N]`, the form of socket fd and namespace links.
public func linkInode(_ target: UnsafeBufferPointer<UInt8>, kind: StaticString) -> UInt64? {
    let prefix = UnsafeBufferPointer(start: kind.utf8Start, count: kind.utf8CodeUnitCount)
    guard target.count > prefix.count + 3, target.starts(with: prefix), target[prefix.count] == UInt8(ascii: ":"),
        target[prefix.count + 1] == UInt8(ascii: "["), target.last == UInt8(ascii: "]")
    else { return nil }
    return parseDecimal(target[(prefix.count + 2)..<(target.count - 1)])
}

/// A non-empty run of ASCII digits that fits in 64 bits.
func parseDecimal(_ digits: some Collection<UInt8>) -> UInt64? {
    guard !digits.isEmpty else { return nil }
    var value: UInt64 = 0
    for byte in digits {
        guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
        let (times10, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
        guard !o1, !o2 else { return nil }
        value = sum
    }
    return value
}

/// Field 22 of `/proc/<pid>/stat`, the start time in clock ticks since boot: with the pid, it tells
/// a process from a later one that reused its pid. Fields are counted after the last ')' because the
/// command name in field 2 may itself hold spaces and parentheses.
public func startTime(fromStat stat: [UInt8]) -> UInt64? {
    guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
    // Field 3 (state) is the first after ')'; field 22 is the 20th.
    let fields = stat[(close + 1)...].split(separator: UInt8(ascii: " "), maxSplits: 20)
    guard fields.count > 19 else { return nil }
    return parseDecimal(fields[19])
}
