internal import CLinux
import CNMModel
import Glibc

/// Parses what a `NETLINK_SOCK_DIAG` socket receives into observations, one datagram at a time: a dump reply
/// (`SOCK_DIAG_BY_FAMILY` messages over one or more datagrams, then `NLMSG_DONE`) or destroy notifications.
///
/// Reads only inside the given bytes: a message or attribute that does not fit throws `.truncated`, an
/// impossible length `.malformed`, and `NLMSG_ERROR` `.kernel(errno:)`.
public struct SockDiagReply: Sendable {
    /// The network namespace the sockets live in (its inode), part of every `SocketID`.
    public let netns: UInt64
    /// The transport of messages without an `INET_DIAG_PROTOCOL` attribute (the one a dump asked for); nil makes
    /// that attribute required.
    public let transport: TransportProtocol?
    /// When set, only messages with this `nlmsg_seq` and `nlmsg_pid` are taken: the replies to one request, not
    /// what is left of an earlier one.
    public let sequence: UInt32?
    public let portID: UInt32?

    public private(set) var observations: [SocketObservation] = []
    /// True once `NLMSG_DONE` arrived: the dump is complete.
    public private(set) var isComplete = false

    public init(netns: UInt64, transport: TransportProtocol?, sequence: UInt32? = nil, portID: UInt32? = nil) {
        self.netns = netns
        self.transport = transport
        self.sequence = sequence
        self.portID = portID
    }

    public mutating func consume(_ datagram: [UInt8]) throws(NetlinkError) {
        // withUnsafeBytes rethrows untyped errors; Result keeps the type.
        try datagram.withUnsafeBytes { bytes in Result { () throws(NetlinkError) in try consume(bytes) } }.get()
    }

    /// Parses every message of one datagram.
    public mutating func consume(_ datagram: UnsafeRawBufferPointer) throws(NetlinkError) {
        let headerSize = MemoryLayout<cnm_linux_nlmsghdr>.size
        var offset = 0
        while offset < datagram.count {
            let remaining = datagram.count - offset
            guard remaining >= headerSize else {
                throw NetlinkError(.truncated, "\(remaining) bytes at offset \(offset) cannot hold a message header")
            }
            let header = datagram.loadUnaligned(fromByteOffset: offset, as: cnm_linux_nlmsghdr.self)
            let length = Int(header.nlmsg_len)
            guard length >= headerSize else {
                throw NetlinkError(.malformed, "nlmsg_len \(length) at offset \(offset) is shorter than its header")
            }
            guard length <= remaining else {
                throw NetlinkError(.truncated, "message of \(length) bytes at offset \(offset) has \(remaining)")
            }
            let payload = UnsafeRawBufferPointer(rebasing: datagram[(offset + headerSize)..<(offset + length)])
            offset += aligned(length)
            if let sequence, header.nlmsg_seq != sequence { continue }
            if let portID, header.nlmsg_pid != portID { continue }
            switch header.nlmsg_type {
            case cnm_linux_sock_diag_by_family:
                if let observation = try observation(payload) { observations.append(observation) }
            case cnm_linux_nlmsg_done:
                // A dump that failed in the kernel ends with its negative errno here.
                if payload.count >= MemoryLayout<Int32>.size {
                    let status = payload.loadUnaligned(as: Int32.self)
                    if status < 0 { throw NetlinkError(.kernel(errno: Self.errno(status)), "dump ended with an error") }
                }
                isComplete = true
            case cnm_linux_nlmsg_error:
                guard payload.count >= MemoryLayout<cnm_linux_nlmsgerr>.size else {
                    throw NetlinkError(.truncated, "NLMSG_ERROR of \(payload.count) bytes")
                }
                let status = payload.loadUnaligned(as: cnm_linux_nlmsgerr.self).error
                // 0 is an acknowledgement, which nothing here asks for.
                if status < 0 { throw NetlinkError(.kernel(errno: Self.errno(status)), "sock_diag request refused") }
            default: continue  // NLMSG_NOOP and anything else carry no socket
            }
        }
    }

