import CNMModel

/// The compact table printed every interval when the agent runs in a terminal.
public enum TerminalTable {
    public static func render(_ report: IntervalReport, rows: Int, intervalSeconds: Int) -> String {
        guard !report.connections.isEmpty else { return "── no connections in the last \(intervalSeconds) s ──\n" }
        let busiest = report.connections.sorted { total($0) > total($1) }.prefix(rows)
        var lines: [[String]] = [["", "LOCAL", "", "REMOTE", "SENT", "RECEIVED", "RTT", "RETR", "FAILED"]]
        for c in busiest {
            let failures = c.stats.tcpFailures.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }
            lines.append([
                c.key.transport.rawValue,
                localName(c),
                arrow(c.key.direction),
                remoteName(c),
                c.countersKnown ? bytes(c.stats.bytesSent) : "?",
                c.countersKnown ? bytes(c.stats.bytesReceived) : "?",
                c.stats.rttMicros == 0 ? "-" : millis(c.stats.rttMicros),
                String(c.stats.retransmits),
                failures.isEmpty ? "-" : failures.joined(separator: " "),
            ])
        }
        let widths = (0..<lines[0].count).map { column in lines.map { $0[column].count }.max() ?? 0 }
        var out = "── \(report.connections.count) connections in the last \(intervalSeconds) s"
        if report.connections.count > rows { out += " (busiest \(rows) shown)" }
        out += " ──\n"
        for line in lines {
            let cells = line.enumerated().map { i, cell in
                // Numbers right-aligned, names left-aligned.
                i >= 4 ? pad(cell, widths[i], left: true) : pad(cell, widths[i], left: false)
            }
            out += cells.joined(separator: "  ") + "\n"
        }
        return out
    }

    static func total(_ c: Connection) -> UInt64 {
        var total = c.stats.bytesSent
        total.addSaturating(c.stats.bytesReceived)
        return total
    }

    static func tag(_ tags: [String], _ key: String) -> String? {
        tags.first { $0.hasPrefix(key + ":") }.map { String($0.dropFirst(key.count + 1)) }
    }

    static func localName(_ c: Connection) -> String {
        let who =
            tag(c.tags, "container_name") ?? c.processName.map { name in
                c.key.pid.map { "\(name)[\($0)]" } ?? name.description
            }
            ?? "?"
        // A process names itself (prctl), a container is named by whoever started it: neither may
        // send the terminal an escape sequence.
        return Redaction.printable("\(who) \(c.key.local)")
    }

    static func remoteName(_ c: Connection) -> String {
        let who =
            tag(c.remoteTags, "container_name")
            ?? c.remoteProcessName.map { name in c.remotePid.map { "\(name)[\($0)]" } ?? name.description }
        return Redaction.printable(who.map { "\($0) \(c.key.remote)" } ?? c.key.remote.description)
    }

    static func arrow(_ d: ConnectionDirection) -> String {
        switch d {
        case .outgoing: "→"
        case .incoming: "←"
        case .none: "·"
        }
    }

    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(n) B" }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }

    static func millis(_ micros: UInt32) -> String {
        let hundredths = (Int(micros) + 5) / 10
        return "\(hundredths / 100).\(String(hundredths % 100).leftPadded(2, "0")) ms"
    }

    static func pad(_ s: String, _ width: Int, left: Bool) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return left ? fill + s : s + fill
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int, _ fill: Character) -> String {
        String(repeating: fill, count: max(0, width - count)) + self
    }
}
