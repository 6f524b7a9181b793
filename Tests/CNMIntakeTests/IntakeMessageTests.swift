import CNMIntakeProto
import Testing

@testable import CNMIntake

@Suite struct IntakeMessageTests {
    @Test func headerIsSixteenLittleEndianBytes() {
        let header = IntakeMessageHeader(timestampMilliseconds: 0x0102_0304_0506_0708)
        #expect(
            header.bytes == [3, 2, 22, 0, 0, 0, 0, 0, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
        #expect(IntakeMessageHeader(parsing: header.bytes) == header)
    }

    @Test func bodyIsTheHeaderThenAZstdFrameOfTheProtobuf() throws {
        var message = Datadog_ProcessAgent_CollectorConnections()
        message.hostName = "host-1"
        message.groupID = 7
        message.groupSize = 2
        var connection = Datadog_ProcessAgent_Connection()
        connection.pid = 42
        connection.lastBytesSent = 123_456_789_012
        connection.laddr.ip = "10.0.0.1"
        connection.laddr.port = 5000
        connection.tcpFailuresByErrCode = [111: 3]
        message.connections = [connection]
        message.containerForPid = [42: "abc"]

        let body = try IntakeMessage.encode(message, timestampMilliseconds: 1_700_000_000_123)
        #expect(Array(body.prefix(4)) == [3, 2, 22, 0])
        // zstd's frame magic number, little-endian, right after the header.
        #expect(Array(body[16..<20]) == [0x28, 0xB5, 0x2F, 0xFD])
        let decompressed = try Zstd.decompress(body.dropFirst(16))
        #expect(try Datadog_ProcessAgent_CollectorConnections(serializedBytes: decompressed) == message)

        let (header, decoded) = try IntakeMessage.decode(body)
        #expect(header.timestampMilliseconds == 1_700_000_000_123)
        #expect(decoded == message)
    }

    @Test func decodingRefusesAnotherHeader() throws {
        var body = try IntakeMessage.encode(Datadog_ProcessAgent_CollectorConnections(), timestampMilliseconds: 1)
        body[2] = 12
        #expect(throws: IntakeMessageError.self) { try IntakeMessage.decode(body) }
        #expect(throws: IntakeMessageError.self) { try IntakeMessage.decode([3, 2, 22]) }
    }

    @Test func zstdRoundTripsAndRejectsGarbage() throws {
        let input = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7 / 13) }
        let compressed = try Zstd.compress(input)
        #expect(compressed.count < input.count)
        #expect(try Zstd.decompress(compressed) == input)
        #expect(throws: ZstdError.self) { try Zstd.decompress([1, 2, 3, 4, 5, 6, 7, 8]) }
    }

    /// A frame is kept for as long as its message waits in the queue: it must not hold the memory of
    /// the bound it was written into (the size of its input, and more).
    @Test func aFrameHoldsOnlyItsOwnBytes() throws {
        let input = [UInt8](repeating: 42, count: 1 << 20)
        let compressed = try Zstd.compress(input)
        #expect(compressed.count < 1024)
        #expect(compressed.capacity < 4096, "capacity \(compressed.capacity) for a frame of \(compressed.count) bytes")
        let fromPointer = try input.withUnsafeBytes { try Zstd.compress($0, level: 1) }
        #expect(fromPointer.capacity < 4096)
        #expect(try Zstd.decompress(fromPointer) == input)
    }
}
