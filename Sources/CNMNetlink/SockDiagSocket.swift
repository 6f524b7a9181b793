internal import CLinux
import CNMModel
import Glibc

/// Dumps the TCP and UDP sockets of one network namespace through `NETLINK_SOCK_DIAG` (what `ss` uses).
///
/// The socket stays bound to the namespace it was created in, so one `SockDiagSocket` per namespace is opened once
/// and reused. One dump at a time: the type is not `Sendable`.
public final class SockDiagSocket {
    private let socket: any NetlinkTransport
    /// Receives replies and holds requests; allocated once for the socket's life.
    private let receiveBuffer = ReceiveBuffer()
    private var buffer: UnsafeMutableRawBufferPointer { receiveBuffer.bytes }
    private var sequence: UInt32 = 0

    /// How long a dump waits for the kernel's next datagram before it fails instead of hanging the caller.
    public static let replyTimeoutSeconds = 5

    /// Every state `TCPState` knows, 1 `ESTABLISHED` through 12 `NEW_SYN_RECV` (bit n is state n), `LISTEN`
    /// included; UDP sockets are in 1 (connected) or 7 (not connected).
    private static let allStates: UInt32 = 0x1FFE

    /// Opens the socket in the calling thread's network namespace, or, given `namespacePath` (such as
    /// `/proc/<pid>/ns/net`), inside that namespace: the thread enters it to create the socket and returns to its own
    /// namespace before this returns, also on error. Entering another namespace needs CAP_SYS_ADMIN.
    public convenience init(namespacePath: String? = nil) throws(NetlinkError) {
        let socket = try NetlinkSocket(namespacePath: namespacePath)
        try socket.setReceiveTimeout(seconds: Self.replyTimeoutSeconds)
        self.init(socket)
    }

    /// Dumps through `socket`: the kernel's, or a test's replaying recorded bytes.
    public init(_ socket: any NetlinkTransport) {
        self.socket = socket
    }

    /// Every socket of `transport` and `family` in the socket's namespace, in every state (listening TCP sockets and
    /// unconnected UDP sockets included), with `tcp_info` counters for TCP. `netns` is the namespace's inode, which
    /// goes into every `SocketID`.
    public func dump(_ transport: TransportProtocol, _ family: AddressFamily, netns: UInt64) throws(NetlinkError)
        -> [SocketObservation]
    {
        discardStaleReplies()
        sequence &+= 1
        try socket.send(request(transport, family))
        var reply = SockDiagReply(netns: netns, transport: transport, sequence: sequence, portID: socket.portID)
        while !reply.isComplete {
            guard let count = try socket.receive(into: buffer, wait: true) else {
                throw NetlinkError(.system(errno: ETIMEDOUT), "no sock_diag reply within \(Self.replyTimeoutSeconds) s")
            }
            try reply.consume(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
        return reply.observations
    }

    /// Reads what is left of an earlier dump that stopped on an error. The kernel refuses a new dump on a socket
    /// whose previous dump is still running, and produces each next part only when the queue is read.
    private func discardStaleReplies() {
        while (try? socket.receive(into: buffer, wait: false)) != nil {}
    }

    /// An `inet_diag_req_v2` dump request in `buffer`.
    private func request(_ transport: TransportProtocol, _ family: AddressFamily) -> UnsafeRawBufferPointer {
        let headerSize = MemoryLayout<cnm_linux_nlmsghdr>.size
        let size = headerSize + MemoryLayout<cnm_linux_inet_diag_req_v2>.size
        var header = cnm_linux_nlmsghdr()
        header.nlmsg_len = UInt32(size)
        header.nlmsg_type = cnm_linux_sock_diag_by_family
        header.nlmsg_flags = cnm_linux_nlm_f_request | cnm_linux_nlm_f_dump
        header.nlmsg_seq = sequence
        var body = cnm_linux_inet_diag_req_v2()
        body.sdiag_family = UInt8(family == .v4 ? AF_INET : AF_INET6)
        body.sdiag_protocol = UInt8(transport == .tcp ? IPPROTO_TCP : IPPROTO_UDP)
        // Extension n is requested by bit n-1; UDP has no tcp_info to give.
        body.idiag_ext = transport == .tcp ? UInt8(1 << (cnm_linux_inet_diag_info - 1)) : 0
        body.idiag_states = Self.allStates
        buffer.storeBytes(of: header, toByteOffset: 0, as: cnm_linux_nlmsghdr.self)
        buffer.storeBytes(of: body, toByteOffset: headerSize, as: cnm_linux_inet_diag_req_v2.self)
        return UnsafeRawBufferPointer(rebasing: buffer[..<size])
    }
}
