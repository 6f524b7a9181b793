import CNMDocker
import Foundation
import Testing

/// Against the machine's own dockerd: a container the test starts shows up with its tags.
@Suite struct RealDockerTests {
    static let image = "cnm-test/busybox:latest"

    /// Runs the docker CLI and returns its standard output, or fails with its standard error.
    @discardableResult
    private func docker(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["docker"] + arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: err, as: UTF8.self)
            throw CLIError(description: "docker \(arguments.joined(separator: " ")): \(message)")
        }
        return String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private struct CLIError: Error, CustomStringConvertible {
        var description: String
    }

    static func daemonAnswers() async -> Bool {
        do {
            try await DockerClient(timeout: .seconds(2)).ping()
            return true
        } catch {
            return false
        }
    }

    @Test(
        .enabled("needs dockerd answering on /var/run/docker.sock: run scripts/start-dockerd.sh") {
            await daemonAnswers()
        },
        .timeLimit(.minutes(1))
    )
    func startedContainerIsFound() async throws {
        do {
            try docker(["image", "inspect", Self.image])
        } catch {
            Issue.record("\(Self.image) is missing: run scripts/build-test-images.sh (\(error))")
            return
        }
        let name = "cnm-dtest-\(String(UInt32.random(in: .min ... .max), radix: 16))"
        // --pull never: no registry is reachable, and none should be tried.
        let id = try docker(["run", "-d", "--pull", "never", "--name", name, Self.image, "sleep", "60"])
        defer { _ = try? docker(["rm", "-f", id]) }

        let cache = DockerMetadataCache(client: try DockerClient())
        try await cache.refresh()
        let metadata = try #require(
            cache.metadata(forContainerID: id), "\(name) (\(id)) not in \(cache.containers.keys)")
        #expect(metadata.name == name)
        #expect(metadata.image == Self.image)
        for tag in [
            "container_name:\(name)", "container_id:\(id)", "image_name:cnm-test/busybox",
            "short_image:busybox",
            "image_tag:latest", "docker_image:cnm-test/busybox:latest",
        ] {
            #expect(metadata.tags.contains(tag))
        }
        // On the default bridge the container has an address.
        #expect(!metadata.ipAddresses.isEmpty)
        #expect(cache.health.failures.isEmpty)
    }
}
