/// How connections packet capture saw join the sockets sock_diag listed, in the namespace capture
/// watches.
///
/// A side of a connection whose socket sock_diag listed at any read while the connection lived is
/// reported from the kernel's counters, and only from them; capture decides that per side, from the
/// read windows, before it hands a connection over (`seenBySockDiag`). Where reads are all there is
/// (no destroy notifications), capture reports the rest: the sides sock_diag never listed, which
/// opened and closed between two reads. Where destroy notifications come, every socket reaches
/// sock_diag with its final counters, possibly after its connection ended on the wire (a socket is
/// destroyed once its process closes it), so capture reports no TCP side of its own there.
///
/// The wire's counts are used for a socket sock_diag did list in two cases: UDP, for which the
/// kernel keeps no counters, and a TCP socket that vanished between two reads without a destroy
/// notification, whose bytes after its last read would otherwise be lost. And the wire says what
/// the counters never do: the errno a reset left, and that a connection that moved no data opened.
extension ConnectionTracker {
    /// What capture knows of a connection's end that its socket, not met yet, is to get once its
    /// destroy notification comes; or, for a socket whose notification will carry no peer, the side
    /// capture reports itself if none came.
    struct PendingOutcome {
        var side: CapturedFlow.Side
        var peer: CapturedFlow.Side
        var flow: CapturedFlow
        var pass: UInt64
        var reportIfUnmet: Bool
    }

    /// Passes a pending outcome waits for its socket's destroy notification.
    static let outcomeWaitPasses: UInt64 = 120
    /// Passes a side whose socket the kernel disconnected waits before capture reports it: such a
    /// socket is closed already, so its notification, if it names the peer after all, comes at once.
    static let disconnectedWaitPasses: UInt64 = 2

    /// Takes in TCP connections capture saw end. Without destroy notifications (`destroyNotified`
    /// false), a local side sock_diag never listed becomes a connection end of its own, and for one
    /// it listed capture's counts are kept for a pass, for `completeFromWire`. With them, every socket
    /// comes to sock_diag, except those the kernel disconnects before destroying them, whose
    /// notification names no peer: a refused connect, a socket that sent a reset on close; capture
    /// reports those sides itself if no notification came for them. Either way a socket gets what
    /// its counters do not say: a failure, and the handshake of a connection that moved no data.
    mutating func takeEnded(_ flows: [CapturedFlow], netns: UInt64, destroyNotified: Bool) {
        var followed: [Tuple: [SocketID]]?
        for flow in flows where flow.transport == .tcp {
            for (sideIsA, side, peer) in [(true, flow.a, flow.b), (false, flow.b, flow.a)] where side.isLocal {
                let tuple = Tuple(.tcp, side.endpoint, peer.endpoint)
                if destroyNotified {
                    if flow.fromStart && peer.sentFin {
                        capture.finishedPayloads.set(peer.sent.bytes, for: tuple)
                        if let id = capture.destroyedWithFinInDoubt[tuple], let index = sockets.index(forKey: id) {
                            Self.takeOffCountedFin(&sockets.values[index], peerPayload: peer.sent.bytes)
                        }
                    }
                    let silent = side.sent.bytes == 0 && peer.sent.bytes == 0
                    let disconnected = side.failure == TCPFailure.refused || side.sentReset
                    guard side.failure != nil || (flow.established && silent) || disconnected else { continue }
                    if followed == nil { followed = followedTCP(netns: netns) }
                    // A listed socket disconnected will vanish without final counters: the wire has them.
                    if disconnected && side.seenBySockDiag {
                        capture.wireTotals.append(
                            WireTotal(flow: flow, sideIsA: sideIsA, outcomeApplied: followed?[tuple] != nil), to: tuple)
                    }
                    if let id = followed?[tuple]?.last, let index = sockets.index(forKey: id) {
                        Self.applyOutcome(&sockets.values[index], side, flow)
                    } else if side.initiated || flow.established {
                        capture.pendingOutcomes[tuple] = PendingOutcome(
                            side: side, peer: peer, flow: flow, pass: pass,
                            reportIfUnmet: disconnected && !side.seenBySockDiag)
                    }
                    continue
                }
                if side.seenBySockDiag {
                    var total = WireTotal(flow: flow, sideIsA: sideIsA)
                    if followed == nil { followed = followedTCP(netns: netns) }
                    // The socket the last read that listed this side listed, when the ends were reused.
                    let candidates = followed?[tuple] ?? []
                    let id =
                        candidates.count == 1
                        ? candidates.first : candidates.first { sockets[$0]?.lastReadAt == side.lastListedAt }
                    if let id, let index = sockets.index(forKey: id) {
                        Self.applyOutcome(&sockets.values[index], side, flow)
                        total.outcomeApplied = true
                    }
                    capture.wireTotals.append(total, to: tuple)
                    continue
                }
                reportFromWire(flow, side, peer, netns: netns)
            }
        }
    }

