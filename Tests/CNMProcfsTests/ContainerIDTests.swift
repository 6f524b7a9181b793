import CNMProcfs
import Foundation
import Testing

/// `<repo>/../shared/fixtures/proc/cgroup`: real cgroup files from other projects (see SOURCES.md there).
private let cgroupFixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("../shared/fixtures/proc/cgroup").standardizedFileURL

private let k8sA51a = "a51a9f7d073f848e7fc59e56e8f11524f330a2175a4ed26327da2dfe0d28015f"
private let kubepods8c04 = "8c046cb0b72cd4c99f51b5591cd5b095967f58ee003710a45280c28ee1a9c7fa"
private let docker34dc = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376"
private let ecs4326 = "432624d2150b349fe35ba397284dea788c2bf66b885d14dfc1569b01890ca7da"

/// The id every fixture must give, by path under `cgroupFixtures`; a `*-samples.txt` file holds several
/// samples, each keyed `<path>#L<line of its source>`.
private let expectations: KeyValuePairs<String, String?> = [
    "coroot/proc-100-cgroup": nil,  // dockerd itself, in docker.service
    "coroot/proc-1000-cgroup": nil,  // getty
    "coroot/proc-200-cgroup": "b43d92bf1e5c6f78bb9b7bc6f40721280299855ba692092716e3a1b6c0b86f3f",
    "coroot/proc-2000-cgroup": "95cbe853416f52d927dec41f1406dd75015ea131244a1ca875a7cd4ebe927ac8",
    "coroot/proc-300-cgroup": "17db96a24ae1e9dd57143e62b1cb0d2d35e693c65c774c7470e87b0572e07c1a",
    "coroot/proc-3000-cgroup": nil,  // LXC system container: no runtime id
    "coroot/proc-400-cgroup": "73051af271105c07e1f493b34856a77e665e3b0b4fc72f76c807dfbffeb881bd",
    "coroot/proc-500-cgroup": "ba7b10d15d16e10e3de7a2dcd408a3d971169ae303f46cfad4c5453c6326fee2",
    "coroot/proc-550-cgroup": nil,  // sshd
    "coroot/proc-600-cgroup": nil,
    "coroot/proc-700-cgroup": nil,  // Talos podruntime
    "coroot/proc-800-cgroup": "cf87ba651579c9231db817909e7865e5747bd7abcac0c57ce23cf4abbaee046b",
    "coroot/proc-900-cgroup": nil,
    // v1 lines name the innermost container; the 0:: line still names the outer kind node (88ea…).
    "datadog-agent/dind-kind-cgroupv1.cgroup": "a51a9f7d073f848e7fc59e56e8f11524f330a2175a4ed26327da2dfe0d28015e",
    "datadog-agent/ecs-fargate-1.4-cgroupv1-short-random.cgroup": "0520ecd8e4194fd48309d1ae6eec92ec-946514567",
    "datadog-agent/ecs-fargate-1.4-cgroupv1.cgroup": "8474ac4cec7a4f488834b00591271ec3-3054012820",
    "datadog-agent/ecs-fargate-cgroupv1-partial.cgroup": "8a28a84664034325be01ca46b33d1dd3-4092616770",
    "datadog-agent/eks-fargate-cgroupv1-nested-under-ecs.cgroup":
        "7022ec9d5774c69f38feddd6460373c4681ef72a4e03bc6f2d374387e9bde981",
    "datadog-agent/k8s-cgroupv1-burstable-containerd.cgroup": k8sA51a,
    "datadog-agent/k8s-cgroupv1-cri-containerd-with-colons.cgroup":
        "1c8f503430973935b7d8a80c4f58c0946b052a021e6855b358e5ec38601af120",
    "datadog-agent/k8s-cgroupv2-cgroupfs.cgroup": k8sA51a,
    "datadog-agent/k8s-cgroupv2-systemd-docker-nohost-relative.cgroup": k8sA51a,
    "docker-gen-docker-ce-nested-cgroupv1.cgroup": "18862cabc2e0d24142cf93c46ccb6e070c2ea7b996c81c0311ec0309abcbcdfb",
    "docker-gen-ecs-ec2-cgroupv1-2018.cgroup": "3c94e08259a6235781bb65f3dec91150c92e9d414ecc410d6245687392d3900f",

    "neuvector/TestContainerd_Container_Cgroupv2-1.cgroup":
        "25d057a4c6c9555f2a0eb106e8896968c28f1c44aca4754174851aca7f89ad26",
    "neuvector/TestCrio_CPath_Cgroupv2-1.cgroup": "f33f47b0db740bb647cb3e7ac62d96c74966dbb99cbfaf4563bfd42d387e8b44",
    "neuvector/TestCrio_Container_Cgroupv2-1.cgroup":
        "f33f47b0db740bb647cb3e7ac62d96c74966dbb99cbfaf4563bfd42d387e8b44",
    "neuvector/TestCrio_Container_SelfProbe_Cgroupv2-1.cgroup":
        "7b05b98b56047ad0e02e55f4e6bcffbcdc436340179a9c05908df1e5d4f0710d",
    "neuvector/TestCrio_Host_Proc1_Cgroupv2-1.cgroup": nil,
    "neuvector/TestCrio_Host_ProcAny_Cgroupv2-1.cgroup": nil,
    "neuvector/TestDockerIDCentOS-1.cgroup": "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d",
    "neuvector/TestDockerIDDebian-1.cgroup": "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970",
    "neuvector/TestDockerIDKubepods-1.cgroup": "cb1eadb7abe3a6545e9856411207073277838e1bdc003337c2f8685faeedc32c",
    "neuvector/TestDockerIDKubepods2-1.cgroup": "b5b6f2da8008be266864f896f93789762b2ce50792114a5c5f2cc3315af0bc70",
    "neuvector/TestDockerIDKubepods3-1.cgroup": "da31e536c8d61304a6d5998d163d12400a7a9a1003e1d86369e8fadb022fc17d",
    "neuvector/TestDockerIDRancherOS-1.cgroup": "ec08435e04266c5ba381fccbb829f626d11d8ddf5f8f547263c7a2d79ab4787a",
    "neuvector/TestDockerIDUbuntu-1.cgroup": "31cb02944da7a12196a193cf0e0f6c226d7c453a1db62e65ba98287593a2ee30",
    "neuvector/TestDockerK8s_CPath_Container_Cgroupv2-1.cgroup":
        "2cc65c162ca1388b6b8d5ccfb701d22fc96675ccf8b2f1590c490c2c4039547f",
    // `0::/`: a process in the reader's own cgroup namespace; neuvector needs mountinfo for these.
    "neuvector/TestDockerK8s_CPath_SelfProbe_Cgroupv2-1.cgroup": nil,
    "neuvector/TestDockerK8s_Container_SelfProbe_Cgroupv2-1.cgroup": nil,
    "neuvector/TestDockerK8s_Ubuntu_Container_Cgroupv2-1.cgroup":
        "2cc65c162ca1388b6b8d5ccfb701d22fc96675ccf8b2f1590c490c2c4039547f",
    "neuvector/TestDockerNative_Container_Cgroupv2-1.cgroup":
        "1f1d6e2d4940ddac13abd421a2617992bf89f0e0f9a902ed58278c5f843e9ae7",
    "neuvector/TestDocker_Host_Proc1_Cgroupv2-1.cgroup": nil,
    "neuvector/TestDocker_Host_ProcAny_Cgroupv2-1.cgroup": nil,
    "neuvector/TestHostProcess-1.cgroup": nil,
    "neuvector/TestK8sBottleRocket-1.cgroup": "f45298cd514d1930c4fe3afc4412e59547f7e3148fddd22ca33cefce046eb830",
    "neuvector/TestK8sContainerd_v1_2_13-1.cgroup": "5dd96d5394ca930a854a390ea46f7515a8bc930123eb3251ba20f2708a38fc61",
    "neuvector/TestK8sContainerd_v1_4_4-1.cgroup": "d3d8ccf5cca91931c6285c1d7472c413dd5a7700fddc0aa9f89a9ac7008b003e",
    "neuvector/TestK8sCrio_v1_17-1.cgroup": "7a1fd6fe8cdfbd44dc78c4cc85dad7031eaab4365801684cad0aabdeaf863f9e",
    "neuvector/TestK8sCrio_v1_19-1.cgroup": "d6d725b909f37c3e232aadfbafa950a58bfe7baa579ba8c47a12be88bb921607",
    // kube-proxy's own sub-cgroup inside its container.
    "neuvector/TestK8sProxyProcess-1.cgroup": "c04e0a88a1de067f25bece337d4dbb897396e0b623c2a65330850fc9823f1903",
    "neuvector/TestNsEnterProcess-1.cgroup": nil,
    // The paired mountinfo files are not cgroup files: no line parses, so nothing is named.
    "neuvector/TestContainerd_Container_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestCrio_Container_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestCrio_Container_SelfProbe_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestCrio_Host_Proc1_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestCrio_Host_ProcAny_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestDockerK8s_Container_SelfProbe_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestDockerK8s_Ubuntu_Container_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestDockerNative_Container_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestDocker_Host_Proc1_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestDocker_Host_ProcAny_Cgroupv2-2.mountinfo": nil,
    "neuvector/TestK8sContainerdInDocker_Cgroupv2-1.mountinfo": nil,

    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L22": kubepods8c04,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L32": kubepods8c04,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L33": nil,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L34": ecs4326,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L35": docker34dc,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L36": nil,  // `/uuid/<uuid>`: not a runtime id
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L37": "34dc0b5e626f2c5c4c5170e34b10e765-1234567890",
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L38": docker34dc,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L39": docker34dc,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L50": nil,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L276": nil,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L281": nil,  // `/docker/abc123`: too short
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L291": nil,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L329": nil,  // 32-hex docker scope: not an id
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L335": nil,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L347": nil,
    "ddtrace-go/datadog-go-statsd-container_test.cgroup-samples.txt#L415": kubepods8c04,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L25": kubepods8c04,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L35": kubepods8c04,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L36": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L37": ecs4326,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L38": docker34dc,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L39": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L40": "34dc0b5e626f2c5c4c5170e34b10e765-1234567890",
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L41": docker34dc,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L42": docker34dc,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L45": nil,  // Cloud Foundry garden
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L58": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L69": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L116": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L137": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L142": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L152": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L190": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L196": nil,
    "ddtrace-go/dd-trace-go-container_linux_test.cgroup-samples.txt#L208": nil,
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L46": nil,  // not hex
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L48": nil,
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L73": nil,  // a login session
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L86":
        "ac679f8a8319c8cf7d38e1adf263bc08d231f2ff81abda3915f6e8ba4d64156a",
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L90":
        "dc679f8a8319c8cf7d38e1adf263bc08d234f0749ea715fb6ca3bb259db69956",
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L94":
        "d86d75589bf6cc254f3e2cc29debdf85dde404998aa128997a819ff991827356",
    // Lines 99-101 are fragments of one Java string concatenation.
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L99":
        "dc579f8a8319c8cf7d38e1adf263bc08d230600179b07acfd7eaf9646778dc31",
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L100":
        "dc579f8a8319c8cf7d38e1adf263bc08d230600179b07acfd7eaf9646778dc31",
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L101":
        "dc579f8a8319c8cf7d38e1adf263bc08d230600179b07acfd7eaf9646778dc31",
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L105":
        "713a77a26fe2a38ebebd5709604a048c3d380db1eb16aa43aca0b2499e54733c",
    "otel-java-CgroupV1ContainerIdExtractorTest.cgroup-samples.txt#L110":
        "05c48c82caff3be3d7f1e896981dd410e81487538936914f32b624d168de9db0",
]

