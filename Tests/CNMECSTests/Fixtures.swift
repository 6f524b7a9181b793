import CNMECS
import Foundation
import Testing

/// The shared fixtures sit beside the repository: `<root>/../shared/fixtures`, where the root is
/// three levels up from this file (Tests/CNMECSTests/Fixtures.swift).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Tests/CNMECSTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository root
        .deletingLastPathComponent()
        .appendingPathComponent("shared/fixtures")

    /// A file under `shared/fixtures/ecs`.
    static func ecs(_ relativePath: String) throws -> Data {
        try data("ecs/" + relativePath)
    }

    static func data(_ relativePath: String) throws -> Data {
        let url = root.appendingPathComponent(relativePath)
        try #require(
            FileManager.default.fileExists(atPath: url.path),
            "fixture missing: \(url.path) (shared/ must be checked out beside the repository)"
        )
        return try Data(contentsOf: url)
    }

    static func task(_ relativePath: String) throws -> ECSTaskMetadata {
        try JSONDecoder().decode(ECSTaskMetadata.self, from: ecs(relativePath))
    }

    static func container(_ relativePath: String) throws -> ECSContainerMetadata {
        try JSONDecoder().decode(ECSContainerMetadata.self, from: ecs(relativePath))
    }
}
