import Foundation
import Testing

/// The shared fixtures sit beside the repository: `<root>/../shared/fixtures`, where the root is
/// three levels up from this file (Tests/CNMDockerTests/Fixtures.swift).
enum Fixtures {
    static let docker = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Tests/CNMDockerTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository root
        .deletingLastPathComponent()
        .appendingPathComponent("shared/fixtures/docker")

    static func data(_ relativePath: String) throws -> Data {
        let url = docker.appendingPathComponent(relativePath)
        try #require(
            FileManager.default.fileExists(atPath: url.path),
            "fixture missing: \(url.path) (shared/ must be checked out beside the repository)"
        )
        return try Data(contentsOf: url)
    }
}
