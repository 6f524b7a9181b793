import CNMModel
import CNMNetlink
import CNMProcfs
import CNMSystem

/// The eBPF-less source: the kernel's own socket table and counters through NETLINK_SOCK_DIAG, in
/// every network namespace on the host, with owners found through `/proc`.
///
/// Not thread-safe: used only from the collection queue.
final class SockDiagSource {
    private struct Namespace {
        var diag: SockDiagSocket
        var destroy: DestroyListener?
    }

    private let configuration: Configuration
    private var scanner: SocketOwnerScanner
    /// The agent's own network namespace, where packet capture runs.
    let ownNamespace = SocketOwnerScanner.ownNetworkNamespace()
    private var namespaces: [UInt64: Namespace] = [:]
    private(set) var destroyNotificationsAvailable: Bool?
    private(set) var destroyUnavailableReason: String?
    /// Reads every namespace's destroy notifications as they come; nil when it could not start (each
    /// sample then reads what the kernel's queue kept).
    private let pump: DestroyNotificationPump?
    /// Destroyed sockets each namespace's listener keeps between two samples.
    private let maxPendingDestroyed: Int

    private var queries: [(TransportProtocol, AddressFamily)] {
        var out: [(TransportProtocol, AddressFamily)] = []
        for transport in TransportProtocol.allCases {
            guard transport == .tcp ? configuration.tcpEnabled : configuration.udpEnabled else { continue }
            for family in AddressFamily.allCases where family == .v4 || configuration.ipv6Enabled {
                out.append((transport, family))
            }
        }
        return out
    }

    init(configuration: Configuration, maxPendingDestroyed: Int) {
        self.configuration = configuration
        self.scanner = SocketOwnerScanner(procRoot: configuration.hostProc)
        self.maxPendingDestroyed = maxPendingDestroyed
        if !configuration.destroyNotifications {
            destroyNotificationsAvailable = false
            destroyUnavailableReason = "turned off by DD_CNM_DESTROY_NOTIFICATIONS=false"
            pump = nil
        } else {
            let pump = try? DestroyNotificationPump()
            self.pump = pump?.start() == true ? pump : nil
        }
    }

    deinit { pump?.stop() }

    /// Why destroy notifications are read only at each sample, if they are.
    var pumpProblem: String? {
        guard destroyNotificationsAvailable == true else { return nil }
        return pump == nil ? "the destroy notifications' reader thread could not start" : pump?.failureReason
    }

    var namespaceCount: Int { namespaces.count }
    var scanHealth: ScanHealth { scanner.health }

    /// Reads every namespace once. Problems are counted into `status`, never thrown: one namespace
    /// failing does not cost the others their data.
    func poll(baseline: Bool, problems: inout ProblemCounts) -> Poll {
        var poll = Poll(isBaseline: baseline)
        let ended = refreshNamespaces(problems: &problems)
        // A namespace that ended still delivers the destroy notifications of its last sockets.
        for (netns, ns) in ended {
            drainDestroyed(ns, netns, into: &poll, problems: &problems)
            poll.endedNamespaces.insert(netns)
        }
        for (netns, ns) in namespaces {
            let readStart = Timestamp.now.nanoseconds
            defer { poll.readWindows[netns] = readStart...Timestamp.now.nanoseconds }
            var observations: [SocketObservation] = []
            var complete = true
            for (transport, family) in queries {
                do {
                    observations += try ns.diag.dump(transport, family, netns: netns)
                } catch {
                    complete = false
                    problems.add("netlink_dump", "namespace \(netns) \(transport)/\(family): \(error)")
                }
            }
            if complete { poll.dumps[netns] = observations }
            if drainDestroyed(ns, netns, into: &poll, problems: &problems) { poll.destroyNotified.insert(netns) }
        }
        return poll
    }

    /// Adds the final observations of the namespace's destroyed sockets to `poll`. Returns whether
    /// the namespace has destroy notifications at all.
    @discardableResult
    private func drainDestroyed(
        _ ns: Namespace,
        _ netns: UInt64,
        into poll: inout Poll,
        problems: inout ProblemCounts
    ) -> Bool {
        guard let destroy = ns.destroy else { return false }
        let drained = destroy.drain(netns: netns)
        poll.destroyed += drained.observations.filter(isEnabled)
        problems.add(
            "destroy_notifications_lost", by: UInt64(drained.lost),
            "the kernel dropped destroy notifications in namespace \(netns): "
                + "those sockets keep only the counters of their last read"
        )
        problems.add(
            "destroy_notifications_dropped", by: UInt64(drained.dropped),
            "more than \(destroy.maxPending) sockets of namespace \(netns) closed between two samples: "
                + "the rest keep only the counters of their last read"
        )
        if let failure = drained.failure {
            problems.add("destroy_notifications_read", "namespace \(netns): \(failure)")
        }
        return true
    }

    private func isEnabled(_ o: SocketObservation) -> Bool {
        (o.transport == .tcp ? configuration.tcpEnabled : configuration.udpEnabled)
            && (o.family == .v4 || configuration.ipv6Enabled)
    }

    /// The processes holding these socket inodes, as far as `/proc` shows them. The scanner walks
    /// `/proc` only for inodes it has never looked for.
    func owners(for inodes: Set<UInt64>) -> [UInt64: SocketOwner] {
        inodes.isEmpty ? [:] : scanner.owners(for: inodes)
    }

    /// Opens sockets in namespaces that appeared; returns those of namespaces that ended.
    private func refreshNamespaces(problems: inout ProblemCounts) -> [UInt64: Namespace] {
        var found = scanner.networkNamespaces()
        // The agent's own namespace may hold no host process it can see (its own pid namespace).
        if let own = ownNamespace, found[own] == nil { found[own] = "/proc/self/ns/net" }
        for (netns, path) in found where namespaces[netns] == nil {
            // The agent's own namespace needs no setns.
            let enterPath: String? = netns == ownNamespace ? nil : path
            do {
                let diag = try SockDiagSocket(namespacePath: enterPath)
                var destroy: DestroyListener?
                if destroyNotificationsAvailable != false {
                    do {
                        let listener = try DestroyListener(
                            namespacePath: enterPath, maxPending: maxPendingDestroyed)
                        pump?.watch(listener, netns: netns)
                        destroy = listener
                        destroyNotificationsAvailable = true
                    } catch {
                        destroyNotificationsAvailable = false
                        destroyUnavailableReason = "\(error)"
                    }
                }
                namespaces[netns] = Namespace(diag: diag, destroy: destroy)
            } catch {
                problems.add("namespace_enter", "namespace \(netns) via \(path): \(error)")
            }
        }
        // A namespace whose last process is gone is gone too (or held only by a bind mount we do not see).
        var ended: [UInt64: Namespace] = [:]
        for (netns, ns) in namespaces where found[netns] == nil {
            if let destroy = ns.destroy { pump?.unwatch(destroy) }
            ended[netns] = ns
            namespaces[netns] = nil
        }
        return ended
    }
}
