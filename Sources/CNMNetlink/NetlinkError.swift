import CNMSystem
import Glibc

/// Every failure of this module: bad bytes from the kernel, an error the kernel answered, or a failed system call.
public struct NetlinkError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// The input ends inside a message or attribute, or a datagram did not fit the receive buffer.
        case truncated
        /// A length or field that cannot be right.
        case malformed
        /// The kernel answered with NLMSG_ERROR (or a failed NLMSG_DONE) carrying this errno.
        case kernel(errno: Int32)
        /// A system call failed with EPERM or EACCES: a capability is missing (CAP_SYS_ADMIN to enter another
        /// network namespace) or a security module refused.
        case permissionDenied
        /// A system call failed with this errno.
        case system(errno: Int32)
    }

    public var code: Code
    /// What was being done, for logs.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The error of a failed system call named `call`, from `errno`.
    static func system(_ call: String, errno number: Int32 = errno) -> NetlinkError {
        NetlinkError(SystemError(call, errno: number))
    }

    /// A failed system call, as this module reports it.
    public init(_ error: SystemError) {
        self.init(error.isPermissionDenied ? .permissionDenied : .system(errno: error.errno), error.description)
    }

    public var description: String {
        switch code {
        case .truncated: "truncated netlink input: \(message)"
        case .malformed: "malformed netlink input: \(message)"
        case .kernel(let number): "kernel error \(number) (\(String(cString: strerror(number)))): \(message)"
        case .permissionDenied, .system: message
        }
    }
}

/// A system call retried while interrupted (`retryingEINTR`), its failure as a `NetlinkError`.
@discardableResult
func systemCall<T: FixedWidthInteger>(_ call: String, _ body: () -> T) throws(NetlinkError) -> T {
    do {
        return try retryingEINTR(call, body)
    } catch {
        throw NetlinkError(error)
    }
}
