internal import CLinux
import CNMModel
import Glibc
import Synchronization

/// Receives the kernel's notifications of destroyed TCP and UDP sockets (IPv4 and IPv6) in one network namespace,
/// each with the socket's final `tcp_info`: the counters of a socket that closed between two dumps.
///
/// The kernel drops notifications once the socket's receive queue is full, and a queue fills in about
/// a second of closes at 10,000 sockets per second. `DestroyNotificationPump` therefore reads every
/// listener as its notifications arrive, into the listener's pending list; `drain` takes that list
/// together with whatever is still queued, so it misses nothing destroyed before it was called.
public final class DestroyListener: @unchecked Sendable {
    /// What one `drain` took; until then, what was read and not yet taken.
    public struct Drained: Sendable {
        /// Final observations of sockets with a peer, in the order the kernel sent them.
        public var observations: [SocketObservation] = []
        /// The times the kernel reported (`ENOBUFS`) that it dropped notifications because the queue was full;
        /// each time is one or more sockets whose final counters are gone.
        public var lost = 0
        /// Observations read but not kept because `maxPending` were already waiting.
        public var dropped = 0
        /// The last read that failed since the previous drain (a malformed datagram is skipped, the rest kept).
        public var failure: NetlinkError?
    }

    private let socket: any NetlinkTransport
    private let receiveBuffer = ReceiveBuffer()
    /// What was read and not yet taken. Guards the socket and the receive buffer too: the pump's thread and
    /// `drain` read the same socket.
    private let pending = Mutex(Drained())
    /// Observations kept between two drains; past it they are dropped and counted.
    public let maxPending: Int
    /// `maxPending` where no memory budget sets it: 2 s of closes at over 100,000 sockets a second.
    public static let defaultMaxPending = 1 << 18

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
        namespacePath: String? = nil, receiveBufferBytes: Int32 = DestroyListener.receiveBufferBytes,
        maxPending: Int = DestroyListener.defaultMaxPending
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
        self.init(socket, maxPending: maxPending)
    }

    /// Listens through `socket`: the kernel's, or a test's replaying recorded bytes.
    public init(_ socket: any NetlinkTransport, maxPending: Int = DestroyListener.defaultMaxPending) {
        self.socket = socket
        self.maxPending = max(1, maxPending)
    }

    /// What the pump waits on.
    var pollDescriptor: Int32? { socket.pollDescriptor }

    /// Everything read since the last drain and everything still queued, without blocking.
    ///
    /// Notifications come in state `.close` with inode 0. Those without a peer (remote port 0) are left out: they
    /// carry no flow. They are listeners, sockets that never connected, and TCP sockets the application aborted
    /// (`close` with SO_LINGER 0, or `connect(AF_UNSPEC)`): `tcp_disconnect` zeroes their counters and peer port
    /// before the socket is destroyed (measured on 6.18), so their final counters are lost, as if unnotified.
    public func drain(netns: UInt64) -> Drained {
        pending.withLock { pending in
            read(netns: netns, into: &pending)
            defer { pending = Drained() }
            return pending
        }
    }

    /// Observations read and waiting for the next drain.
    public var pendingCount: Int { pending.withLock { $0.observations.count } }

    /// Reads everything queued into the pending list: the pump calls it when the socket is readable.
    func collect(netns: UInt64) {
        pending.withLock { read(netns: netns, into: &$0) }
    }

    /// With the lock held: reads until the queue is empty. A datagram that does not parse is counted as the
    /// failure and skipped; the ones before and after it are kept.
    private func read(netns: UInt64, into pending: inout Drained) {
        let buffer = receiveBuffer.bytes
        var reply = SockDiagReply(netns: netns, transport: nil)
        defer {
            for observation in reply.observations where observation.remote.port != 0 {
                if pending.observations.count < maxPending {
                    pending.observations.append(observation)
                } else {
                    pending.dropped += 1
                }
            }
        }
        while true {
            let count: Int?
            do {
                count = try socket.receive(into: buffer, wait: false)
            } catch let error where error.code == .system(errno: ENOBUFS) {
                pending.lost += 1
                continue
            } catch {
                pending.failure = error
                return
            }
            guard let count else { return }
            do {
                try reply.consume(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            } catch {
                pending.failure = error
            }
        }
    }
}
