internal import CBPF
import CNMModel

/// Conversions between the programs' C records (cnm_bpf.h) and the model.
extension FlowRecord {
    init(_ c: cnm_flow_record) {
        let f = c.flow
        let t = f.tuple
        let v6 = t.family == 6
        let local = Endpoint(Self.address(t.saddr, v6: v6), t.sport)
        let remote = Endpoint(Self.address(t.daddr, v6: v6), t.dport)
        let transport: TransportProtocol = t.protocol == 17 ? .udp : .tcp
        var peer: Endpoint?
        if transport == .udp { peer = Endpoint(Self.address(c.key.raddr, v6: v6), c.key.rport) }
        let flags = Flags(rawValue: f.flags)
        self.init(
            id: ID(socket: c.key.sk, peer: peer, birth: flags.contains(.bornWatched) ? f.first_ns : 0),
            netns: f.netns,
            transport: transport,
            local: local,
            remote: remote,
            direction: t.direction == 1 ? .outgoing : t.direction == 2 ? .incoming : nil,
            state: TCPState(rawValue: t.state),
            pid: f.pid == 0 ? nil : Int32(bitPattern: f.pid),
            processName: f.pid == 0 ? nil : withUnsafeBytes(of: f.comm) { ProcessName(bytes: $0) },
            cgroupID: f.cgroup_id,
            inode: f.inode,
            hookCounters: SocketCounters(
                bytesSent: f.bytes_sent,
                bytesReceived: f.bytes_received,
                packetsSent: f.packets_sent,
                packetsReceived: f.packets_received
            ),
            kernelCounters: SocketCounters(
                bytesSent: f.tcp_bytes_sent,
                bytesReceived: f.tcp_bytes_received,
                packetsSent: UInt64(f.segs_out),
                packetsReceived: UInt64(f.segs_in),
                retransmits: UInt64(f.total_retrans),
                rtoCount: UInt64(f.total_rto),
                reorderingSeen: UInt64(f.reord_seen),
                outOfOrderReceived: UInt64(f.rcv_ooopack),
                deliveredCE: UInt64(f.delivered_ce)
            ),
            rttMicros: f.srtt_us,
            rttVarMicros: f.mdev_us,
            error: f.error,
            flags: flags
        )
        closedTag = c.key.closed_tag
    }

    /// The size of one record on the ring buffer (`struct cnm_flow_record`).
    package static let ringRecordSize = MemoryLayout<cnm_flow_record>.size

    /// A record from its bytes as the programs write them (for the collection benchmark).
    package init(ringRecord raw: UnsafeRawBufferPointer) {
        self.init(raw.loadUnaligned(as: cnm_flow_record.self))
    }

    /// A 16-byte address field (IPv4 in its first 4 bytes), read as big-endian integers.
    private static func address<T>(_ bytes: T, v6: Bool) -> IPAddress {
        withUnsafeBytes(of: bytes) { raw in
            if !v6 { return .v4(UInt32(bigEndian: raw.loadUnaligned(as: UInt32.self))) }
            return .v6(
                high: UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)),
                low: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }
}

extension cnm_flow_key {
    /// The table key of a flow (the deferred table's keys carry their closed tag).
    init(_ id: FlowRecord.ID, closedTag: UInt32) {
        self.init()
        sk = id.socket
        if let peer = id.peer {
            rport = peer.port
            withUnsafeMutableBytes(of: &raddr) { raw in
                switch peer.address {
                case .v4(let a):
                    withUnsafeBytes(of: a.bigEndian) { raw.copyMemory(from: $0) }
                case .v6(let high, let low):
                    withUnsafeBytes(of: high.bigEndian) { raw.copyMemory(from: $0) }
                    withUnsafeBytes(of: low.bigEndian) {
                        UnsafeMutableRawBufferPointer(rebasing: raw[8...]).copyMemory(from: $0)
                    }
                }
            }
        }
        closed_tag = closedTag
    }
}
