import Glibc

/// A failed system call in a test's own plumbing, with errno's text.
public struct SystemCallError: Error, CustomStringConvertible {
    public var description: String
    public var errno: Int32

    public init(_ call: String, errno code: Int32 = Glibc.errno) {
        errno = code
        description = "\(call): \(String(cString: strerror(code)))"
    }
}
