internal import CLinux
import CNMModel

/// `struct tcp_info` as the kernel sent it, in `INET_DIAG_INFO` or from `getsockopt(TCP_INFO)`.
///
/// Kernels append fields over time and send the struct at their own length (280 bytes on 6.18, fewer on older
/// kernels), so every field the given bytes do not cover is nil; bytes past `tcpi_total_rto_time` are ignored.
public struct TCPInfo: Sendable {
    /// How many bytes the kernel sent.
    public let length: Int
    /// The known part of the struct, zero past `length`; only read through `field(_:)`.
    private var raw = cnm_linux_tcp_info()

    /// Copies the known part of `bytes`; never reads past its end.
    public init(_ bytes: UnsafeRawBufferPointer) {
        length = bytes.count
        withUnsafeMutableBytes(of: &raw) { destination in
            let known = UnsafeRawBufferPointer(rebasing: bytes.prefix(destination.count))
            if !known.isEmpty { destination.copyMemory(from: known) }
        }
    }

    public init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { TCPInfo($0) }
    }

    /// The field at `path` if the kernel's struct reaches its end.
    private func field<T>(_ path: KeyPath<cnm_linux_tcp_info, T>) -> T? {
        guard let offset = MemoryLayout<cnm_linux_tcp_info>.offset(of: path), offset + MemoryLayout<T>.size <= length
        else { return nil }
        return raw[keyPath: path]
    }

    public var state: UInt8? { field(\.tcpi_state) }
    public var caState: UInt8? { field(\.tcpi_ca_state) }
    public var retransmits: UInt8? { field(\.tcpi_retransmits) }
    public var probes: UInt8? { field(\.tcpi_probes) }
    public var backoff: UInt8? { field(\.tcpi_backoff) }
    public var options: UInt8? { field(\.tcpi_options) }
    /// The peer's window scale (low nibble of byte 6).
    public var sndWscale: UInt8? { field(\.tcpi_wscale).map { $0 & 0xF } }
    /// This end's window scale (high nibble of byte 6).
    public var rcvWscale: UInt8? { field(\.tcpi_wscale).map { $0 >> 4 } }
    /// Bit 0 of byte 7.
    public var deliveryRateAppLimited: Bool? { field(\.tcpi_delivery_flags).map { $0 & 1 != 0 } }
    /// Bits 1-2 of byte 7.
    public var fastopenClientFail: UInt8? { field(\.tcpi_delivery_flags).map { $0 >> 1 & 3 } }
    public var rto: UInt32? { field(\.tcpi_rto) }
    public var ato: UInt32? { field(\.tcpi_ato) }
    public var sndMss: UInt32? { field(\.tcpi_snd_mss) }
    public var rcvMss: UInt32? { field(\.tcpi_rcv_mss) }
    public var unacked: UInt32? { field(\.tcpi_unacked) }
    public var sacked: UInt32? { field(\.tcpi_sacked) }
    public var lost: UInt32? { field(\.tcpi_lost) }
    public var retrans: UInt32? { field(\.tcpi_retrans) }
    public var fackets: UInt32? { field(\.tcpi_fackets) }
    public var lastDataSent: UInt32? { field(\.tcpi_last_data_sent) }
    public var lastAckSent: UInt32? { field(\.tcpi_last_ack_sent) }
    public var lastDataRecv: UInt32? { field(\.tcpi_last_data_recv) }
    public var lastAckRecv: UInt32? { field(\.tcpi_last_ack_recv) }
    public var pmtu: UInt32? { field(\.tcpi_pmtu) }
    public var rcvSsthresh: UInt32? { field(\.tcpi_rcv_ssthresh) }
    /// Smoothed RTT in microseconds.
    public var rtt: UInt32? { field(\.tcpi_rtt) }
    /// RTT mean deviation in microseconds.
    public var rttvar: UInt32? { field(\.tcpi_rttvar) }
    public var sndSsthresh: UInt32? { field(\.tcpi_snd_ssthresh) }
    public var sndCwnd: UInt32? { field(\.tcpi_snd_cwnd) }
    public var advmss: UInt32? { field(\.tcpi_advmss) }
    public var reordering: UInt32? { field(\.tcpi_reordering) }
    public var rcvRtt: UInt32? { field(\.tcpi_rcv_rtt) }
    public var rcvSpace: UInt32? { field(\.tcpi_rcv_space) }
    public var totalRetrans: UInt32? { field(\.tcpi_total_retrans) }
    public var pacingRate: UInt64? { field(\.tcpi_pacing_rate) }
    public var maxPacingRate: UInt64? { field(\.tcpi_max_pacing_rate) }
    public var bytesAcked: UInt64? { field(\.tcpi_bytes_acked) }
    public var bytesReceived: UInt64? { field(\.tcpi_bytes_received) }
    public var segsOut: UInt32? { field(\.tcpi_segs_out) }
    public var segsIn: UInt32? { field(\.tcpi_segs_in) }
    public var notsentBytes: UInt32? { field(\.tcpi_notsent_bytes) }
    public var minRtt: UInt32? { field(\.tcpi_min_rtt) }
    public var dataSegsIn: UInt32? { field(\.tcpi_data_segs_in) }
    public var dataSegsOut: UInt32? { field(\.tcpi_data_segs_out) }
    public var deliveryRate: UInt64? { field(\.tcpi_delivery_rate) }
    public var busyTime: UInt64? { field(\.tcpi_busy_time) }
    public var rwndLimited: UInt64? { field(\.tcpi_rwnd_limited) }
    public var sndbufLimited: UInt64? { field(\.tcpi_sndbuf_limited) }
    public var delivered: UInt32? { field(\.tcpi_delivered) }
    public var deliveredCe: UInt32? { field(\.tcpi_delivered_ce) }
    public var bytesSent: UInt64? { field(\.tcpi_bytes_sent) }
    public var bytesRetrans: UInt64? { field(\.tcpi_bytes_retrans) }
    public var dsackDups: UInt32? { field(\.tcpi_dsack_dups) }
    public var reordSeen: UInt32? { field(\.tcpi_reord_seen) }
    public var rcvOoopack: UInt32? { field(\.tcpi_rcv_ooopack) }
    public var sndWnd: UInt32? { field(\.tcpi_snd_wnd) }
    public var rcvWnd: UInt32? { field(\.tcpi_rcv_wnd) }
    public var rehash: UInt32? { field(\.tcpi_rehash) }
    /// Retransmission timeouts over the connection's life (Linux 6.7+).
    public var totalRTO: UInt16? { field(\.tcpi_total_rto) }
    public var totalRTORecoveries: UInt16? { field(\.tcpi_total_rto_recoveries) }
    public var totalRTOTime: UInt32? { field(\.tcpi_total_rto_time) }
    /// ECN (RFC 3168) was negotiated in the handshake: `TCPI_OPT_ECN` in `tcpi_options`.
    public var ecnNegotiated: Bool? { options.map { $0 & 8 != 0 } }
}

