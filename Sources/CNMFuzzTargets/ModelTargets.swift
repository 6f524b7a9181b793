import CNMModel

extension FuzzTargets {
    /// An address as Docker, ECS and the configuration write it, and as 4 or 16 bytes in network order.
    ///
    /// Checks that an address printed parses back to itself.
    public static func ipAddress(_ input: [UInt8]) {
        if let address = IPAddress(parsing: String(decoding: input, as: UTF8.self)) {
            invariant(IPAddress(parsing: address.description) == address, "\(address) does not parse back")
        }
        if let address = IPAddress(networkBytes: input) {
            invariant(IPAddress(parsing: address.description) == address, "\(address) does not parse back")
        }
    }

    /// The agent's environment, one `KEY=VALUE` per line, into its configuration.
    ///
    /// Checks the documented bounds of what a configuration that was accepted holds, and that the API's
    /// listen address, printed, is read back the same.
    public static func configuration(_ input: [UInt8]) {
        var environment: [String: String] = [:]
        for line in String(decoding: input, as: UTF8.self).split(separator: "\n").prefix(64) {
            guard let equals = line.firstIndex(of: "=") else { continue }
            environment[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        guard let configuration = try? Configuration(environment: environment) else { return }
        invariant((1...3600).contains(configuration.intervalSeconds), "interval \(configuration.intervalSeconds)")
        invariant(
            configuration.sampleSeconds > 0 && configuration.sampleSeconds <= Double(configuration.intervalSeconds),
            "sample interval \(configuration.sampleSeconds)")
        invariant((1...4_194_304).contains(configuration.maxTrackedConnections), "max tracked connections")
        invariant((1...10_000).contains(configuration.tableRows), "table rows \(configuration.tableRows)")
        invariant((1...1024).contains(configuration.apiMaxConcurrent), "API concurrency")
        invariant((1...60_000).contains(configuration.ecsMetadataTimeoutMilliseconds), "ECS timeout")
        invariant(configuration.httpAddress.port > 0, "API port 0")
        if let intake = configuration.intake {
            invariant(
                (1...IntakeSettings.maxConnectionsPerMessageLimit).contains(intake.maxConnectionsPerMessage),
                "connections per message \(intake.maxConnectionsPerMessage)")
            invariant(
                intake.timeoutSeconds > 0 && intake.backoffBaseSeconds <= intake.backoffMaxSeconds, "intake times")
            _ = intake.description
            _ = intake.intakeHost
        }
        _ = configuration.excludes(containerName: "web", images: ["busybox", "busybox:latest"])
        if configuration.httpSocketPath == nil {
            let printed = configuration.apiListenDescription
            let again = try? Configuration(environment: ["DD_CNM_HTTP_ADDR": printed])
            invariant(again?.httpAddress == configuration.httpAddress, "\(printed) is read back otherwise")
        }
    }
}
