internal import CLinux
import CNMModel
import Glibc

/// Receives the kernel's notifications of destroyed TCP and UDP sockets (IPv4 and IPv6) in one network namespace,
/// each with the socket's final `tcp_info`: the counters of a socket that closed between two dumps.
public final class DestroyListener {
    private let socket: any NetlinkTransport
    private let receiveBuffer = ReceiveBuffer()
    private var buffer: UnsafeMutableRawBufferPointer { receiveBuffer.bytes }

    /// Receive queue asked for, so a burst of closes between two drains fits.
    public static let receiveBufferBytes: Int32 = 8 << 20

    /// Joins the destroy groups in the calling thread's network namespace, or inside the one at `namespacePath`
    /// (entered the way `SockDiagSocket` does). The socket is non-blocking.
    ///
    /// Joining needs no capability on mainline kernels: sock_diag lets any process receive its groups
    /// (`NL_CFG_F_NONROOT_RECV`). Measured on 6.18, a process with uid 65534 and no capabilities joins and receives
    /// the notifications of every socket in its namespace. A kernel or security module that refuses throws
    /// `.permissionDenied`. Without CAP_NET_ADMIN the receive queue is capped at `net.core.rmem_max`.
    ///
    /// `receiveBufferBytes` is the queue asked for (the kernel doubles it, and keeps a floor).
    public convenience init(
        namespacePath: String? = nil, receiveBufferBytes: Int32 = DestroyListener.receiveBufferBytes
    ) throws(NetlinkError) {
        let groups = [
            cnm_linux_sknlgrp_inet_tcp_destroy, cnm_linux_sknlgrp_inet6_tcp_destroy, cnm_linux_sknlgrp_inet_udp_destroy,
            cnm_linux_sknlgrp_inet6_udp_destroy,
        ].reduce(UInt32(0)) { $0 | 1 << ($1 - 1) }
        let socket = try NetlinkSocket(namespacePath: namespacePath, groups: groups, nonBlocking: true)
        // SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN; SO_RCVBUF is capped by it.
        do {
            try socket.setOption(SO_RCVBUFFORCE, receiveBufferBytes, "SO_RCVBUFFORCE")
        } catch {
            try socket.setOption(SO_RCVBUF, receiveBufferBytes, "SO_RCVBUF")
        }
        self.init(socket)
    }

    /// Listens through `socket`: the kernel's, or a test's replaying recorded bytes.
    public init(_ socket: any NetlinkTransport) {
        self.socket = socket
    }

    /// Everything queued, without blocking. `lost` counts the times the kernel reported (`ENOBUFS`) that it dropped
    /// notifications because the queue was full; each time is one or more sockets whose final counters are gone.
    ///
    /// Notifications come in state `.close` with inode 0. Those without a peer (remote port 0) are left out: they
    /// carry no flow. They are listeners, sockets that never connected, and TCP sockets the application aborted
    /// (`close` with SO_LINGER 0, or `connect(AF_UNSPEC)`): `tcp_disconnect` zeroes their counters and peer port
    /// before the socket is destroyed (measured on 6.18), so their final counters are lost, as if unnotified.
    public func drain(netns: UInt64) throws(NetlinkError) -> (observations: [SocketObservation], lost: Int) {
        var reply = SockDiagReply(netns: netns, transport: nil)
        var lost = 0
        while true {
            let count: Int?
            do {
                count = try socket.receive(into: buffer, wait: false)
            } catch let error where error.code == .system(errno: ENOBUFS) {
                lost += 1
                continue
            }
            guard let count else { return (reply.observations.filter { $0.remote.port != 0 }, lost) }
            try reply.consume(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }
}
