import CNMModel
import Testing

@Suite struct ConfigurationTests {
    @Test func defaults() throws {
        let c = try Configuration(environment: [:])
        #expect(c.networkEnabled)
        #expect(!c.forceEBPFless)
        #expect(c.intervalSeconds == 30)
        #expect(c.sampleSeconds == 2)
        #expect(c.logLevel == .info)
        #expect(c.maxTrackedConnections == 65_536)
        #expect(c.httpAddress.description == "127.0.0.1:7777")
        #expect(c.hostProc == "/proc")
        #expect(c.dockerHost == "unix:///var/run/docker.sock")
        #expect(c.hostTags.isEmpty)
    }

    @Test func readsEveryVariable() throws {
        let c = try Configuration(environment: [
            "DD_SYSTEM_PROBE_NETWORK_ENABLED": "false",
            "DD_NETWORK_CONFIG_ENABLE_EBPFLESS": "TRUE",
            "DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS": " 5 ",
            "DD_HOSTNAME": "web-1",
            "DD_TAGS": "team:net, tier:1 zone:a",
            "DD_EXTRA_TAGS": "extra:x",
            "DD_ENV": "prod",
            "DD_LOG_LEVEL": "WARNING",
            "DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS": "1000",
            "DD_DISABLE_TCP_TRACING": "0",
            "DD_DISABLE_UDP_TRACING": "true",
            "DD_DISABLE_IPV6_TRACING": "yes",
            "HOST_PROC": "/host/proc/",
            "HOST_SYS": "/host/sys",
            "DOCKER_HOST": "tcp://docker.internal:2375",
            "DD_CNM_HTTP_ADDR": "[::1]:9000",
            "DD_CNM_SAMPLE_INTERVAL": "10",
            "DD_CNM_TERMINAL": "never",
        ])
        #expect(!c.networkEnabled)
        #expect(c.forceEBPFless)
        #expect(c.intervalSeconds == 5)
        #expect(c.sampleSeconds == 5, "the sample interval never exceeds the report interval")
        #expect(c.hostname == "web-1")
        #expect(c.hostTags == ["team:net", "tier:1", "zone:a", "extra:x", "env:prod"])
        #expect(c.logLevel == .warn)
        #expect(c.maxTrackedConnections == 1000)
        #expect(c.tcpEnabled && !c.udpEnabled && !c.ipv6Enabled)
        #expect(c.hostProc == "/host/proc")
        #expect(c.hostSys == "/host/sys")
        #expect(c.dockerHost == "tcp://docker.internal:2375")
        #expect(c.httpAddress == .init(host: "::1", port: 9000))
        #expect(c.terminal == .never)
    }

    @Test(arguments: [
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "abc"),
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "0"),
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "-5"),
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "1.5"),
        ("DD_LOG_LEVEL", "loud"),
        ("DD_CNM_HTTP_ADDR", "nonsense"),
        ("DD_CNM_HTTP_ADDR", "127.0.0.1"),
        ("DD_CNM_HTTP_ADDR", "127.0.0.1:0"),
        ("DD_CNM_HTTP_ADDR", "127.0.0.1:70000"),
        ("DD_CNM_HTTP_ADDR", "300.1.1.1:80"),
        ("DD_CNM_HTTP_ADDR", "[::1:80"),
        ("DD_CNM_HTTP_ADDR", "example.com:80"),
        ("DD_SYSTEM_PROBE_NETWORK_ENABLED", "maybe"),
        ("DD_NETWORK_CONFIG_ENABLE_EBPFLESS", "2"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS", "lots"),
        ("DD_DISABLE_IPV6_TRACING", "nope"),
        ("HOST_PROC", "relative/proc"),
        ("DOCKER_HOST", "/var/run/docker.sock"),
        ("DOCKER_HOST", "unix://relative"),
        ("DD_CNM_SAMPLE_INTERVAL", "0"),
        ("DD_CNM_SAMPLE_INTERVAL", "fast"),
        // Values that used to be accepted and then trapped on overflow or made the scheduler spin.
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "99999999999999"),
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "3601"),
        ("DD_PROCESS_CONFIG_INTERVALS_CONNECTIONS", "99999999999999999999999"),
        ("DD_CNM_SAMPLE_INTERVAL", "0.0000001"),
        ("DD_CNM_SAMPLE_INTERVAL", "1e300"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_TRACKED_CONNECTIONS", "4294967296"),
        ("DD_CNM_TABLE_ROWS", "9223372036854775807"),
        ("DD_ECS_METADATA_TIMEOUT", "9223372036854775807"),
        ("DD_CNM_TERMINAL", "sometimes"),
        ("DD_DOCKER_LABELS_AS_TAGS", "team:owner"),
        ("DD_DOCKER_LABELS_AS_TAGS", "{\"team\": 3}"),
        ("DD_DOCKER_ENV_AS_TAGS", "{\"TEAM\": \"team\""),
        ("DD_CONTAINER_EXCLUDE", "name:[unclosed"),
        ("DD_CONTAINER_EXCLUDE", "kube_namespace:.*"),
        ("DD_CONTAINER_INCLUDE", "name:"),
    ])
    func rejectsBadValues(variable: String, value: String) {
        #expect {
            _ = try Configuration(environment: [variable: value])
        } throws: { error in
            guard let error = error as? ConfigurationError else { return false }
            let line = error.description
            return error.variable == variable && error.value == value && line.contains(variable)
                && line.contains(value) && line.contains("expected") && !line.contains("\n")
        }
    }

    @Test func containerTagRules() throws {
        let c = try Configuration(environment: [
            "DD_DOCKER_LABELS_AS_TAGS": #"{"com.example.team": "team", "tier": "+tier"}"#,
            "DD_DOCKER_ENV_AS_TAGS": #"{"REGION": "region"}"#,
            "DD_CONTAINER_EXCLUDE": "name:^cnm-agent$  image:^datadog/",
            "DD_CONTAINER_INCLUDE": "name:keep",
        ])
        #expect(c.dockerLabelsAsTags == ["com.example.team": "team", "tier": "tier"])
        #expect(c.dockerEnvAsTags == ["REGION": "region"])
        #expect(c.containerExclude.map(\.description) == ["name:^cnm-agent$", "image:^datadog/"])
        #expect(c.containerInclude.map(\.description) == ["name:keep"])
        #expect(c.excludes(containerName: "cnm-agent", images: []))
        #expect(c.excludes(containerName: "x", images: ["datadog/agent:7"]))
        #expect(!c.excludes(containerName: "keep-me", images: ["datadog/agent:7"]))
        #expect(!c.excludes(containerName: "cnm-agent-2", images: ["busybox"]))
    }

    @Test func emptyValuesTakeDefaults() throws {
        let c = try Configuration(environment: ["DD_LOG_LEVEL": "", "DD_CNM_HTTP_ADDR": "  "])
        #expect(c.logLevel == .info)
        #expect(c.httpAddress.port == 7777)
    }

    @Test func listenAddressForms() throws {
        #expect(try Configuration(environment: ["DD_CNM_HTTP_ADDR": "0.0.0.0:80"]).httpAddress.host == "0.0.0.0")
        #expect(try Configuration(environment: ["DD_CNM_HTTP_ADDR": "localhost:8080"]).httpAddress.port == 8080)
        #expect(try Configuration(environment: ["DD_CNM_HTTP_ADDR": "[::]:7777"]).httpAddress.host == "::")
    }

    /// What the start-up warning about an API open beyond this host goes by.
    @Test(arguments: [
        ("127.0.0.1:7777", true), ("127.1.2.3:80", true), ("localhost:80", true), ("[::1]:80", true),
        ("0.0.0.0:7777", false), ("[::]:7777", false), ("10.0.0.1:80", false), ("128.0.0.1:80", false),
    ])
    func loopbackListenAddresses(address: String, loopback: Bool) throws {
        #expect(try Configuration(environment: ["DD_CNM_HTTP_ADDR": address]).httpAddress.isLoopback == loopback)
        #expect(try Configuration(environment: [:]).httpAddress.isLoopback)
    }
}

