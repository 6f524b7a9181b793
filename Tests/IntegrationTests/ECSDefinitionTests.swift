import CNMTestSupport
import Foundation
import Testing

/// The task definitions and CloudFormation templates in ecs/: valid input for ECS and CloudFormation
/// (scripts/validate-ecs.py checks them against botocore's model of the ECS API and with cfn-lint), and
/// giving the agent what it needs as a daemon on EC2 and as a Fargate sidecar.
@Suite struct ECSDefinitionTests {
    static let ecs = Environment.root.appendingPathComponent("ecs")
    static let validator = Environment.root.appendingPathComponent("scripts/validate-ecs.py").path

    /// The project's Python environment (`make test-deps` makes it, with botocore and cfn-lint), else
    /// the `python3` on PATH.
    static var python: String {
        let venv = Environment.root.appendingPathComponent(".build/python/bin/python3").path
        return FileManager.default.isExecutableFile(atPath: venv) ? venv : "python3"
    }

    /// Whether that Python has botocore and cfn-lint.
    static var validatorCanRun: Bool {
        (try? Environment.run("/usr/bin/env", [python, "-c", "import botocore, cfnlint"]).status) == 0
    }

    /// Runs the validator on `paths`; its standard output, or a `TestFailure` with its standard error.
    @discardableResult
    static func validate(_ paths: [String]) throws -> String {
        try NetworkLab.command("env", [python, validator] + paths, timeout: .seconds(120))
    }