extension TCPInfo {
    /// The socket's counters as the model wants them, or nil when the struct predates `tcpi_segs_in` (Linux < 4.2).
    ///
    /// - `bytesSent` is `tcpi_bytes_sent - tcpi_bytes_retrans`: `bytes_sent` counts payload including
    ///   retransmissions. Kernels before 4.19 lack both; there it falls back to `tcpi_bytes_acked` minus 1 for the
    ///   SYN once anything was acked. Measured on 6.18, `bytes_acked` counts the SYN of a connecting socket but not
    ///   that of an accepted one, and the FIN once it is acked; so the fallback is exact for a connecting socket
    ///   until it closes and at most one byte off otherwise.
    /// - `bytesReceived` is `tcpi_bytes_received` as the kernel counts it, the peer's FIN included: the model
    ///   takes that byte off itself.
    /// - Packets are `tcpi_segs_out` / `tcpi_segs_in`; retransmits are `tcpi_total_retrans` (segments).
    /// - The TCP-quality counters are `tcpi_total_rto`, `tcpi_reord_seen`, `tcpi_rcv_ooopack` and
    ///   `tcpi_delivered_ce`, 0 on kernels too old to have them.
    public var counters: SocketCounters? {
        guard let bytesReceived, let segsOut, let segsIn, let totalRetrans, let bytesAcked else {
            return nil
        }
        let sent: UInt64
        if let bytesSent, let bytesRetrans {
            sent = bytesSent >= bytesRetrans ? bytesSent - bytesRetrans : 0
        } else {
            sent = bytesAcked > 0 ? bytesAcked - 1 : 0
        }
        return SocketCounters(
            bytesSent: sent, bytesReceived: bytesReceived, packetsSent: UInt64(segsOut),
            packetsReceived: UInt64(segsIn), retransmits: UInt64(totalRetrans),
            rtoCount: UInt64(totalRTO ?? 0), reorderingSeen: UInt64(reordSeen ?? 0),
            outOfOrderReceived: UInt64(rcvOoopack ?? 0), deliveredCE: UInt64(deliveredCe ?? 0))
    }
}
