import CNMDocker
import CNMECS
import CNMModel
import CNMReport

/// Container tags from the ECS task metadata endpoint, when the agent runs inside a task. Like the
/// Docker tagger, a failing endpoint costs tags, never flows: the last tags stay and the failure is
/// counted.
final class ECSTagger: Sendable {
    struct Result: Sendable {
        /// Tags by container id (the form a cgroup path ends in), nil when the endpoint failed.
        var tags: [String: [String]]?
        /// On Fargate, the task's own tags: every flow the agent sees belongs to the task, also one
        /// whose process (and so container) is unknown. Nil on EC2, where the host has other tasks.
        var taskWideTags: [String]?
        /// On Fargate, the task's ARN.
        var fargateTaskARN: String?
        var status: AgentStatus.Component
        var problem: (kind: String, detail: String)?
    }

    private let client: ECSMetadataClient?
    private let invalid: ECSMetadataError?

    init(uri: String, timeoutMilliseconds: Int) {
        do {
            client = try ECSMetadataClient(baseURI: uri, timeoutMilliseconds: timeoutMilliseconds)
            invalid = nil
        } catch {
            client = nil
            invalid = error
        }
    }

    func refresh() async -> Result {
        guard let client else {
            let detail = invalid.map { "\($0.message)" } ?? "unknown"
            return Result(
                status: .init("invalid_endpoint", "unusable ECS metadata endpoint: \(detail)"),
                problem: ("ecs_invalid_endpoint", detail))
        }
        do {
            let fetched = try await client.fetchTask()
            let task = fetched.task
            var tags: [String: [String]] = [:]
            for container in task.containers ?? [] {
                guard let id = normalizedECSContainerID(container.dockerID) else { continue }
                tags[id] = Self.containerTags(container, id: id) + task.tags(for: container)
            }
            let family = task.family ?? "?"
            return Result(
                tags: tags, taskWideTags: task.launchType == .fargate ? task.tags : nil,
                fargateTaskARN: task.launchType == .fargate ? task.taskARN : nil,
                status: .init(
                    "ok", "task \(family) with \(tags.count) containers (\(fetched.path.rawValue))",
                    counters: ["containers": UInt64(tags.count)]),
                problem: fetched.taskWithTagsFailure.map { ($0.kind, "taskWithTags: \($0.message)") })
        } catch {
            return Result(status: .init("unavailable", error.message), problem: (error.kind, error.message))
        }
    }

    /// On Fargate no Docker daemon names the containers: the metadata does, by the same rules.
    private static func containerTags(_ c: ECSContainerMetadata, id: String) -> [String] {
        ContainerMetadata(
            id: id, name: c.dockerName ?? "", image: c.image,
            imageReference: c.image.flatMap(ImageReference.init(parsing:))
        ).tags
    }
}
