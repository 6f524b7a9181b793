import Glibc

/// A failed system call: which call, on what, and the errno it set.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    public var errno: Int32
    /// The call and its object, such as `setns /proc/42/ns/net`.
    public var context: String

    public init(_ context: String, errno number: Int32 = Glibc.errno) {
        self.errno = number
        self.context = context
    }

    /// EPERM or EACCES: a capability is missing or a security module refused.
    public var isPermissionDenied: Bool { errno == EPERM || errno == EACCES }

    public var description: String { "\(context): \(String(cString: strerror(errno)))" }
}

/// Runs a system call that returns -1 and sets errno on failure, again while a signal interrupts it.
@discardableResult
public func retryingEINTR<T: FixedWidthInteger>(_ call: String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        if errno != EINTR { throw SystemError(call) }
    }
}
