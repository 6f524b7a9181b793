/// Connection rollups, with the semantics of Datadog's `DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP`:
/// connections that closed in the interval after living less than two minutes, from the same
/// process (and container) to the same remote address and port, become one connection whose
/// ephemeral port (the local one of an outgoing connection, the remote one of an incoming) is 0.
/// Counts are summed, so every byte stays in the sums; RTT is averaged over the connections that
/// measured one. Churn then costs one row per service pair, not one per connection.
public enum ConnectionRollup {
    /// Datadog's threshold: what lived longer than this is reported on its own.
    public static let shortLivedUnderNanoseconds: UInt64 = 120_000_000_000

    /// Whether `c` may be merged with others like it.
    public static func isShortLived(_ c: Connection) -> Bool {
        guard let lived = c.closedLifetimeNanos, c.key.direction != .none else { return false }
        return lived < shortLivedUnderNanoseconds
    }

    /// `connections` with the short-lived ones rolled up, in the order each group first came, and
    /// how many connections were merged into another.
    public static func rollUp(_ connections: [Connection]) -> (connections: [Connection], merged: Int) {
        struct Key: Hashable {
            var connection: ConnectionKey
            var localContainerID: String?
            var remoteContainerID: String?
        }
        struct RTTSum {
            var rtt: UInt64 = 0
            var variance: UInt64 = 0
            var count: UInt64 = 0

            mutating func add(_ s: ConnectionStats) {
                guard s.rttMicros != 0 else { return }
                rtt += UInt64(s.rttMicros)
                variance += UInt64(s.rttVarMicros)
                count += 1
            }
        }
        var out: [Connection] = []
        out.reserveCapacity(connections.count)
        var groups: [Key: Int] = [:]
        var sums: [Int: RTTSum] = [:]
        var merged = 0
        var mergedInto = Set<Int>()
        for c in connections {
            guard isShortLived(c) else {
                out.append(c)
                continue
            }
            var rolled = c.key
            if c.key.direction == .outgoing { rolled.local.port = 0 } else { rolled.remote.port = 0 }
            let key = Key(
                connection: rolled, localContainerID: c.localContainerID, remoteContainerID: c.remoteContainerID)
            guard let i = groups[key] else {
                groups[key] = out.count
                sums[out.count, default: RTTSum()].add(c.stats)
                out.append(c)
                continue
            }
            merged += 1
            mergedInto.insert(i)
            sums[i, default: RTTSum()].add(c.stats)
            out[i].key = rolled  // a port is zeroed only where two or more were merged
            out[i].stats.merge(c.stats)
            out[i].rolledUp += c.rolledUp
            out[i].closedLifetimeNanos = max(out[i].closedLifetimeNanos ?? 0, c.closedLifetimeNanos ?? 0)
            out[i].intraHost = out[i].intraHost || c.intraHost
            out[i].countersKnown = out[i].countersKnown && c.countersKnown
            // Several clients' ends of one service: what is not the same for all is not known.
            if out[i].remotePid != c.remotePid { out[i].remotePid = nil }
            if out[i].remoteProcessName != c.remoteProcessName { out[i].remoteProcessName = nil }
        }
        for i in mergedInto {
            guard let sum = sums[i], sum.count > 0 else { continue }
            out[i].stats.rttMicros = UInt32(truncatingIfNeeded: sum.rtt / sum.count)
            out[i].stats.rttVarMicros = UInt32(truncatingIfNeeded: sum.variance / sum.count)
        }
        return (out, merged)
    }
}
