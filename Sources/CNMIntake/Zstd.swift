import CZstd

/// Why libzstd could not compress or decompress.
public struct ZstdError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { "zstd: \(message)" }
}

/// One-shot zstd, each call a single frame that records its content size.
public enum Zstd {
    /// Datadog's agent compresses intake messages at zstd's default level.
    public static let defaultLevel: Int32 = 3

    public static func compress(_ input: [UInt8], level: Int32 = defaultLevel) throws(ZstdError) -> [UInt8] {
        try input.withUnsafeBytes { source in Result { () throws(ZstdError) in try compress(source, level: level) } }
            .get()
    }

    public static func compress(_ source: UnsafeRawBufferPointer, level: Int32 = defaultLevel) throws(ZstdError)
        -> [UInt8]
    {
        let capacity = cnm_zstd_compress_bound(source.count)
        // The bound is the input's size and more; left unwritten, its pages are never touched, so a
        // frame of 220 KB from 12 MB of JSON costs 220 KB of memory, not 12 MB, while it is made.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        defer { scratch.deallocate() }
        var error: UnsafePointer<CChar>?
        let written = cnm_zstd_compress(scratch.baseAddress, capacity, source.baseAddress, source.count, level, &error)
        guard written > 0 else { throw ZstdError(message: error.map { String(cString: $0) } ?? "compression failed") }
        // A copy of exactly the frame, kept for as long as its message waits or its interval is retained.
        return Array(UnsafeRawBufferPointer(rebasing: scratch[..<written]))
    }

    /// Decompresses one frame, refusing to grow past `maxBytes`.
    public static func decompress(_ frame: some Collection<UInt8>, maxBytes: Int = 256 << 20) throws(ZstdError)
        -> [UInt8]
    {
        let input = Array(frame)
        let declared = input.withUnsafeBytes { cnm_zstd_frame_content_size($0.baseAddress, $0.count) }
        guard declared >= 0 else {
            throw ZstdError(message: declared == -1 ? "frame records no content size" : "not a zstd frame")
        }
        guard declared <= maxBytes else { throw ZstdError(message: "frame of \(declared) bytes is too large") }
        var output = [UInt8](repeating: 0, count: Int(declared))
        var error: UnsafePointer<CChar>?
        let written = output.withUnsafeMutableBytes { destination in
            input.withUnsafeBytes { source in
                cnm_zstd_decompress(
                    destination.baseAddress, destination.count, source.baseAddress, source.count, &error)
            }
        }
        // (size_t)-1, which Swift sees as -1, means failure; anything else must match the frame's size.
        guard written == Int(declared) else {
            throw ZstdError(message: error.map { String(cString: $0) } ?? "decompressed size differs from the frame's")
        }
        return output
    }
}
