// swift-tools-version:6.2
import PackageDescription

/// Every target of ours is Swift 6 mode and treats warnings as errors.
let strict: [SwiftSetting] = [
    .treatAllWarnings(as: .error),
    .enableUpcomingFeature("ExistentialAny"),
    // The model's small generic tables and initialisers are called per flow from other modules:
    // without this, each call goes through unspecialised generics and witness tables.
    .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release)),
]

let package = Package(
    name: "cnm-agent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cnm-agent", targets: ["cnm-agent"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // Without its default traits Hummingbird needs neither full Foundation (and ICU) nor swift-configuration.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0", traits: []),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        // Without its default traits (Foundation streams, FieldMask helpers) SwiftProtobuf needs only FoundationEssentials.
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0", traits: []),
    ],
    targets: [
        // The centre: connections, deltas, configuration, tags. Pure Swift, no system imports.
        .target(name: "CNMModel", swiftSettings: strict),
        // Packet headers and the flows they make up, from bytes handed in. Pure Swift too.
        .target(name: "CNMPacket", dependencies: ["CNMModel"], swiftSettings: strict),
        // The report stream every output subscribes to, and the agent's status that `/status` shows.
        .target(name: "CNMReport", dependencies: ["CNMModel"], swiftSettings: strict),

        // C interop, one small target per C library, every symbol prefixed.
        .target(name: "CLinux", cSettings: [.unsafeFlags(["-Wall", "-Werror"])]),
        .target(
            name: "CBPF",
            cSettings: [.unsafeFlags(["-Wall", "-Werror"])],
            linkerSettings: [.linkedLibrary("bpf"), .linkedLibrary("elf"), .linkedLibrary("z")]
        ),
        .target(
            name: "CCurl",
            cSettings: [.unsafeFlags(["-Wall", "-Werror"])],
            linkerSettings: [.linkedLibrary("curl")]
        ),
        .target(
            name: "CZstd",
            cSettings: [.unsafeFlags(["-Wall", "-Werror"])],
            linkerSettings: [.linkedLibrary("zstd")]
        ),

        // What every adapter needs of the system: one error type with errno, the EINTR retry,
        // network namespaces (setns), clocks.
        .target(name: "CNMSystem", dependencies: ["CNMModel", "CLinux"], swiftSettings: strict),
        // HTTP over libcurl (unix sockets, TLS, proxies), one backoff, decoding-error descriptions.
        .target(name: "CNMHTTP", dependencies: ["CCurl"], swiftSettings: strict),

        // Adapters to the system.
        .target(name: "CNMNetlink", dependencies: ["CNMModel", "CNMSystem", "CLinux"], swiftSettings: strict),
        .target(name: "CNMProcfs", dependencies: ["CNMModel"], swiftSettings: strict),
        .target(name: "CNMBPF", dependencies: ["CNMModel", "CNMSystem", "CBPF"], swiftSettings: strict),
        .target(
            name: "CNMCapture", dependencies: ["CNMModel", "CNMPacket", "CNMSystem", "CLinux"], swiftSettings: strict),
        .target(name: "CNMDocker", dependencies: ["CNMModel", "CNMHTTP"], swiftSettings: strict),
        .target(name: "CNMECS", dependencies: ["CNMModel", "CNMHTTP"], swiftSettings: strict),

        // Datadog's process intake: the generated payload types (from proto/, `make proto`), and the
        // encoding, framing, queue and sender around them.
        .target(
            name: "CNMIntakeProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: strict
        ),
        .target(
            name: "CNMIntake",
            dependencies: [
                "CNMModel", "CNMReport", "CNMIntakeProto", "CNMHTTP", "CZstd",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // Puts the adapters together into one collection loop.
        .target(
            name: "CNMCollector",
            dependencies: [
                "CNMModel", "CNMReport", "CNMSystem", "CNMNetlink", "CNMProcfs", "CNMDocker", "CNMECS", "CNMBPF",
                "CNMCapture", "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // Local HTTP API and terminal view: outputs, so no collector, libbpf or libcurl here.
        .target(
            name: "CNMServer",
            dependencies: [
                "CNMModel", "CNMReport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // One entry point per parser of outside data, for cnm-fuzz and the tests that replay its seeds.
        .target(
            name: "CNMFuzzTargets",
            dependencies: [
                "CNMModel", "CNMPacket", "CNMNetlink", "CNMProcfs", "CNMDocker", "CNMECS", "CNMIntake",
                "CNMIntakeProto",
            ],
            swiftSettings: strict
        ),

        .executableTarget(
            name: "cnm-agent",
            dependencies: [
                "CNMModel", "CNMReport", "CNMCollector", "CNMServer", "CNMHTTP", "CNMIntake", "CNMSystem", "CNMProcfs",
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // What encoding an interval costs per format (`make bench-encode`).
        .executableTarget(
            name: "cnm-encode-bench", dependencies: ["CNMModel", "CNMReport", "CNMServer", "CNMIntake"],
            path: "Benchmarks/EncodeCost", swiftSettings: strict),
        // What eBPF mode's user space spends per closed connection (`make bench-collection-cost`).
        .executableTarget(
            name: "cnm-collection-bench", dependencies: ["CNMModel", "CNMBPF"],
            path: "Benchmarks/CollectionCost", swiftSettings: strict),

        // What tests share: one scripted HTTP server (unix socket or loopback), socket helpers.
        .target(name: "CNMTestSupport", path: "Tests/CNMTestSupport", swiftSettings: strict),
        .testTarget(name: "CNMModelTests", dependencies: ["CNMModel"], swiftSettings: strict),
        .testTarget(name: "CNMSystemTests", dependencies: ["CNMSystem"], swiftSettings: strict),
        .testTarget(name: "CNMPacketTests", dependencies: ["CNMPacket", "CNMModel"], swiftSettings: strict),
        .testTarget(
            name: "CNMCaptureTests", dependencies: ["CNMCapture", "CNMPacket", "CNMModel", "CNMTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "CNMNetlinkTests", dependencies: ["CNMNetlink", "CNMSystem", "CNMModel", "CNMTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "CNMProcfsTests", dependencies: ["CNMProcfs", "CNMModel", "CNMTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "CNMServerTests",
            dependencies: [
                "CNMServer", "CNMReport", "CNMModel", "CNMTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "CNMCollectorTests",
            dependencies: [
                "CNMCollector", "CNMModel", "CNMReport", "CNMTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "CNMDockerTests", dependencies: ["CNMDocker", "CNMHTTP", "CNMModel", "CNMTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "CNMECSTests", dependencies: ["CNMECS", "CNMModel", "CNMTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "CNMIntakeTests",
            dependencies: [
                "CNMIntake", "CNMIntakeProto", "CNMHTTP", "CNMModel", "CNMTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(name: "CNMFuzzTargetsTests", dependencies: ["CNMFuzzTargets"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["CNMModel", "CCurl", "CLinux", "CNMIntake", "CNMIntakeProto", "CNMTestSupport"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)

// The libFuzzer executable over CNMFuzzTargets (`make fuzz`, scripts/fuzz.sh), only when built with
// `CNM_FUZZ=1` and `--sanitize=fuzzer`: libFuzzer supplies its `main`, so no other build can link it.
if Context.environment["CNM_FUZZ"] == "1" {
    package.products.append(.executable(name: "cnm-fuzz", targets: ["cnm-fuzz"]))
    package.targets.append(
        .executableTarget(
            name: "cnm-fuzz",
            dependencies: ["CNMFuzzTargets"],
            path: "Fuzz/cnm-fuzz",
            swiftSettings: strict + [.unsafeFlags(["-parse-as-library"])]
        )
    )
}
