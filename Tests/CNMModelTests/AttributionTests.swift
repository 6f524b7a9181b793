import CNMModel
import Testing

/// Who is at each end of a report's connections, from one container snapshot.
@Suite struct AttributionTests {
    static let web = "a1b2c3"
    static let api = "d4e5f6"
    static let agent = "0a0a0a"
    static let snapshot = ContainerSnapshot(
        tags: [
            web: ["container_name:web", "image_name:nginx"],
            api: ["container_name:api", "image_name:api", "task_family:shop"],
        ],
        excluded: [agent],
        byAddress: [ip("172.18.0.2"): web],
        published: [
            PublishedPort(transport: .tcp, hostPort: 8080): api,
            PublishedPort(transport: .tcp, hostPort: 9090, hostAddress: ip("127.0.0.1")): web,
        ]
    )

    static func ip(_ text: String) -> IPAddress { IPAddress(parsing: text)! }

    static func connection(
        from local: String, _ localPort: UInt16, to remote: String, _ remotePort: UInt16,
        container: String? = nil, remoteContainer: String? = nil, direction: ConnectionDirection = .outgoing,
        intraHost: Bool = false
    ) -> Connection {
        Connection(
            key: ConnectionKey(
                transport: .tcp, local: Endpoint(ip(local), localPort), remote: Endpoint(ip(remote), remotePort),
                netns: 1, pid: 7, direction: direction),
            stats: ConnectionStats(), localContainerID: container, remoteContainerID: remoteContainer,
            intraHost: intraHost)
    }

    @Test func aPeerSeenAsASocketKeepsItsContainer() {
        var c = [
            Self.connection(
                from: "172.18.0.3", 40000, to: "172.18.0.2", 80, container: Self.api, remoteContainer: Self.api)
        ]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: ["env:prod"])
        #expect(c[0].remoteContainerID == Self.api)
        #expect(c[0].tags == ["env:prod", "container_name:api", "image_name:api", "task_family:shop"])
        #expect(c[0].remoteTags == Self.snapshot.tags[Self.api])
    }

    @Test func aPeerUnseenIsFoundByItsContainerAddress() {
        var c = [Self.connection(from: "172.18.0.3", 40000, to: "172.18.0.2", 80, container: Self.api)]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: [])
        #expect(c[0].remoteContainerID == Self.web && c[0].intraHost)
        #expect(c[0].remoteTags == ["container_name:web", "image_name:nginx"])
    }

    @Test func aMappedV6PeerIsFoundByItsV4Address() {
        var c = [Self.connection(from: "::ffff:172.18.0.3", 40000, to: "::ffff:172.18.0.2", 80)]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: [])
        #expect(c[0].remoteContainerID == Self.web)
    }

    @Test func aFlowToAPublishedPortReachesItsContainer() {
        // Any host address: to loopback, or to this host's own address (intra-host).
        var c = [
            Self.connection(from: "127.0.0.1", 40000, to: "127.0.0.1", 8080),
            Self.connection(from: "10.0.0.5", 40001, to: "10.0.0.5", 8080, intraHost: true),
            // Published on 127.0.0.1 only: the exact address is asked first.
            Self.connection(from: "127.0.0.1", 40002, to: "127.0.0.1", 9090),
        ]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: [])
        #expect(c.map(\.remoteContainerID) == [Self.api, Self.api, Self.web])
    }

    @Test func aPublishedPortIsNoPeerForIncomingOrRemoteFlows() {
        var c = [
            // An incoming connection on 8080 of the host is not a flow to the container's port.
            Self.connection(from: "127.0.0.1", 8080, to: "127.0.0.1", 40000, direction: .incoming),
            // A remote host's 8080 is not this host's published port.
            Self.connection(from: "10.0.0.5", 40001, to: "93.184.216.34", 8080),
            // 9090 is published on 127.0.0.1 only, not on the host's other addresses.
            Self.connection(from: "10.0.0.5", 40002, to: "10.0.0.5", 9090, intraHost: true),
        ]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: [])
        #expect(c.allSatisfy { $0.remoteContainerID == nil && $0.remoteTags.isEmpty })
    }

    @Test func excludedContainersFlowsAreLeftOut() {
        var c = [
            Self.connection(from: "172.18.0.9", 40000, to: "172.18.0.2", 80, container: Self.agent),
            Self.connection(from: "172.18.0.3", 40001, to: "172.18.0.9", 7777, container: Self.api),
        ]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: [])
        // Only the excluded container's own ends go; a flow to it from another container stays.
        #expect(c.count == 1 && c[0].localContainerID == Self.api)
    }

    @Test func onFargateTheTasksTagsGoOnFlowsOfNoKnownContainer() {
        var snapshot = Self.snapshot
        snapshot.taskWideTags = ["task_family:shop", "env:prod", "region:eu-west-1"]
        var c = [
            Self.connection(from: "169.254.172.2", 40000, to: "10.0.0.9", 443),
            Self.connection(from: "169.254.172.2", 40001, to: "10.0.0.9", 443, container: Self.web),
        ]
        Attribution.attribute(&c, with: snapshot, hostTags: ["env:prod"])
        // Host tags first, then the task's that are not already there.
        #expect(c[0].tags == ["env:prod", "task_family:shop", "region:eu-west-1"])
        // A known container has its own tags (which carry the task's).
        #expect(c[1].tags == ["env:prod", "container_name:web", "image_name:nginx"])
    }

    @Test func anUnknownContainerStillGetsTheHostTags() {
        var c = [Self.connection(from: "172.18.0.7", 40000, to: "172.18.0.2", 80, container: "ffffff")]
        Attribution.attribute(&c, with: Self.snapshot, hostTags: ["env:prod"])
        #expect(c[0].tags == ["env:prod"] && c[0].remoteContainerID == Self.web)
    }

    @Test func dockerTagsComeFirstAndECSAddsOnlyWhatIsNew() {
        let merged = ContainerSnapshot.merged(
            docker: [Self.web: ["container_name:web", "task_family:shop"], Self.api: ["container_name:api"]],
            ecs: [Self.web: ["task_family:shop", "task_version:3"], "b0b0b0": ["ecs_container_name:sidecar"]])
        #expect(merged[Self.web] == ["container_name:web", "task_family:shop", "task_version:3"])
        #expect(merged[Self.api] == ["container_name:api"])
        #expect(merged["b0b0b0"] == ["ecs_container_name:sidecar"])
    }
}
