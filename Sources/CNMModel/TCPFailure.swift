/// The errno values a TCP connection ends with, as Linux numbers them (`sk_err`) and as Datadog
/// keys `tcpFailuresByErrCode`. Named once here: the model is pure and has no Glibc to ask.
public enum TCPFailure {
    /// ECONNREFUSED: the SYN was answered by a reset.
    public static let refused: UInt32 = 111
    /// ECONNRESET: a reset arrived on an open connection.
    public static let reset: UInt32 = 104
    /// ETIMEDOUT: retransmissions (of the SYN or of data) ran out.
    public static let timedOut: UInt32 = 110
    /// EPIPE: a reset arrived after the peer's FIN.
    public static let brokenPipe: UInt32 = 32
}
