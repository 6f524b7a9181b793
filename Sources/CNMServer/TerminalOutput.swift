import CNMModel
import CNMReport
import Glibc

/// Prints each interval's table to standard output (`DD_CNM_TERMINAL`).
public struct TerminalOutput: ReportSubscriber {
    public let rows: Int
    public let intervalSeconds: Int

    public init(rows: Int, intervalSeconds: Int) {
        self.rows = rows
        self.intervalSeconds = intervalSeconds
    }

    public func receive(_ report: IntervalReport) {
        writeAll(to: STDOUT_FILENO, TerminalTable.render(report, rows: rows, intervalSeconds: intervalSeconds))
    }
}

/// Writes all of `text` to a file descriptor (the terminal table can exceed one pipe write).
public func writeAll(to fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        bytes = bytes.dropFirst(n)
    }
}
