import CNMDocker
import CNMModel
import Foundation
import Testing

/// Real Engine API responses (docker-java captures, moby's v1.24 reference) decode, and the tags
/// derived from them are the values in the files.
@Suite struct FixtureDecodingTests {
    private func decode<T: Decodable>(_ type: T.Type, _ fixture: String) throws -> T {
        try JSONDecoder().decode(type, from: Fixtures.data(fixture))
    }

    /// Keeps PATH too, to check that the environment decodes.
    private func inspect(_ fixture: String) throws -> ContainerMetadata {
        ContainerMetadata(inspect: try decode(DockerContainerInspect.self, fixture), keepingEnv: ["PATH"])
    }

    private func address(_ text: String) -> IPAddress? { IPAddress(parsing: text) }

    @Test func inspectAPI122() throws {
        let metadata = try inspect("docker-java/v1.22-container-inspect-1.json")
        let id = "095351afe7b4995dfb3e965f9cfd3a07b1fe69198c50085a2cb7c2b5a5c9b62f"
        #expect(metadata.id == id)
        #expect(metadata.name == "drunk_golick")
        #expect(metadata.image == "busybox")
        #expect(metadata.labels.isEmpty)
        #expect(metadata.env.isEmpty)
        // The container was only created: its endpoint has no address yet, and no process (Pid 0).
        #expect(metadata.ipAddresses.isEmpty)
        #expect(metadata.pid == nil)
        let tags = [
            "container_name:drunk_golick", "container_id:\(id)", "image_name:busybox", "short_image:busybox",
            "image_tag:latest", "docker_image:busybox:latest",
        ]
        #expect(metadata.tags == tags)
    }

    @Test func inspectAPI124() throws {
        let metadata = try inspect("docker-java/v1.24-container-inspect-1.json")
        let id = "fc1243c01bbb791d9eca64204d76f72fc47fbebbca892d7dd0a5cd0e4e346045"
        #expect(metadata.id == id)
        #expect(metadata.name == "small_hodgkin")
        #expect(metadata.ipAddresses == [address("172.17.0.2")])
        #expect(metadata.pid == 10912)
        #expect(!metadata.isECSPause)
        let tags = [
            "container_name:small_hodgkin", "container_id:\(id)", "image_name:busybox", "short_image:busybox",
            "image_tag:latest", "docker_image:busybox:latest",
        ]
        #expect(metadata.tags == tags)
    }

    @Test func inspectAPI138() throws {
        let metadata = try inspect("docker-java/v1.38-container-inspect-lcow.json")
        let id = "35da02ca897bd378ee52be3066c847fee396ba1a28a00b4be36f42c6686bf556"
        #expect(metadata.name == "cranky_clarke")
        #expect(metadata.ipAddresses == [address("172.17.18.123")])
        let tags = [
            "container_name:cranky_clarke", "container_id:\(id)", "image_name:microsoft/nanoserver",
            "short_image:nanoserver", "image_tag:latest", "docker_image:microsoft/nanoserver:latest",
        ]
        #expect(metadata.tags == tags)
    }

    @Test func inspectMobyReference() throws {
        let metadata = try inspect("moby-api-v1.24/container-inspect.example1.json")
        #expect(metadata.id == "ba033ac4401106a3b513bc9d639eee123ad78ca3616b921167cd74b20e25ed39")
        #expect(metadata.name == "boring_euclid")
        let labels = ["com.example.vendor": "Acme", "com.example.license": "GPL", "com.example.version": "1.0"]
        #expect(metadata.labels == labels)
        #expect(metadata.env == ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
        #expect(metadata.ipAddresses == [address("172.17.0.2")])
        #expect(metadata.imageReference == ImageReference(parsing: "ubuntu"))
        #expect(metadata.tags.contains("docker_image:ubuntu:latest"))
    }

    @Test func listAPI122() throws {
        let list = try decode([DockerContainerSummary].self, "docker-java/v1.22-containers-json-filter1.json")
        try #require(list.count == 1)
        #expect(list[0].id == "095351afe7b4995dfb3e965f9cfd3a07b1fe69198c50085a2cb7c2b5a5c9b62f")
        #expect(list[0].names == ["/drunk_golick"])
        #expect(list[0].image == "busybox")
        #expect(list[0].imageID == "sha256:0cb40641836c461bc97c793971d84d758371ed682042457523e4ae701efe7ec9")
        #expect(list[0].networkSettings?.networks?["bridge"]?.ipAddress == "172.17.0.2")
    }

    @Test func listMobyReference() throws {
        let list = try decode([DockerContainerSummary].self, "moby-api-v1.24/containers-list.example1.json")
        #expect(list.map(\.id) == ["8dfafdbc3a40", "9cd87474be90", "3176a2479c92", "4cb07b47f9fb"])
        #expect(list.map(\.names) == [["/boring_feynman"], ["/coolName"], ["/sleepy_dog"], ["/running_cat"]])
        #expect(list.allSatisfy { $0.image == "ubuntu:latest" })
        #expect(list[0].labels?["com.example.vendor"] == "Acme")
        #expect(list[1].networkSettings?.networks?["bridge"]?.ipAddress == "172.17.0.8")
    }

    /// The list fills in what the inspect lacks: here the created container's address.
    @Test func listEntryCompletesInspect() throws {
        let list = try decode([DockerContainerSummary].self, "docker-java/v1.22-containers-json-filter1.json")
        var inspect = try decode(DockerContainerInspect.self, "docker-java/v1.22-container-inspect-1.json")
        inspect.networkSettings = nil
        let metadata = ContainerMetadata(inspect: inspect, summary: list[0])
        #expect(metadata.ipAddresses == [address("172.17.0.2")])
    }

    /// Only the id is required; nulls and absent fields are tolerated.
    @Test func sparseInspectDecodes() throws {
        let json = #"{"Id": "abc", "Config": {"Image": null, "Env": null, "Labels": null}, "NetworkSettings": {}}"#
        let inspect = try JSONDecoder().decode(DockerContainerInspect.self, from: Data(json.utf8))
        let metadata = ContainerMetadata(inspect: inspect)
        #expect(metadata == ContainerMetadata(id: "abc", name: ""))
        #expect(metadata.tags == ["container_id:abc"])
    }
}