    static func taskDefinition(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: ecs.appendingPathComponent(name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func agentContainer(_ task: [String: Any]) throws -> [String: Any] {
        let containers = task["containerDefinitions"] as? [[String: Any]] ?? []
        return try #require(containers.first { $0["name"] as? String == "cnm-agent" }, "no container cnm-agent")
    }

    static func environment(_ container: [String: Any]) -> [String: String] {
        let pairs = (container["environment"] as? [[String: String]] ?? []).compactMap { entry in
            entry["name"].map { ($0, entry["value"] ?? "") }
        }
        return Dictionary(pairs) { first, _ in first }
    }

    static func addedCapabilities(_ container: [String: Any]) -> [String] {
        let linux = container["linuxParameters"] as? [String: Any]
        return (linux?["capabilities"] as? [String: Any])?["add"] as? [String] ?? []
    }

    /// The variables the agent's README documents, and the two the definitions carry for Datadog.
    static func knownVariables() throws -> Set<String> {
        let readme = try String(contentsOf: Environment.root.appendingPathComponent("README.md"), encoding: .utf8)
        let rows = readme.split(separator: "\n").filter { $0.hasPrefix("| `") }
        let names = rows.flatMap { row in
            row.split(separator: "|", omittingEmptySubsequences: true).first.map { cell in
                cell.split(separator: "`").enumerated().filter { $0.offset % 2 == 1 }.map { String($0.element) }
            } ?? []
        }
        return Set(names).union(["DD_API_KEY", "DD_SITE"])
    }

    @Test(
        .enabled(
            if: ECSDefinitionTests.validatorCanRun,
            "needs botocore and cfn-lint for python3: make test-deps installs them in .build/python")
    )
    func everyDefinitionAndTemplateIsValid() throws {
        let output = try Self.validate([Self.ecs.path])
        #expect(output.contains("daemon-ec2.json (RegisterTaskDefinition input)"), "\(output)")
        #expect(output.contains("fargate-sidecar.yaml (cfn-lint)"), "\(output)")
        #expect(output.contains("checks, 0 failing"), "\(output)")
    }

    /// The validator is not a rubber stamp: copies of the task definitions, each with one deliberate error.
    @Test(
        .enabled(
            if: ECSDefinitionTests.validatorCanRun,
            "needs botocore and cfn-lint for python3: make test-deps installs them in .build/python")
    )
    func aDefinitionWithAnErrorIsRejected() throws {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("cnm-ecs-\(UInt32.random(in: 0..<UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        var daemon = try Self.taskDefinition("daemon-ec2.json")
        daemon["pidMode"] = 7
        var unknown = try Self.taskDefinition("daemon-ec2.json")
        unknown["hostPidMode"] = "host"
        var fargate = try Self.taskDefinition("fargate-sidecar.json")
        var containers = try #require(fargate["containerDefinitions"] as? [[String: Any]])
        let sidecar = try #require(containers.firstIndex { $0["name"] as? String == "cnm-agent" })
        containers[sidecar]["linuxParameters"] = ["capabilities": ["add": ["SYS_PTRACE", "NET_ADMIN"]]]
        fargate["containerDefinitions"] = containers
        for (name, task) in [("wrong-type", daemon), ("unknown-key", unknown), ("fargate-cap", fargate)] {
            try JSONSerialization.data(withJSONObject: task).write(to: directory.appendingPathComponent("\(name).json"))
        }

        let error = #expect(throws: TestFailure.self) { try Self.validate([directory.path]) }
        let message = error?.description ?? ""
        #expect(message.contains("exited with 1"), "\(message)")
        #expect(message.contains("Invalid type for parameter pidMode"), "\(message)")
        #expect(message.contains("Unknown parameter in input: \"hostPidMode\""), "\(message)")
        #expect(message.contains("Fargate supports adding SYS_PTRACE only"), "\(message)")
        #expect(message.contains("3 checks, 3 failing"), "\(message)")
    }

    @Test func theDaemonSeesTheWholeHost() throws {
        let task = try Self.taskDefinition("daemon-ec2.json")
        #expect(task["pidMode"] as? String == "host")
        #expect(task["networkMode"] as? String == "host")
        #expect(task["requiresCompatibilities"] as? [String] == ["EC2"])
        let agent = try Self.agentContainer(task)
        let volumes = task["volumes"] as? [[String: Any]] ?? []
        let proc = try #require(volumes.first { ($0["host"] as? [String: String])?["sourcePath"] == "/proc" })
        let mounts = agent["mountPoints"] as? [[String: Any]] ?? []
        let mount = try #require(mounts.first { $0["sourceVolume"] as? String == proc["name"] as? String })
        #expect(mount["containerPath"] as? String == "/host/proc")
        #expect(mount["readOnly"] as? Bool == true)
        #expect(Self.environment(agent)["HOST_PROC"] == "/host/proc")
        // On the host's network the API must stay on loopback: it names everything on the instance.
        #expect(Self.environment(agent)["DD_CNM_HTTP_ADDR"] == "127.0.0.1:7777")
        #expect(
            Set(Self.addedCapabilities(agent)) == [
                "SYS_ADMIN", "SYS_RESOURCE", "SYS_PTRACE", "NET_ADMIN", "NET_BROADCAST", "NET_RAW", "IPC_LOCK", "CHOWN",
            ])
    }

    @Test func theFargateSidecarRunsEBPFLessWithSysPtraceAlone() throws {
        let task = try Self.taskDefinition("fargate-sidecar.json")
        #expect(task["pidMode"] as? String == "task")
        #expect(task["networkMode"] as? String == "awsvpc")
        #expect(task["requiresCompatibilities"] as? [String] == ["FARGATE"])
        let agent = try Self.agentContainer(task)
        #expect(agent["essential"] as? Bool == false)
        #expect(Self.addedCapabilities(agent) == ["SYS_PTRACE"])
        let environment = Self.environment(agent)
        #expect(environment["DD_NETWORK_CONFIG_ENABLE_EBPFLESS"] == "true")
        #expect(environment["DD_CNM_HTTP_ADDR"] == "127.0.0.1:7777")
        #expect(environment["HOST_PROC"] == nil, "the task's own /proc is the one to read")
    }

    @Test(arguments: ["daemon-ec2.json", "fargate-sidecar.json"])
    func theAgentIsConfiguredOnlyWithDocumentedVariables(file: String) throws {
        let agent = try Self.agentContainer(try Self.taskDefinition(file))
        let known = try Self.knownVariables()
        #expect(known.contains("DD_NETWORK_CONFIG_ENABLE_EBPFLESS"), "the README's table was not read: \(known)")
        let undocumented = Self.environment(agent).keys.filter { !known.contains($0) }.sorted()
        #expect(undocumented.isEmpty, "\(file) sets variables the README does not document")
        let secrets = (agent["secrets"] as? [[String: String]] ?? []).compactMap { $0["name"] }
        #expect(secrets == ["DD_API_KEY"])
        #expect(Self.environment(agent)["DD_API_KEY"] == nil, "the API key is a secret, never a plain variable")
        let health = agent["healthCheck"] as? [String: Any]
        #expect(health?["command"] as? [String] == ["CMD", "/usr/local/bin/cnm-agent", "health"])
    }
}
