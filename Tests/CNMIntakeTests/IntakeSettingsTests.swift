import CNMModel
import Testing

@Suite struct IntakeSettingsTests {
    @Test func withoutAKeyNothingIsShipped() throws {
        #expect(try Configuration(environment: [:]).intake == nil)
        #expect(try Configuration(environment: ["DD_API_KEY": "  "]).intake == nil)
    }

    @Test func defaults() throws {
        let intake = try #require(try Configuration(environment: ["DD_API_KEY": "0123456789abcdef"]).intake)
        #expect(intake.endpoint == "https://process.datadoghq.com/api/v1/connections")
        #expect(intake.maxConnectionsPerMessage == 600)
        #expect(intake.queueSize == 256)
        #expect(intake.queueBytes == 60_000_000)
        #expect(intake.verifyTLS)
        #expect(intake.proxy == nil)
        #expect(!intake.connectionRollup, "off by default, as in Datadog's agent")
    }

    @Test func readsEveryVariable() throws {
        let intake = try #require(
            try Configuration(environment: [
                "DD_API_KEY": "0123456789abcdef",
                "DD_SITE": "datadoghq.eu",
                "DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE": "1000",
                "DD_PROCESS_CONFIG_QUEUE_SIZE": "4",
                "DD_PROCESS_CONFIG_PROCESS_QUEUE_BYTES": "1000",
                "DD_SKIP_SSL_VALIDATION": "true",
                "HTTPS_PROXY": "http://proxy:3128",
                "DD_FORWARDER_TIMEOUT": "0.5",
                "DD_FORWARDER_BACKOFF_BASE": "0.1",
                "DD_FORWARDER_BACKOFF_MAX": "1",
                "DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP": "true",
            ]).intake)
        #expect(intake.endpoint == "https://process.datadoghq.eu/api/v1/connections")
        #expect(intake.maxConnectionsPerMessage == 1000)
        #expect(intake.queueSize == 4 && intake.queueBytes == 1000)
        #expect(!intake.verifyTLS)
        #expect(intake.proxy == "http://proxy:3128")
        #expect(intake.timeoutSeconds == 0.5 && intake.backoffBaseSeconds == 0.1 && intake.backoffMaxSeconds == 1)
        #expect(intake.connectionRollup && "\(intake)".contains("rolled up"))
    }

    @Test func theURLOverridesTheSiteAndTheDatadogProxyVariableWins() throws {
        let intake = try #require(
            try Configuration(environment: [
                "DD_API_KEY": "k", "DD_SITE": "datadoghq.eu", "DD_PROCESS_AGENT_URL": "http://127.0.0.1:9/",
                "DD_PROXY_HTTPS": "http://a:1", "HTTPS_PROXY": "http://b:2",
            ]).intake)
        #expect(intake.endpoint == "http://127.0.0.1:9/api/v1/connections")
        #expect(intake.proxy == "http://a:1")
        let both = try #require(
            try Configuration(environment: [
                "DD_API_KEY": "k", "DD_PROCESS_AGENT_URL": "http://a", "DD_PROCESS_CONFIG_PROCESS_DD_URL": "https://b",
            ]).intake)
        #expect(both.baseURL == "https://b")
    }

    @Test(arguments: [
        ("DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE", "0"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE", "1001"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE", "many"),
        ("DD_PROCESS_CONFIG_QUEUE_SIZE", "0"),
        ("DD_PROCESS_CONFIG_PROCESS_QUEUE_BYTES", "60MB"),
        ("DD_SKIP_SSL_VALIDATION", "maybe"),
        ("DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP", "yes please"),
        ("DD_SITE", "not a site"),
        ("DD_PROCESS_CONFIG_PROCESS_DD_URL", "ftp://x"),
        ("DD_PROCESS_AGENT_URL", "https://"),
        ("DD_FORWARDER_TIMEOUT", "-1"),
        // Accepted once, then trapped on overflow at the first request or retry.
        ("DD_FORWARDER_TIMEOUT", "1e300"),
        ("DD_FORWARDER_TIMEOUT", "3601"),
        ("DD_FORWARDER_BACKOFF_BASE", "1e300"),
        ("DD_FORWARDER_BACKOFF_MAX", "1e300"),
        ("DD_FORWARDER_BACKOFF_MAX", "86401"),
        ("DD_PROCESS_CONFIG_QUEUE_SIZE", "9223372036854775807"),
        ("DD_PROCESS_CONFIG_PROCESS_QUEUE_BYTES", "9223372036854775807"),
    ])
    func malformedValuesAreConfigurationErrors(variable: String, value: String) {
        let error = #expect(throws: ConfigurationError.self) {
            try Configuration(environment: ["DD_API_KEY": "secretkey1234", variable: value])
        }
        #expect(error?.variable == variable)
        #expect(error?.description.contains("expected") == true)
        #expect(error?.description.contains("secretkey") == false)
    }

    @Test func theKeyIsNeverPrinted() throws {
        let configuration = try Configuration(environment: ["DD_API_KEY": "supersecretvalue9876"])
        let intake = try #require(configuration.intake)
        #expect(intake.redactedAPIKey == "****9876")
        for text in ["\(intake)", String(describing: intake), String(reflecting: intake), "\(configuration)"] {
            #expect(!text.contains("supersecret"), "\(text)")
        }
    }
}