    /// Gives sockets of the captured namespace destroyed in this pass what capture saw of their peer's
    /// FIN in this pass or the one before (`takeOffCountedFin`); one whose FIN is still in doubt is
    /// remembered for the connection's end on the wire, in this pass or the next.
    mutating func takeOffCountedFins(_ destroyed: [SocketObservation]) {
        guard let netns = capture.netns else { return }
        for o in destroyed where o.id.netns == netns && o.transport == .tcp {
            guard let index = sockets.index(forKey: o.id), Self.finInDoubt(sockets.values[index]) else { continue }
            let tuple = Tuple(.tcp, o.local, o.remote)
            if let payload = capture.finishedPayloads[tuple] {
                Self.takeOffCountedFin(&sockets.values[index], peerPayload: payload)
            } else {
                capture.destroyedWithFinInDoubt.set(o.id, for: tuple)
            }
        }
    }

    /// The FIN may still be counted in what the socket received (it was not taken off, and something
    /// to take it from is still unreported), or was taken off on a guess (`finGuessed`).
    private static func finInDoubt(_ s: Tracked) -> Bool {
        s.finGuessed || (!s.finSubtracted && s.pending.bytesReceived > 0)
    }

    /// Takes the peer's FIN byte off a socket whose `bytes_received` counted it at a read whose state
    /// did not show it yet: sock_diag reads the state before it locks the socket for the counters, so
    /// the FIN can land in between. No later delta then receives anything to take it off, and a
    /// reset looks the same to the counters; the wire tells them apart (`peerPayload` bytes, then a
    /// FIN). A byte an earlier interval reported already cannot be taken back.
    /// A FIN taken off on a guess at the destroy notification is settled the same way
    /// (`settleGuessedFin`).
    static func takeOffCountedFin(_ s: inout Tracked, peerPayload: UInt64) {
        if s.finGuessed { return settleGuessedFin(&s, peerPayload: peerPayload) }
        guard finInDoubt(s), s.rawAccounted.bytesReceived == peerPayload + 1 else { return }
        s.pending.bytesReceived -= 1
        s.finSubtracted = true
    }

    /// A connection end only capture saw, reported from the wire.
    private mutating func reportFromWire(
        _ flow: CapturedFlow, _ side: CapturedFlow.Side, _ peer: CapturedFlow.Side, netns: UInt64
    ) {
        // A side that neither sent a SYN nor completed a handshake had no socket: the refusing end of
        // a refused connection.
        guard side.initiated || flow.established else { return }
        // What is left of a connection older than the capture: a last ACK after its end.
        guard flow.fromStart || side.sent.bytes > 0 || peer.sent.bytes > 0 else { return }
        let direction: ConnectionDirection =
            side.initiated
            ? .outgoing
            : peer.initiated
                ? .incoming
                : self.direction(netns: netns, transport: .tcp, local: side.endpoint, remote: peer.endpoint)
        // The server side of an accepted connection belongs to the process that listens there.
        // Without a listener here the SYN was answered by a socket elsewhere (address translation for
        // another namespace), whose own namespace reports it.
        var ownerInode: UInt64?
        if direction == .incoming {
            guard let listener = listener(netns: netns, transport: .tcp, local: side.endpoint) else {
                health.capturedWithoutSocket += 1
                return
            }
            ownerInode = listener.inode
        }
        var stats = Self.stats(side, peer)
        stats.tcpEstablished = flow.fromStart && flow.established ? 1 : 0
        stats.tcpClosed = flow.established ? 1 : 0
        if let failure = side.failure { stats.tcpFailures[failure] = 1 }
        appendCaptured(netns, .tcp, side, peer, direction, stats, ownerInode: ownerInode)
    }