/// Every sample in the fixture folder, keyed as in `expectations`. A samples file is split at its
/// `# --- <source> line N` headers.
private func fixtureSamples() throws -> [(key: String, text: String)] {
    let root = cgroupFixtures.path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue,
        let walker = FileManager.default.enumerator(atPath: root)
    else {
        throw FixtureError(message: "cgroup fixtures not found at \(root): shared/ must sit beside the checkout")
    }
    var samples: [(key: String, text: String)] = []
    for case let relative as String in walker {
        let path = root + "/" + relative
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            continue
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard relative.hasSuffix("-samples.txt") else {
            samples.append((relative, text))
            continue
        }
        var key: String?
        var lines: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# --- ") {
                if let key { samples.append((key, lines.joined(separator: "\n"))) }
                key = "\(relative)#L\(line.split(separator: " ").last ?? "?")"
                lines = []
            } else {
                lines.append(line)
            }
        }
        if let key { samples.append((key, lines.joined(separator: "\n"))) }
    }
    return samples
}

private struct FixtureError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

@Test func everyCgroupFixtureGivesItsExpectedContainerID() throws {
    let expected = Dictionary(uniqueKeysWithValues: expectations.map { ($0.key, $0.value) })
    let samples = try fixtureSamples()
    #expect(samples.count >= expected.count)
    for sample in samples {
        guard let want = expected[sample.key] else {
            Issue.record("no expectation for fixture sample \(sample.key): add it to the table")
            continue
        }
        #expect(containerID(fromCgroup: sample.text) == want, "\(sample.key)")
    }
    let seen = Set(samples.map(\.key))
    for key in expected.keys where !seen.contains(key) {
        Issue.record("expectation for \(key), which is no fixture sample")
    }
}

private let idAB = String(repeating: "ab", count: 32)

/// Forms no real fixture holds (SOURCES.md: rootful podman appears only in synthetic tests).
@Test(
    arguments: [
        ("0::/machine.slice/libpod-\(idAB).scope", idAB),
        ("0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-\(idAB).scope", idAB),
        ("0::/machine.slice/libpod-conmon-\(idAB).scope", nil),
        ("0::/kubepods.slice/crio-conmon-\(idAB).scope", nil),
        ("1:name=systemd:/docker/\(idAB.uppercased())", nil),  // ids are lower case
        ("1:name=systemd:/\(idAB.prefix(32))-1234567890", nil),  // the Fargate form outside /ecs
        ("", nil),
        ("garbage\n::\n:\nx:y:/docker/\(idAB)", nil),
        ("12:pids:/docker/\(idAB)\r\n0::/\r\n", idAB),
    ] as [(String, String?)]
)
func syntheticForms(text: String, want: String?) {
    #expect(containerID(fromCgroup: text) == want)
}
