import CNMDocker
import Logging
import Synchronization

/// Container tags from the Docker API. A missing socket or failing daemon costs the tags, never the
/// flows: the previous tags stay, the problem is logged once and retried at the next refresh.
final class DockerTagger: Sendable {
    struct Result: Sendable {
        var tags: [String: [String]]?
        var summary: String
        var problem: (kind: String, detail: String)?
    }

    /// How long a container's tags outlive it, so the last report of its connections is still named.
    static let graceSeconds: UInt64 = 300

    private let cache: DockerMetadataCache?
    /// Tags of every container seen, with when it was last listed (monotonic µs).
    private let known = Mutex<[String: (tags: [String], lastSeen: UInt64)]>([:])
    private let invalidHost: DockerError?
    private let host: String

    init(host: String) {
        self.host = host
        do {
            self.cache = DockerMetadataCache(client: try DockerClient(host: host))
            self.invalidHost = nil
        } catch {
            self.cache = nil
            self.invalidHost = error
        }
    }

    func refresh() async -> Result {
        guard let cache else {
            let detail = invalidHost.map { "\($0)" } ?? "unknown"
            return Result(summary: "unusable DOCKER_HOST: \(detail)", problem: ("docker_invalid_host", detail))
        }
        do {
            try await cache.refresh()
            let running = cache.containers.mapValues(\.tags)
            let now = monotonicMicros()
            let tags = known.withLock { known in
                for (id, tags) in running { known[id] = (tags, now) }
                known = known.filter { now - $0.value.lastSeen < Self.graceSeconds * 1_000_000 }
                return known.mapValues(\.tags)
            }
            return Result(tags: tags, summary: "\(running.count) running containers from \(host)")
        } catch {
            return Result(summary: "unavailable: \(error)", problem: ("docker_\(error.kind.rawValue)", "\(error)"))
        }
    }
}