    /// Capture's count of the connection of a TCP socket of the captured namespace, taken once: the
    /// one whose side the same read as the socket's last listed, as one pair of ends may have
    /// carried several connections.
    mutating func takeWireTotal(netns: UInt64, _ s: Tracked) -> WireTotal? {
        guard netns == capturedNamespace, s.observation.transport == .tcp else { return nil }
        let tuple = Tuple(.tcp, s.observation.local, s.observation.remote)
        let readAt = s.lastReadAt
        return capture.wireTotals.removeFirst(under: tuple) { $0.side.lastListedAt == readAt }
    }

    /// Fills in what a TCP socket that vanished between two reads carried after the last one, from
    /// capture's count of its connection. Only a connection capture followed from its SYN has totals
    /// that line up with the kernel's counters, which also start there. Returns whether it did.
    static func completeFromWire(_ s: inout Tracked, _ wire: WireTotal) -> Bool {
        guard wire.flow.fromStart else { return false }
        let (side, peer) = wire.sideIsA ? (wire.flow.a, wire.flow.b) : (wire.flow.b, wire.flow.a)
        let raw = s.rawAccounted
        // The raw count of bytes received includes the FIN once it was taken off.
        let received = raw.bytesReceived - (s.finSubtracted && raw.bytesReceived > 0 ? 1 : 0)
        func rest(_ total: UInt64, _ counted: UInt64) -> UInt64 { total > counted ? total - counted : 0 }
        s.pending.bytesSent.addSaturating(rest(side.sent.bytes, raw.bytesSent))
        s.pending.bytesReceived.addSaturating(rest(peer.sent.bytes, received))
        // One byte more than the wire carried is the peer's FIN, counted at a read whose socket state
        // did not show it yet (the dump reads the state and the counters at different instants).
        takeOffCountedFin(&s, peerPayload: peer.sent.bytes)
        s.pending.packetsSent.addSaturating(rest(side.sent.packets, raw.packetsSent))
        s.pending.packetsReceived.addSaturating(rest(peer.sent.packets, raw.packetsReceived))
        s.pending.retransmits.addSaturating(rest(side.sent.retransmits, raw.retransmits))
        if !wire.outcomeApplied { applyOutcome(&s, side, wire.flow) }
        return true
    }

    /// Gives the UDP sockets of the captured namespace what capture counted for their 4-tuples. A
    /// 4-tuple no followed socket has (an unconnected socket's peer, or a connected socket that lived
    /// between two reads) is reported as a connection end of its own, attributed to the socket bound
    /// to its local port.
    mutating func takeDatagrams(_ flows: [CapturedFlow], netns: UInt64) {
        var byTuple: [Tuple: SocketID] = [:]
        for (id, s) in sockets where id.netns == netns && s.observation.transport == .udp {
            byTuple[Tuple(.udp, s.observation.local, s.observation.remote)] = id
        }
        for flow in flows where flow.transport == .udp {
            for (side, peer) in flow.ends where side.isLocal {
                let stats = Self.stats(side, peer)
                if let id = byTuple[Tuple(.udp, side.endpoint, peer.endpoint)], let index = sockets.index(forKey: id) {
                    sockets.values[index].pending.merge(stats)
                    continue
                }
                let bound = listener(netns: netns, transport: .udp, local: side.endpoint)
                // Datagrams that arrived for no socket were dropped by the kernel.
                guard bound != nil || side.initiated else {
                    health.capturedWithoutSocket += 1
                    continue
                }
                let direction: ConnectionDirection = side.initiated ? .outgoing : .incoming
                appendCaptured(netns, .udp, side, peer, direction, stats, ownerInode: bound?.inode)
            }
        }
    }