    /// One `inet_diag_msg` and its attributes; nil for a socket the model cannot represent (a protocol other than
    /// TCP or UDP, or a state `TCPState` does not know, such as 13 `TCP_BOUND_INACTIVE` of Linux 6.7+).
    private func observation(_ payload: UnsafeRawBufferPointer) throws(NetlinkError) -> SocketObservation? {
        let fixedSize = MemoryLayout<cnm_linux_inet_diag_msg>.size
        guard payload.count >= fixedSize else {
            throw NetlinkError(.truncated, "inet_diag_msg of \(payload.count) bytes, expected \(fixedSize)")
        }
        let message = payload.loadUnaligned(as: cnm_linux_inet_diag_msg.self)
        var info: UnsafeRawBufferPointer?
        var transport = self.transport
        var offset = fixedSize
        while offset < payload.count {
            let remaining = payload.count - offset
            let headerSize = MemoryLayout<cnm_linux_rtattr>.size
            guard remaining >= headerSize else {
                throw NetlinkError(.truncated, "\(remaining) bytes cannot hold an attribute header")
            }
            let attribute = payload.loadUnaligned(fromByteOffset: offset, as: cnm_linux_rtattr.self)
            let length = Int(attribute.rta_len)
            guard length >= headerSize else {
                throw NetlinkError(.malformed, "attribute length \(length) is shorter than its header")
            }
            guard length <= remaining else {
                throw NetlinkError(.truncated, "attribute of \(length) bytes has \(remaining)")
            }
            let value = UnsafeRawBufferPointer(rebasing: payload[(offset + headerSize)..<(offset + length)])
            offset += aligned(length)
            switch attribute.rta_type & cnm_linux_nla_type_mask {
            case cnm_linux_inet_diag_info: info = value
            case cnm_linux_inet_diag_protocol:
                guard let number = value.first else {
                    throw NetlinkError(.truncated, "empty INET_DIAG_PROTOCOL")
                }
                switch Int32(number) {
                case Int32(IPPROTO_TCP): transport = .tcp
                case Int32(IPPROTO_UDP): transport = .udp
                default: return nil
                }
            default: continue  // attributes nobody asked for, or newer than this code
            }
        }
        guard let transport else {
            throw NetlinkError(.malformed, "socket message without INET_DIAG_PROTOCOL")
        }
        guard let listedState = TCPState(rawValue: message.idiag_state) else { return nil }
        let tcpInfo = transport == .tcp ? info.map(TCPInfo.init) : nil
        // The state tcp_info carries was read next to its counters, which the socket lock holds
        // still; `idiag_state` was read before the rest of the message was built. A peer's FIN that
        // lands in between would show in `bytes_received` with a state that does not know of it yet.
        let state = tcpInfo?.state.flatMap(TCPState.init(rawValue:)) ?? listedState
        let id = message.id
        let local: IPAddress
        let remote: IPAddress
        switch Int32(message.idiag_family) {
        case AF_INET:
            local = .v4(UInt32(bigEndian: id.idiag_src.0))
            remote = .v4(UInt32(bigEndian: id.idiag_dst.0))
        case AF_INET6:
            local = Self.v6(id.idiag_src)
            remote = Self.v6(id.idiag_dst)
        default: throw NetlinkError(.malformed, "address family \(message.idiag_family) in an inet_diag message")
        }
        return SocketObservation(
            id: SocketID(netns: netns, cookie: UInt64(id.idiag_cookie.0) | UInt64(id.idiag_cookie.1) << 32),
            transport: transport, local: Endpoint(local, UInt16(bigEndian: id.idiag_sport)),
            remote: Endpoint(remote, UInt16(bigEndian: id.idiag_dport)), state: state,
            inode: UInt64(message.idiag_inode), counters: tcpInfo?.counters, rttMicros: tcpInfo?.rtt ?? 0,
            rttVarMicros: tcpInfo?.rttvar ?? 0, ecnNegotiated: tcpInfo?.ecnNegotiated ?? false)
    }

    /// The errno a negative status from the kernel carries; Int32.min, which has no positive
    /// counterpart, is no errno at all.
    static func errno(_ status: Int32) -> Int32 { status == .min ? EPROTO : -status }

    /// An IPv6 address from the four words of `idiag_src` / `idiag_dst`, which hold its bytes in network order.
    private static func v6(_ words: (UInt32, UInt32, UInt32, UInt32)) -> IPAddress {
        withUnsafeBytes(of: words) { bytes in
            .v6(
                high: UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self)),
                low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }
}

/// `NLMSG_ALIGN` / `NLA_ALIGN`: where the next message or attribute starts.
func aligned(_ length: Int) -> Int {
    let alignment = Int(cnm_linux_nlmsg_alignto)
    return (length + alignment - 1) & ~(alignment - 1)
}
