import CNMDocker
import Foundation
import Testing

@Suite struct ImageReferenceTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)

    struct Case: Sendable, CustomTestStringConvertible {
        var reference: String
        /// image_name, short_image, image_tag, docker_image
        var expected: (String, String, String, String)
        var testDescription: String { reference }
    }

    static let cases: [Case] = [
        Case(reference: "busybox", expected: ("busybox", "busybox", "latest", "busybox:latest")),
        Case(reference: "busybox:1.36", expected: ("busybox", "busybox", "1.36", "busybox:1.36")),
        Case(reference: "library/redis", expected: ("library/redis", "redis", "latest", "library/redis:latest")),
        Case(
            reference: "registry.example.com:5000/team/app:v2",
            expected: (
                "registry.example.com:5000/team/app", "app", "v2", "registry.example.com:5000/team/app:v2"
            )),
        // A registry port is not a tag.
        Case(
            reference: "registry.example.com:5000/team/app",
            expected: (
                "registry.example.com:5000/team/app", "app", "latest", "registry.example.com:5000/team/app:latest"
            )),
        Case(reference: "repo/app@\(digest)", expected: ("repo/app", "app", "latest", "repo/app:latest")),
        Case(reference: "app:v1@\(digest)", expected: ("app", "app", "v1", "app:v1")),
        Case(
            reference: "docker.io/library/ubuntu:22.04",
            expected: ("docker.io/library/ubuntu", "ubuntu", "22.04", "docker.io/library/ubuntu:22.04")),
    ]

    @Test(arguments: cases)
    func splitsLikeDatadog(_ test: Case) throws {
        let parsed = try #require(ImageReference(parsing: test.reference))
        let (name, short, tag, dockerImage) = test.expected
        #expect(parsed.name == name)
        #expect(parsed.shortName == short)
        #expect(parsed.tag == tag)
        #expect(parsed.dockerImage == dockerImage)
        let tags = ["image_name:\(name)", "short_image:\(short)", "image_tag:\(tag)", "docker_image:\(dockerImage)"]
        #expect(parsed.tags == tags)
    }

    @Test func keepsTheDigest() {
        #expect(ImageReference(parsing: "repo/app@\(Self.digest)")?.digest == Self.digest)
        #expect(ImageReference(parsing: "app:v1@\(Self.digest)")?.digest == Self.digest)
        #expect(ImageReference(parsing: "app:v1")?.digest == nil)
    }

    /// Ids name no repository: no tags rather than made-up ones.
    @Test(arguments: [digest, String(digest.dropFirst(7)), "", ":v1", "app:", "app@"])
    func refusesIdsAndEmptyParts(_ reference: String) {
        #expect(ImageReference(parsing: reference) == nil)
    }

    /// Created from an image id: the inspect's name is used when it has one, else no image tags.
    @Test func imageGivenAsID() throws {
        let id = "4f1b3c2a" + String(repeating: "0", count: 56)
        func metadata(configImage: String?, listImage: String?) throws -> ContainerMetadata {
            let config = configImage.map { #", "Config": {"Image": "\#($0)"}"# } ?? ""
            let inspect = #"{"Id": "c1", "Image": "sha256:\#(id)"\#(config)}"#
            let summary = listImage.map { #"{"Id": "c1", "Image": "\#($0)"}"# }
            return ContainerMetadata(
                inspect: try JSONDecoder().decode(DockerContainerInspect.self, from: Data(inspect.utf8)),
                summary: try summary.map {
                    try JSONDecoder().decode(DockerContainerSummary.self, from: Data($0.utf8))
                }
            )
        }
        // The list shows the id once the name moved to another image; Config.Image still has it.
        let renamed = try metadata(configImage: "team/app:v3", listImage: "sha256:\(id)")
        #expect(renamed.imageReference?.dockerImage == "team/app:v3")

        let byFullID = try metadata(configImage: "sha256:\(id)", listImage: "sha256:\(id)")
        #expect(byFullID.image == "sha256:\(id)")
        #expect(byFullID.imageReference == nil)
        #expect(byFullID.tags == ["container_id:c1"])

        // `docker run 4f1b3c2a` records the short id, which must not be taken for a repository.
        let byShortID = try metadata(configImage: "4f1b3c2a", listImage: nil)
        #expect(byShortID.imageReference == nil)

        let noConfig = try metadata(configImage: nil, listImage: "busybox:1.36")
        #expect(noConfig.imageReference?.dockerImage == "busybox:1.36")
    }
}
