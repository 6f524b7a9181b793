import CNMIntakeProto
import SwiftProtobuf

/// The process intake's message envelope: a 16-byte little-endian header, then the body encoded as the
/// header says. We always send version 3, zstd-compressed protobuf, type 22 (collector connections).
public struct IntakeMessageHeader: Sendable, Equatable {
    public static let length = 16
    public static let version3: UInt8 = 3
    public static let encodingZstdProtobuf: UInt8 = 2
    public static let typeCollectorConnections: UInt8 = 22

    public var version = version3
    public var encoding = encodingZstdProtobuf
    public var type = typeCollectorConnections
    /// Unused by agents: always 0.
    public var subscriptionID: UInt8 = 0
    public var orgID: Int32 = 0
    public var timestampMilliseconds: Int64

    public init(timestampMilliseconds: Int64) {
        self.timestampMilliseconds = timestampMilliseconds
    }

    /// version u8, encoding u8, type u8, subscription id u8, org id i32, timestamp i64.
    public var bytes: [UInt8] {
        var out: [UInt8] = [version, encoding, type, subscriptionID]
        out.reserveCapacity(Self.length)
        out.appendLittleEndian(orgID)
        out.appendLittleEndian(timestampMilliseconds)
        return out
    }

    public init?(parsing data: some Collection<UInt8>) {
        let b = Array(data.prefix(Self.length))
        guard b.count == Self.length, let org = b.readLittleEndian(Int32.self, at: 4),
            let timestamp = b.readLittleEndian(Int64.self, at: 8)
        else { return nil }
        version = b[0]
        encoding = b[1]
        type = b[2]
        subscriptionID = b[3]
        orgID = org
        timestampMilliseconds = timestamp
    }
}

/// Why a body could not be built or read.
public struct IntakeMessageError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

public enum IntakeMessage {
    /// Header and zstd-compressed protobuf, ready to POST.
    public static func encode(
        _ message: Datadog_ProcessAgent_CollectorConnections, timestampMilliseconds: Int64
    ) throws(IntakeMessageError) -> [UInt8] {
        let serialized: [UInt8]
        do {
            serialized = try message.serializedBytes()
        } catch {
            throw IntakeMessageError(description: "cannot serialise the message: \(error)")
        }
        return try encode(serialized: serialized, timestampMilliseconds: timestampMilliseconds)
    }

    /// Header and zstd-compressed protobuf from a message's serialised bytes.
    public static func encode(serialized: [UInt8], timestampMilliseconds: Int64) throws(IntakeMessageError) -> [UInt8] {
        do {
            return IntakeMessageHeader(timestampMilliseconds: timestampMilliseconds).bytes
                + (try Zstd.compress(serialized))
        } catch {
            throw IntakeMessageError(description: "\(error)")
        }
    }

    /// The reverse of `encode`, for tests and tools: checks the header and decodes the body.
    public static func decode(_ body: [UInt8]) throws(IntakeMessageError) -> (
        header: IntakeMessageHeader, message: Datadog_ProcessAgent_CollectorConnections
    ) {
        guard let header = IntakeMessageHeader(parsing: body) else {
            throw IntakeMessageError(description: "body shorter than the 16-byte header")
        }
        guard header.version == IntakeMessageHeader.version3,
            header.encoding == IntakeMessageHeader.encodingZstdProtobuf,
            header.type == IntakeMessageHeader.typeCollectorConnections
        else {
            throw IntakeMessageError(
                description:
                    "unexpected header: version \(header.version), encoding \(header.encoding), type \(header.type)")
        }
        do {
            let serialized = try Zstd.decompress(body.dropFirst(IntakeMessageHeader.length))
            return (header, try Datadog_ProcessAgent_CollectorConnections(serializedBytes: serialized))
        } catch {
            throw IntakeMessageError(description: "cannot decode the body: \(error)")
        }
    }
}
