import CNMECS
import CNMModel
import FoundationEssentials

extension FuzzTargets {
    /// A task metadata endpoint v4 response (`/task`, `/taskWithTags`) or a container's (the base URI),
    /// the same bytes tried as each, into the tags every container of the task gets.
    ///
    /// Checks that tags are unique, that an account is 12 digits, that normalising a container id twice
    /// changes nothing, and that every container with a well-formed id is found by it and tagged.
    public static func ecsMetadata(_ input: [UInt8]) {
        let data = Data(input)
        let decoder = JSONDecoder()
        if let task = try? decoder.decode(ECSTaskMetadata.self, from: data) {
            let tags = task.tags
            invariant(Set(tags).count == tags.count, "a task tag twice in \(tags)")
            let taskTags = ECSTaskTags(task: task)
            if let account = taskTags.account {
                invariant(
                    account.utf8.count == 12 && account.utf8.allSatisfy { $0 >= 48 && $0 <= 57 }, "account \(account)")
            }
            let byContainer = task.containerTags
            for container in (task.containers ?? []).prefix(16) {
                checkContainer(container)
                _ = task.tags(for: container)
                guard let id = normalizedECSContainerID(container.dockerID) else { continue }
                invariant(task.container(withID: id) != nil, "container \(id) not found by its id")
                invariant(byContainer[id] != nil, "container \(id) has no tags")
            }
        }
        if let container = try? decoder.decode(ECSContainerMetadata.self, from: data) {
            checkContainer(container)
        }
    }

    private static func checkContainer(_ container: ECSContainerMetadata) {
        invariant(container.ipAddresses.isStrictlyAscending, "addresses not sorted or repeated")
        if let id = normalizedECSContainerID(container.dockerID) {
            invariant(normalizedECSContainerID(id) == id, "\(id) normalises to something else")
            invariant(ecsContainerIDsMatch(id, container.dockerID), "\(id) does not match \(container.dockerID)")
        }
        let labels = container.labels ?? [:]
        let tags = ecsTags(fromDockerLabels: labels)
        invariant(Set(tags).count == tags.count, "a label tag twice in \(tags)")
        if let arn = labels[ECSLabel.taskARN], let parsed = AmazonResourceName(parsing: arn) {
            invariant(!parsed.partition.isEmpty && !parsed.resource.isEmpty, "ARN parts missing in \(arn)")
        }
    }
}
