internal import CLinux
import CNMSystem
import Glibc

/// What `SockDiagSocket` and `DestroyListener` need from a netlink socket. Tests conform to it to replay
/// recorded or hand-cut kernel bytes.
public protocol NetlinkTransport: AnyObject {
    /// The port id the kernel addresses replies to (their `nlmsg_pid`).
    var portID: UInt32 { get }

    /// Sends one request datagram to the kernel.
    func send(_ request: UnsafeRawBufferPointer) throws(NetlinkError)

    /// Receives one datagram into `buffer` and returns its length, or nil when nothing arrived: right away when
    /// `wait` is false, within the socket's receive timeout otherwise. A datagram longer than `buffer` throws
    /// `.truncated`; notifications the kernel dropped because the receive queue was full throw
    /// `.system(errno: ENOBUFS)`.
    func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(NetlinkError) -> Int?

    /// The file descriptor a reader thread may wait on with poll(2); nil for a transport that has none.
    var pollDescriptor: Int32? { get }
}

extension NetlinkTransport {
    public var pollDescriptor: Int32? { nil }
}

/// Bytes per receive. The kernel fills a dump datagram up to about 32 KiB when the reader's buffer allows it.
let receiveBufferSize = 64 * 1024

/// The memory one netlink reader receives datagrams into, freed with its owner.
final class ReceiveBuffer {
    let bytes = UnsafeMutableRawBufferPointer.allocate(
        byteCount: receiveBufferSize, alignment: MemoryLayout<UInt64>.alignment)

    deinit { bytes.deallocate() }
}

/// A `NETLINK_SOCK_DIAG` socket, created in the calling thread's network namespace or in another one; a socket
/// stays bound to the namespace it was created in.
final class NetlinkSocket: NetlinkTransport {
    let portID: UInt32
    private let fd: Int32

    /// - Parameters:
    ///   - namespacePath: a network namespace file (`/proc/<pid>/ns/net`) to create the socket in.
    ///   - groups: multicast groups to join, as the `nl_groups` bitmask.
    ///   - nonBlocking: whether to open with SOCK_NONBLOCK.
    init(namespacePath: String?, groups: UInt32 = 0, nonBlocking: Bool = false) throws(NetlinkError) {
        let type = Int32(SOCK_RAW.rawValue | SOCK_CLOEXEC.rawValue | (nonBlocking ? SOCK_NONBLOCK.rawValue : 0))
        let open = { () throws(NetlinkError) -> Int32 in
            try systemCall("socket(NETLINK_SOCK_DIAG)") {
                socket(AF_NETLINK, type, cnm_linux_netlink_sock_diag)
            }
        }
        let fd: Int32
        if let namespacePath {
            fd = try NetworkNamespace.run(in: namespacePath, entering: NetlinkError.init, open)
        } else {
            fd = try open()
        }
        var port: UInt32 = 0
        do {
            try systemCall("bind(NETLINK_SOCK_DIAG, groups \(groups))") {
                cnm_linux_netlink_bind(fd, groups)
            }
            try systemCall("getsockname(NETLINK_SOCK_DIAG)") { cnm_linux_netlink_port_id(fd, &port) }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
        portID = port
    }

    deinit {
        close(fd)
    }

    var pollDescriptor: Int32? { fd }

    func send(_ request: UnsafeRawBufferPointer) throws(NetlinkError) {
        let sent = try systemCall("send(NETLINK_SOCK_DIAG)") {
            Glibc.send(fd, request.baseAddress, request.count, 0)
        }
        guard sent == request.count else {
            throw NetlinkError(.system(errno: EMSGSIZE), "send(NETLINK_SOCK_DIAG) sent \(sent) of \(request.count)")
        }
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool) throws(NetlinkError) -> Int? {
        // MSG_TRUNC makes recv return the datagram's real length, so a cut datagram is seen, not parsed.
        let flags = Int32(MSG_TRUNC) | (wait ? 0 : Int32(MSG_DONTWAIT))
        while true {
            let received = recv(fd, buffer.baseAddress, buffer.count, flags)
            if received >= 0 {
                guard received <= buffer.count else {
                    throw NetlinkError(.truncated, "datagram of \(received) bytes, buffer of \(buffer.count)")
                }
                return received
            }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil  // EWOULDBLOCK is the same number on Linux
            default: throw NetlinkError.system("recv(NETLINK_SOCK_DIAG)")
            }
        }
    }

    /// Sets an integer socket option at SOL_SOCKET.
    func setOption(_ name: Int32, _ value: Int32, _ label: String) throws(NetlinkError) {
        var value = value
        try systemCall("setsockopt(\(label))") {
            setsockopt(fd, SOL_SOCKET, name, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// How long a waiting receive blocks before it gives up.
    func setReceiveTimeout(seconds: Int) throws(NetlinkError) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        try systemCall("setsockopt(SO_RCVTIMEO)") {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
    }
}
