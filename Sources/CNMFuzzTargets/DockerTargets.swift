import CNMDocker
import CNMECS
import CNMModel
import FoundationEssentials

extension FuzzTargets {
    /// The body of `GET /events`, decoded in one chunk and in chunks of 1 to 16 bytes (the size from
    /// the first byte).
    ///
    /// Checks that the events and the counts do not depend on where chunks end, and that every event
    /// delivered has an id and a time.
    public static func dockerEvents(_ input: [UInt8]) {
        func decode(_ chunks: [ArraySlice<UInt8>]) -> ([DockerEvent], DockerEventCounts) {
            var decoder = DockerEventDecoder()
            var events: [DockerEvent] = []
            for chunk in chunks { events += decoder.decode(chunk) }
            events += decoder.finish()
            return (events, decoder.counts)
        }
        let (events, counts) = decode([input[...]])
        let size = Int(input.first ?? 0) % 16 + 1
        let small = decode(stride(from: 0, to: input.count, by: size).map { input[$0..<min($0 + size, input.count)] })
        invariant(small.0 == events && small.1 == counts, "chunks of \(size) bytes decode otherwise than one")
        invariant(counts.events == UInt64(events.count), "\(counts.events) counted, \(events.count) delivered")
        for event in events {
            invariant(!event.containerID.isEmpty && event.time.nanosecondsSince1970 > 0, "event without id or time")
        }
    }

    /// A container's inspect, list entry or list (`GET /containers/{id}/json`, `GET /containers/json`),
    /// the same bytes tried as each, into the metadata and tags the agent keeps.
    ///
    /// Checks that addresses come out sorted and unique, published ports nonzero, and that the tags
    /// name the container's id once and hold no tag twice.
    public static func dockerContainer(_ input: [UInt8]) {
        let data = Data(input)
        let decoder = JSONDecoder()
        var summaries = (try? decoder.decode([DockerContainerSummary].self, from: data)) ?? []
        if let summary = try? decoder.decode(DockerContainerSummary.self, from: data) { summaries.append(summary) }
        var inspects: [DockerContainerInspect] = []
        if let inspect = try? decoder.decode(DockerContainerInspect.self, from: data) { inspects.append(inspect) }
        // A listed container whose inspect says nothing more, as from a daemon that fills in little.
        for summary in summaries.prefix(4) {
            if let bare = try? JSONEncoder().encode(["Id": summary.id]),
                let inspect = try? decoder.decode(DockerContainerInspect.self, from: bare)
            {
                inspects.append(inspect)
            }
        }
        let entries: [DockerContainerSummary?] = [nil] + summaries.prefix(4).map { $0 }
        for inspect in inspects {
            for summary in entries {
                checkContainer(ContainerMetadata(inspect: inspect, summary: summary))
            }
        }
    }

    private static func checkContainer(_ container: ContainerMetadata) {
        invariant(container.ipAddresses.isStrictlyAscending, "addresses not sorted or repeated")
        invariant(container.publishedPorts.allSatisfy { $0.hostPort > 0 }, "a published port 0")
        if let reference = container.imageReference {
            invariant(!reference.name.isEmpty && !reference.tag.isEmpty, "an image reference without name or tag")
        }
        let labels = container.labels.keys.sorted().prefix(3)
        let tags = container.tags(
            labelsAsTags: Dictionary(uniqueKeysWithValues: labels.map { ($0, "label_\($0)") }),
            envAsTags: ["DD_SERVICE": "service", "DD_VERSION": "app_version"])
        invariant(tags.filter { $0 == "container_id:\(container.id)" }.count == 1, "container_id tag not there once")
        invariant(Set(tags).count == tags.count, "a tag twice in \(tags)")
        _ = ecsTags(fromDockerLabels: container.labels)
        _ = container.isECSPause
    }

    /// An image name as given to `docker run`.
    ///
    /// Checks that a parsed reference has a name and a tag, and, for ASCII names (what registries
    /// accept), that `name:tag@digest` parses back to the same reference.
    public static func imageReference(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        guard let reference = ImageReference(parsing: text) else { return }
        invariant(!reference.name.isEmpty && !reference.tag.isEmpty, "reference without name or tag")
        invariant(!reference.shortName.contains("/"), "short name \(reference.shortName) has a slash")
        invariant(reference.tags.count == 4, "\(reference.tags.count) image tags")
        let again = reference.dockerImage + (reference.digest.map { "@" + $0 } ?? "")
        // Outside ASCII, grapheme clusters may join the `:` or `@` put back to their neighbours.
        guard text.utf8.allSatisfy({ $0 < 0x80 }), !again.hasPrefix("sha256:") else { return }
        invariant(ImageReference(parsing: again) == reference, "\(again) parses otherwise than \(text)")
    }
}