@Suite struct AddressTests {
    @Test(arguments: [
        ("::1", "::1"), ("::", "::"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"), ("fe80::1:2", "fe80::1:2"),
        ("2001:db8::", "2001:db8::"), ("::ffff:10.0.0.1", "::ffff:10.0.0.1"), ("1:0:0:0:0:0:0:8", "1::8"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"), ("1:0:2:0:0:3:0:0", "1:0:2::3:0:0"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
    ])
    func ipv6RoundTrip(text: String, canonical: String) throws {
        let address = try #require(IPAddress(parsing: text))
        #expect(address.description == canonical)
        #expect(IPAddress(parsing: canonical) == address)
    }

    @Test func ipv4() throws {
        let a = try #require(IPAddress(parsing: "127.0.0.1"))
        #expect(a == .v4(0x7F00_0001))
        #expect(a.isLoopback)
        #expect(IPAddress(networkBytes: [10, 1, 2, 3])?.description == "10.1.2.3")
        #expect(IPAddress(parsing: "1.2.3") == nil)
        #expect(IPAddress(parsing: "1.2.3.256") == nil)
        #expect(IPAddress(parsing: "::ffff:127.0.0.1")?.isLoopback == true)
        #expect(Endpoint(.v6(high: 0, low: 1), 80).description == "[::1]:80")
    }
}

/// What may be printed or stored of URLs and names from outside.
@Suite struct RedactionTests {
    @Test func credentialsInURLsAreHidden() {
        #expect(Redaction.credentials(in: "http://user:pa55@proxy:3128") == "http://****@proxy:3128")
        #expect(
            Redaction.credentials(in: "Could not resolve proxy: http://u:p@w@bad host; also https://k@x/y?z=1")
                == "Could not resolve proxy: http://****@bad host; also https://****@x/y?z=1")
        #expect(
            Redaction.credentials(in: "https://process.datadoghq.com/api/v1") == "https://process.datadoghq.com/api/v1")
        #expect(Redaction.credentials(in: "mail me@example.com") == "mail me@example.com")
        #expect(Redaction.credentials(in: "http://") == "http://")
    }

    @Test func intakeSettingsPrintTheEndpointWithoutCredentials() throws {
        let c = try Configuration(environment: [
            "DD_API_KEY": "0123456789abcdef",
            "DD_PROCESS_CONFIG_PROCESS_DD_URL": "https://user:secret@intake.example:8443",
        ])
        let intake = try #require(c.intake)
        #expect(intake.endpoint.contains("secret"))
        #expect(!intake.printableEndpoint.contains("secret"))
        #expect(!"\(intake)".contains("secret"))
    }

    @Test func controlCharactersCannotReachTheTerminal() {
        #expect(Redaction.printable("evil\u{1B}[2Jname\u{7}") == "evil?[2Jname?")
        #expect(Redaction.printable(String(repeating: "a", count: 300)).count == 256)
        #expect(Redaction.printable("nginx: worker") == "nginx: worker")
    }
}
