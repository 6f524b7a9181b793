/// Where and how to ship connections to Datadog's process intake. Present only when `DD_API_KEY` is
/// set: without a key the agent runs on its local outputs alone. Printing it never shows the key.
public struct IntakeSettings: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public var apiKey: String
    public var site = "datadoghq.com"
    /// The intake's base URL, without a trailing slash.
    public var baseURL = "https://process.datadoghq.com"
    public var maxConnectionsPerMessage = 600
    /// Intervals waiting to be sent, besides the one being sent.
    public var queueSize = 256
    public var queueBytes = 60_000_000
    public var verifyTLS = true
    public var proxy: String?
    public var timeoutSeconds = 20.0
    public var backoffBaseSeconds = 2.0
    public var backoffMaxSeconds = 64.0
    /// `DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP`: short-lived connections of one client to one
    /// service are shipped as one (`ConnectionRollup`). Off by default, as in Datadog's agent.
    public var connectionRollup = false

    public static let maxConnectionsPerMessageLimit = 1000

    public init(apiKey: String) {
        self.apiKey = apiKey
    }

    public var endpoint: String { baseURL + "/api/v1/connections" }
    /// The endpoint as it may be printed: without credentials.
    public var printableEndpoint: String { Redaction.credentials(in: endpoint) }

    /// The intake's host (and port), as the site that accepts or rejects the key: `process.datadoghq.eu`.
    public var intakeHost: String {
        let afterScheme = baseURL.split(separator: "://", maxSplits: 1).last ?? ""
        return String(afterScheme.prefix { $0 != "/" })
    }

    /// The key as it may be shown: its last four characters.
    public var redactedAPIKey: String { "****" + String(apiKey.suffix(4)) }

    public var description: String {
        "intake \(printableEndpoint) (key \(redactedAPIKey), \(maxConnectionsPerMessage) connections per message"
            + (connectionRollup ? ", short-lived connections rolled up)" : ")")
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }

    public static let variables: [(name: String, accepts: String)] = [
        ("DD_API_KEY", "the API key; set, the agent ships connections to Datadog"),
        ("DD_SITE", "a Datadog site such as datadoghq.com or datadoghq.eu (default datadoghq.com)"),
        (
            "DD_PROCESS_CONFIG_PROCESS_DD_URL",
            "http:// or https:// URL of the intake (default https://process.<DD_SITE>)"
        ),
        ("DD_PROCESS_AGENT_URL", "same as DD_PROCESS_CONFIG_PROCESS_DD_URL, which wins"),
        ("DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE", "whole number from 1 to 1000 (default 600)"),
        ("DD_PROCESS_CONFIG_QUEUE_SIZE", "whole number from 1 to 100000 (default 256)"),
        ("DD_PROCESS_CONFIG_PROCESS_QUEUE_BYTES", "whole bytes from 1 to 4294967296 (default 60000000)"),
        ("DD_SKIP_SSL_VALIDATION", "true or false"),
        ("DD_PROXY_HTTPS", "proxy URL such as http://proxy:3128"),
        ("HTTPS_PROXY", "same as DD_PROXY_HTTPS, which wins"),
        ("DD_FORWARDER_TIMEOUT", "seconds, more than 0 and at most 3600 (default 20)"),
        ("DD_FORWARDER_BACKOFF_BASE", "seconds from 0.1 to 3600, at most the report interval (default 2)"),
        ("DD_FORWARDER_BACKOFF_MAX", "seconds, from DD_FORWARDER_BACKOFF_BASE to 86400 (default 64)"),
        (
            "DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP",
            "true or false (default false): roll up short-lived connections"
        ),
    ]

    /// Nil when `DD_API_KEY` is unset or empty.
    init?(reader: Reader) throws(ConfigurationError) {
        guard let key = reader.string("DD_API_KEY") else { return nil }
        self.init(apiKey: key)
        if let site = reader.string("DD_SITE") {
            let isHostName =
                site.contains(".")
                && site.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
            guard isHostName else { throw reader.invalid("DD_SITE", site) }
            self.site = site.lowercased()
        }
        baseURL = "https://process.\(self.site)"
        for name in ["DD_PROCESS_CONFIG_PROCESS_DD_URL", "DD_PROCESS_AGENT_URL"] {
            guard let url = reader.string(name) else { continue }
            let lowered = url.lowercased()
            let rest =
                lowered.hasPrefix("https://") ? url.dropFirst(8) : lowered.hasPrefix("http://") ? url.dropFirst(7) : ""
            guard !rest.isEmpty, !rest.hasPrefix("/"), !url.contains(where: \.isWhitespace) else {
                throw reader.invalid(name, url)
            }
            baseURL = url.hasSuffix("/") ? String(url.dropLast()) : url
            break
        }
        if let text = reader.string("DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE") {
            guard let value = Int(text), (1...Self.maxConnectionsPerMessageLimit).contains(value) else {
                throw reader.invalid("DD_SYSTEM_PROBE_CONFIG_MAX_CONNS_PER_MESSAGE", text)
            }
            maxConnectionsPerMessage = value
        }
        queueSize = try reader.integer("DD_PROCESS_CONFIG_QUEUE_SIZE", in: 1...100_000) ?? 256
        queueBytes = try reader.integer("DD_PROCESS_CONFIG_PROCESS_QUEUE_BYTES", in: 1...4_294_967_296) ?? 60_000_000
        verifyTLS = !(try reader.bool("DD_SKIP_SSL_VALIDATION") ?? false)
        for name in ["DD_PROXY_HTTPS", "HTTPS_PROXY"] {
            guard let proxy = reader.string(name) else { continue }
            guard !proxy.contains(where: \.isWhitespace) else { throw reader.invalid(name, proxy) }
            self.proxy = proxy
            break
        }
        timeoutSeconds = try reader.seconds("DD_FORWARDER_TIMEOUT", atMost: 3600) ?? 20
        backoffBaseSeconds = try reader.seconds("DD_FORWARDER_BACKOFF_BASE", atMost: 3600) ?? 2
        backoffMaxSeconds =
            try reader.seconds("DD_FORWARDER_BACKOFF_MAX", atMost: 86_400) ?? max(64, backoffBaseSeconds)
        if backoffMaxSeconds < backoffBaseSeconds {
            throw reader.invalid("DD_FORWARDER_BACKOFF_MAX", reader.string("DD_FORWARDER_BACKOFF_MAX") ?? "")
        }
        connectionRollup = try reader.bool("DD_NETWORK_CONFIG_ENABLE_CONNECTION_ROLLUP") ?? false
    }
}

extension Reader {
    /// A positive number of seconds, at most `limit`.
    func seconds(_ name: String, atMost limit: Double) throws(ConfigurationError) -> Double? {
        guard let text = string(name) else { return nil }
        guard let value = Double(text), value.isFinite, value > 0, value <= limit else { throw invalid(name, text) }
        return value
    }
}
