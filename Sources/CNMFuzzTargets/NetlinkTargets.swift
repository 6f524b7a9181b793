import CNMModel
import CNMNetlink

extension FuzzTargets {
    /// One `NETLINK_SOCK_DIAG` datagram, as a dump reply or destroy notifications, parsed with each kind
    /// of transport a dump may ask for; then its sockets taken in by a small `ConnectionTracker` as one
    /// pass's dump and the next pass's destroy notifications (in reverse order), and an interval flushed.
    ///
    /// Checks that each observation took at least a message header and an `inet_diag_msg` of the input,
    /// that the datagram split after its first message parses exactly as it does whole (the parser keeps
    /// no state across messages but what it has collected), and that the tracker follows no more sockets
    /// than it may.
    public static func sockDiagReply(_ input: [UInt8]) {
        let headerSize = 16
        let inetDiagSize = 72
        let first = input.count >= headerSize ? Self.nlmsgHeader(input) : nil
        let filters: [(TransportProtocol?, UInt32?, UInt32?)] = [
            (.tcp, nil, nil), (.udp, nil, nil), (nil, nil, nil), (.tcp, first?.sequence, first?.portID),
        ]
        for (transport, sequence, portID) in filters {
            func parse(_ datagrams: [[UInt8]]) -> (SockDiagReply, NetlinkError?) {
                var reply = SockDiagReply(
                    netns: 4_026_531_840, transport: transport, sequence: sequence, portID: portID)
                for datagram in datagrams {
                    do throws(NetlinkError) {
                        try withExactBytes(datagram) { bytes in
                            Result { () throws(NetlinkError) in try reply.consume(bytes) }
                        }.get()
                    } catch {
                        return (reply, error)
                    }
                }
                return (reply, nil)
            }
            let (whole, wholeError) = parse([input])
            invariant(
                whole.observations.count <= input.count / (headerSize + inetDiagSize),
                "\(whole.observations.count) sockets from \(input.count) bytes")
            guard let first, first.length >= headerSize else { continue }
            let end = (first.length + 3) & ~3
            guard end < input.count else { continue }
            let (split, splitError) = parse([Array(input[..<end]), Array(input[end...])])
            invariant(
                wholeError?.code == splitError?.code,
                "\(String(describing: wholeError)) whole, \(String(describing: splitError)) split")
            invariant(whole.observations == split.observations, "split after the first message gives other sockets")
            invariant(whole.isComplete == split.isComplete, "split after the first message changes completeness")
        }
        trackSockets(input)
    }

    private static func trackSockets(_ input: [UInt8]) {
        let netns: UInt64 = 4_026_531_840
        var reply = SockDiagReply(netns: netns, transport: .tcp)
        // What was parsed before an error is what the collector would have kept of the dump.
        try? reply.consume(input)
        let maxTracked = 16
        var tracker = ConnectionTracker(maxTracked: maxTracked)
        tracker.apply(Poll(dumps: [netns: reply.observations], readWindows: [netns: 1_000...2_000]))
        tracker.apply(
            Poll(dumps: [netns: []], destroyed: reply.observations.reversed(), destroyNotified: [netns]))
        _ = tracker.flush()
        invariant(tracker.health.tracked <= maxTracked, "\(tracker.health.tracked) sockets tracked of \(maxTracked)")
    }

    /// `nlmsg_len`, `nlmsg_seq` and `nlmsg_pid` of the message at the start of `bytes` (host order, as the
    /// kernel writes them).
    private static func nlmsgHeader(_ bytes: [UInt8]) -> (length: Int, sequence: UInt32, portID: UInt32) {
        bytes.withUnsafeBytes { raw in
            (
                Int(raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self),
                raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
            )
        }
    }

    /// `struct tcp_info` at whatever length a kernel sends it.
    ///
    /// Checks that the fields of a shorter struct (the input's first half) are those of the longer one:
    /// a kernel that appends fields changes none before them.
    public static func tcpInfo(_ input: [UInt8]) {
        let full = withExactBytes(input) { TCPInfo($0) }
        let half = withExactBytes(Array(input.prefix(input.count / 2))) { TCPInfo($0) }
        invariant(full.length == input.count, "length \(full.length) for \(input.count) bytes")
        invariant((full.state == nil) == input.isEmpty, "state of an empty struct")
        func same<T: Equatable>(_ field: KeyPath<TCPInfo, T?>) {
            guard let value = half[keyPath: field] else { return }
            invariant(full[keyPath: field] == value, "\(field) differs between \(half.length) and \(full.length) bytes")
        }
        same(\.state)
        same(\.sndWscale)
        same(\.rcvWscale)
        same(\.deliveryRateAppLimited)
        same(\.rto)
        same(\.rtt)
        same(\.rttvar)
        same(\.totalRetrans)
        same(\.bytesAcked)
        same(\.bytesReceived)
        same(\.segsIn)
        same(\.deliveryRate)
        same(\.bytesSent)
        same(\.bytesRetrans)
        same(\.rcvOoopack)
        same(\.totalRTOTime)
        same(\.ecnNegotiated)
        // Without tcpi_bytes_retrans the bytes sent fall back on bytes_acked, which a longer struct
        // replaces; the quality counters past it are 0 where the struct lacks them.
        if half.counters != nil { invariant(full.counters != nil, "counters lost in a longer struct") }
        if half.bytesRetrans != nil, let short = half.counters, let long = full.counters {
            invariant(
                (short.bytesSent, short.bytesReceived, short.packetsSent, short.packetsReceived, short.retransmits)
                    == (long.bytesSent, long.bytesReceived, long.packetsSent, long.packetsReceived, long.retransmits),
                "counters differ")
        }
        if half.totalRTOTime != nil { invariant(half.counters == full.counters, "counters differ") }
    }
}