    /// Gives sockets of the captured namespace first met in these destroy notifications what capture
    /// knew of their connection's end. A side whose socket was disconnected and met no notification
    /// in time is reported from the wire; what waited too long otherwise is forgotten.
    mutating func applyPendingOutcomes(_ destroyed: [SocketObservation]) {
        guard let netns = capture.netns, !capture.pendingOutcomes.isEmpty else { return }
        for o in destroyed where o.id.netns == netns && o.transport == .tcp {
            guard let pending = capture.pendingOutcomes.removeValue(forKey: Tuple(.tcp, o.local, o.remote)),
                let index = sockets.index(forKey: o.id)
            else { continue }
            Self.applyOutcome(&sockets.values[index], pending.side, pending.flow)
        }
        let unmet = capture.pendingOutcomes.filter {
            $0.value.reportIfUnmet && pass - $0.value.pass >= Self.disconnectedWaitPasses
        }
        for (tuple, pending) in unmet {
            capture.pendingOutcomes[tuple] = nil
            reportFromWire(pending.flow, pending.side, pending.peer, netns: netns)
        }
        let pending = capture.pendingOutcomes
        if pending.count > maxTracked || pending.values.contains(where: { expired($0) }) {
            let kept = pending.filter { !expired($0.value) }
            capture.pendingOutcomes = kept
        }
    }

    private func expired(_ outcome: PendingOutcome) -> Bool { pass - outcome.pass > Self.outcomeWaitPasses }

    /// Remembers who opened each TCP connection capture followed from its SYN, for this pass and the
    /// next: a socket's destroy notification comes in the pass its connection ended, or the one after.
    /// A server whose listener opened and closed between two reads (on a port from the ephemeral
    /// range, so the port says nothing either) leaves only this to tell its accepted sockets from
    /// clients.
    mutating func learnDirections(_ flows: [CapturedFlow]) {
        capture.directions.advance()
        for flow in flows where flow.transport == .tcp && flow.fromStart && flow.a.initiated != flow.b.initiated {
            for (side, peer) in [(flow.a, flow.b), (flow.b, flow.a)] where side.isLocal {
                capture.directions.set(
                    side.initiated ? .outgoing : .incoming, for: Tuple(.tcp, side.endpoint, peer.endpoint))
            }
        }
    }

    /// What capture knows of how a socket's connection went that its counters do not say.
    static func applyOutcome(_ s: inout Tracked, _ side: CapturedFlow.Side, _ flow: CapturedFlow) {
        if flow.established && !s.establishedCounted {
            s.establishedCounted = true
            s.pending.tcpEstablished += 1
            // Closed already, it was taken for a connection that never opened.
            if s.closed { s.pending.tcpClosed += 1 }
        }
        if let failure = side.failure { s.pending.tcpFailures[failure, default: 0] += 1 }
    }

    /// The TCP sockets followed in `netns`, by their ends.
    private func followedTCP(netns: UInt64) -> [Tuple: [SocketID]] {
        var found: [Tuple: [SocketID]] = [:]
        for (id, s) in sockets where id.netns == netns && s.observation.transport == .tcp {
            found[Tuple(.tcp, s.observation.local, s.observation.remote), default: []].append(id)
        }
        return found
    }

    private static func stats(_ side: CapturedFlow.Side, _ peer: CapturedFlow.Side) -> ConnectionStats {
        var stats = ConnectionStats()
        stats.bytesSent = side.sent.bytes
        stats.bytesReceived = peer.sent.bytes
        stats.packetsSent = side.sent.packets
        stats.packetsReceived = peer.sent.packets
        stats.retransmits = side.sent.retransmits
        return stats
    }

    private mutating func appendCaptured(
        _ netns: UInt64,
        _ transport: TransportProtocol,
        _ side: CapturedFlow.Side,
        _ peer: CapturedFlow.Side,
        _ direction: ConnectionDirection,
        _ stats: ConnectionStats,
        ownerInode: UInt64?
    ) {
        let end = FlowEnd(
            netns: netns,
            transport: transport,
            local: side.endpoint,
            remote: peer.endpoint,
            owner: ownerInode.flatMap { listenerOwners[$0] },
            direction: direction,
            stats: stats,
            countersKnown: true
        )
        capture.ended.append(CapturedEnd(end: end, ownerInode: ownerInode))
        // Ends only capture saw are as many as connections closed in the interval: past the socket
        // table's bound they are rolled up (by listener as well, whose owner each is given at the report).
        if capture.ended.count >= max(maxTracked, 2 * capture.endedAfterRollUp) {
            let merged = MemoryRollup.rollUp(
                &capture.ended, toFit: maxTracked / 2, end: \.end, also: { $0.ownerInode ?? 0 })
            health.rolledUpForMemory += UInt64(merged)
            capture.endedAfterRollUp = capture.ended.count
        }
    }
}
