import CNMDocker
import CNMModel
import Foundation
import Testing

/// The tags beyond the container's own: unified service tags, Compose, and the labels and
/// environment variables users ask for, derived from a real inspect response.
@Suite struct ContainerTagRulesTests {
    /// moby's v1.24 reference inspect: labels com.example.vendor=Acme, com.example.license=GPL,
    /// com.example.version=1.0; one PATH variable; name /boring_euclid, image ubuntu.
    private func reference() throws -> ContainerMetadata {
        let data = try Fixtures.data("moby-api-v1.24/container-inspect.example1.json")
        return ContainerMetadata(
            inspect: try JSONDecoder().decode(DockerContainerInspect.self, from: data), keepingEnv: ["PATH"])
    }

    /// Of a container's environment only what a tag rule names is kept: by default the unified
    /// service variables, so a PATH (or a password) is not held in memory.
    @Test func onlyTheEnvironmentVariablesTagRulesNameAreKept() throws {
        let data = try Fixtures.data("moby-api-v1.24/container-inspect.example1.json")
        let inspect = try JSONDecoder().decode(DockerContainerInspect.self, from: data)
        #expect(inspect.config?.env?.contains { $0.hasPrefix("PATH=") } == true)
        #expect(ContainerMetadata(inspect: inspect).env.isEmpty)
        #expect(ContainerMetadata(inspect: inspect, keepingEnv: ["PATH"]).env.keys.sorted() == ["PATH"])
    }

    @Test func labelsAndEnvironmentAskedForBecomeTags() throws {
        let metadata = try reference()
        let tags = metadata.tags(
            labelsAsTags: ["com.example.vendor": "vendor", "com.example.version": "app_version", "absent": "x"],
            envAsTags: ["PATH": "search_path", "MISSING": "y"]
        )
        #expect(tags.contains("vendor:Acme"))
        #expect(tags.contains("app_version:1.0"))
        #expect(tags.contains("search_path:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
        #expect(!tags.contains { $0.hasPrefix("x:") || $0.hasPrefix("y:") }, "absent values give no tag: \(tags)")
        #expect(!tags.contains { $0.hasPrefix("license:") }, "only the labels asked for")
        #expect(Array(tags.prefix(2)) == ["container_name:boring_euclid", "container_id:\(metadata.id)"])
        // Without rules, only the container's own tags.
        #expect(
            metadata.tags == ["container_name:boring_euclid", "container_id:\(metadata.id)"]
                + metadata.imageReference!.tags)
    }

    @Test func unifiedServiceTagsPreferLabelsOverEnvironment() throws {
        var metadata = try reference()
        metadata.env["DD_SERVICE"] = "from-env"
        metadata.env["DD_ENV"] = "staging"
        metadata.env["DD_VERSION"] = ""
        metadata.labels["com.datadoghq.tags.service"] = "checkout"
        metadata.labels["com.datadoghq.tags.version"] = "2.4.1"
        let tags = metadata.tags()
        #expect(tags.contains("service:checkout"))
        #expect(!tags.contains("service:from-env"))
        #expect(tags.contains("env:staging"))
        #expect(tags.contains("version:2.4.1"))
    }

    @Test func composeLabelsBecomeComposeTags() throws {
        var metadata = try reference()
        metadata.labels["com.docker.compose.service"] = "web"
        metadata.labels["com.docker.compose.project"] = "shop"
        let tags = metadata.tags()
        #expect(tags.contains("compose_service:web"))
        #expect(tags.contains("compose_project:shop"))
    }

    @Test func excludeAndIncludeFilters() throws {
        let configuration = try Configuration(environment: [
            "DD_CONTAINER_EXCLUDE": "name:^redis image:^ubuntu:latest$",
            "DD_CONTAINER_INCLUDE": "name:redis-keep",
        ])
        let ubuntu = try reference()
        let images = [ubuntu.image, ubuntu.imageReference?.dockerImage].compactMap { $0 }
        #expect(images == ["ubuntu", "ubuntu:latest"])
        // Matched by its normalized image (given as plain `ubuntu`).
        #expect(configuration.excludes(containerName: ubuntu.name, images: images))
        #expect(!configuration.excludes(containerName: ubuntu.name, images: ["ubuntu:22.04"]))
        #expect(configuration.excludes(containerName: "redis-cache", images: ["redis:7"]))
        #expect(!configuration.excludes(containerName: "redis-keep", images: ["redis:7"]), "include wins")
        #expect(!configuration.excludes(containerName: "web", images: ["nginx:1.27"]))
    }
}

@Suite struct PublishedPortTests {
    @Test func listEntryGivesThePublishedPorts() throws {
        let list = try JSONDecoder().decode(
            [DockerContainerSummary].self, from: Fixtures.data("moby-api-v1.24/containers-list.example1.json"))
        let first = try #require(list.first)
        let inspect = try JSONDecoder().decode(DockerContainerInspect.self, from: Data(#"{"Id": "\#(first.id)"}"#.utf8))
        let metadata = ContainerMetadata(inspect: inspect, summary: first)
        // {"PrivatePort": 2222, "PublicPort": 3333, "Type": "tcp"}: published on every host address.
        #expect(metadata.publishedPorts == [.init(transport: .tcp, hostPort: 3333)])
        // The others publish nothing.
        for entry in list.dropFirst() {
            let other = try JSONDecoder().decode(
                DockerContainerInspect.self, from: Data(#"{"Id": "\#(entry.id)"}"#.utf8))
            #expect(ContainerMetadata(inspect: other, summary: entry).publishedPorts.isEmpty)
        }
    }
}
