/// What an ECS task says about itself, as Datadog's ECS tags. A value that is absent, empty or not in
/// the expected form stays nil and gives no tag: nothing is guessed.
public struct ECSTaskTags: Sendable, Equatable {
    public var taskARN: String?
    public var family: String?
    /// The task definition revision.
    public var version: String?
    /// Always the short name, also when the source gave the cluster's ARN.
    public var clusterName: String?
    public var serviceName: String?
    public var availabilityZone: String?
    public var region: String?
    /// The 12-digit AWS account id.
    public var account: String?

    public init(
        taskARN: String? = nil,
        family: String? = nil,
        version: String? = nil,
        clusterName: String? = nil,
        serviceName: String? = nil,
        availabilityZone: String? = nil,
        region: String? = nil,
        account: String? = nil
    ) {
        self.taskARN = taskARN
        self.family = family
        self.version = version
        self.clusterName = clusterName
        self.serviceName = serviceName
        self.availabilityZone = availabilityZone
        self.region = region
        self.account = account
    }

    /// From a task metadata response. The region and account come from the task ARN, else from
    /// the cluster ARN; the region, failing both, from a regular availability zone's name.
    public init(task: ECSTaskMetadata) {
        self.init(
            taskARN: task.taskARN,
            family: task.family,
            version: task.revision,
            cluster: task.cluster,
            serviceName: task.serviceName,
            availabilityZone: task.availabilityZone
        )
    }

    /// From the `com.amazonaws.ecs.*` labels the ECS agent puts on every container it starts, for
    /// when the agent runs beside the task rather than inside it. The labels carry no service or
    /// availability zone. Nil when the container has none of the task labels.
    public init?(dockerLabels labels: [String: String]) {
        let arn = labels[ECSLabel.taskARN]
        let family = labels[ECSLabel.taskDefinitionFamily]
        let version = labels[ECSLabel.taskDefinitionVersion]
        let cluster = labels[ECSLabel.cluster]
        guard [arn, family, version, cluster].contains(where: { $0?.isEmpty == false }) else { return nil }
        self.init(taskARN: arn, family: family, version: version, cluster: cluster)
    }

    private init(
        taskARN: String?,
        family: String?,
        version: String?,
        cluster: String?,
        serviceName: String? = nil,
        availabilityZone: String? = nil
    ) {
        let taskARN = taskARN.nonEmpty
        let cluster = cluster.nonEmpty
        let parsedTaskARN = taskARN.flatMap(ecsARN)
        let clusterName = cluster.flatMap(shortClusterName)
        // Only a well-formed cluster ARN is trusted for its region and account.
        let parsedClusterARN = clusterName == nil ? nil : cluster.flatMap(ecsARN)
        let availabilityZone = availabilityZone.nonEmpty
        self.init(
            taskARN: taskARN,
            family: family.nonEmpty,
            version: version.nonEmpty,
            clusterName: clusterName,
            serviceName: serviceName.nonEmpty,
            availabilityZone: availabilityZone,
            region: parsedTaskARN?.region.nonEmpty ?? parsedClusterARN?.region.nonEmpty
                ?? availabilityZone.flatMap(region(fromAvailabilityZone:)),
            account: [parsedTaskARN, parsedClusterARN].lazy.compactMap { $0?.account }.first(where: isAccountID)
        )
    }

    /// `task_arn`, `task_family`, `task_name`, `task_version`, `ecs_cluster_name`, `cluster_name`,
    /// `ecs_service`, `aws_account`, `region`, `availability_zone`, `availability-zone`; each only
    /// when its value is known.
    public var tags: [String] {
        var out: [String] = []
        func add(_ keys: String..., value: String?) {
            guard let value, !value.isEmpty else { return }
            out += keys.map { "\($0):\(value)" }
        }
        add("task_arn", value: taskARN)
        add("task_family", "task_name", value: family)
        add("task_version", value: version)
        add("ecs_cluster_name", "cluster_name", value: clusterName)
        add("ecs_service", value: serviceName)
        add("aws_account", value: account)
        add("region", value: region)
        add("availability_zone", "availability-zone", value: availabilityZone)
        return out
    }
}

/// The labels the ECS agent puts on the containers it starts.
public enum ECSLabel {
    public static let cluster = "com.amazonaws.ecs.cluster"
    public static let containerName = "com.amazonaws.ecs.container-name"
    public static let taskARN = "com.amazonaws.ecs.task-arn"
    public static let taskDefinitionFamily = "com.amazonaws.ecs.task-definition-family"
    /// The revision; the label says version.
    public static let taskDefinitionVersion = "com.amazonaws.ecs.task-definition-version"
}

extension ECSTaskMetadata {
    /// The ECS tags every container of the task shares (not to be confused with `taskTags`, the
    /// task's AWS resource tags).
    public var tags: [String] { ECSTaskTags(task: self).tags }

    /// The task's tags, then `ecs_container_name` when the container has a name.
    public func tags(for container: ECSContainerMetadata) -> [String] {
        tags + containerNameTag(container.name)
    }

    /// The tags of every container of the task, by DockerId in the form `normalizedECSContainerID`
    /// gives (the DockerId as sent when it is in neither known form). Containers without a DockerId
    /// (not created yet) are left out.
    public var containerTags: [String: [String]] {
        let shared = tags
        var out: [String: [String]] = [:]
        for container in containers ?? [] where !container.dockerID.isEmpty {
            let key = normalizedECSContainerID(container.dockerID) ?? container.dockerID
            out[key] = shared + containerNameTag(container.name)
        }
        return out
    }
}

/// The ECS tags of a container from its Docker labels alone: the task tags `ECSTaskTags(dockerLabels:)`
/// can give, then `ecs_container_name`. Empty for a container ECS did not start.
public func ecsTags(fromDockerLabels labels: [String: String]) -> [String] {
    guard let task = ECSTaskTags(dockerLabels: labels) else { return [] }
    return task.tags + containerNameTag(labels[ECSLabel.containerName])
}

private func containerNameTag(_ name: String?) -> [String] {
    guard let name, !name.isEmpty else { return [] }
    return ["ecs_container_name:\(name)"]
}

/// The parts of an Amazon Resource Name, `arn:partition:service:region:account-id:resource`.
public struct AmazonResourceName: Sendable, Equatable {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    public var partition: String
    public var service: String
    public var region: String
    public var account: String
    /// Everything after the fifth colon, colons included: `task/<cluster>/<id>`, `cluster/<name>`.
    public var resource: String

    public init?(parsing text: some StringProtocol) {
        let parts = text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "arn", !parts[1].isEmpty, !parts[2].isEmpty, !parts[5].isEmpty else {
            return nil
        }
        partition = String(parts[1])
        service = String(parts[2])
        region = String(parts[3])
        account = String(parts[4])
        resource = String(parts[5])
    }
}

private func ecsARN(_ text: String) -> AmazonResourceName? {
    guard let arn = AmazonResourceName(parsing: text), arn.service == "ecs" else { return nil }
    return arn
}

/// `default` for `default` as well as for `arn:aws:ecs:us-west-2:111122223333:cluster/default`; nil for
/// an ARN that is not a cluster's.
func shortClusterName(_ cluster: String) -> String? {
    guard cluster.hasPrefix("arn:") else { return cluster.isEmpty ? nil : cluster }
    guard let arn = ecsARN(cluster), arn.resource.hasPrefix("cluster/") else { return nil }
    let name = arn.resource.dropFirst("cluster/".count)
    return name.isEmpty || name.contains("/") ? nil : String(name)
}

/// The region of a regular availability zone, which is the region's name and one letter (`us-west-2d`,
/// `us-gov-west-1a`). Local Zones (`us-west-2-lax-1a`) and Wavelength Zones (`us-east-1-wl1-bos-wlz-1`)
/// are named otherwise, and give nil rather than a wrong region.
func region(fromAvailabilityZone zone: String) -> String? {
    let parts = zone.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count >= 3, parts[0].utf8.count == 2, let last = parts.last?.utf8, let letter = last.last,
        parts.dropLast().allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy(isLowercaseLetter) }),
        isLowercaseLetter(letter), last.count >= 2, last.dropLast().allSatisfy(isDigit)
    else { return nil }
    return String(zone.dropLast())
}

func isAccountID(_ text: String) -> Bool {
    text.utf8.count == 12 && text.utf8.allSatisfy(isDigit)
}

/// A DockerId as the task metadata gives it and as it ends a cgroup path: 64 hex (EC2, Fargate before
/// platform 1.4) or `<32 hex task id>-<digits>` (Fargate 1.4+). Takes the text after the last `/`, so a
/// cgroup path or `docker://<id>` also does, and lowercases it; nil when it is in neither form.
public func normalizedECSContainerID(_ text: some StringProtocol) -> String? {
    var id = Substring(text)
    while let first = id.first, first.isWhitespace { id = id.dropFirst() }
    while let last = id.last, last.isWhitespace { id = id.dropLast() }
    if let slash = id.lastIndex(of: "/") { id = id[id.index(after: slash)...] }
    let lowered = id.lowercased()
    if isHex(lowered.utf8, count: 64) { return lowered }
    guard let dash = lowered.utf8.firstIndex(of: UInt8(ascii: "-")) else { return nil }
    let task = lowered.utf8[..<dash]
    let digits = lowered.utf8[lowered.utf8.index(after: dash)...]
    guard isHex(task, count: 32), (1...10).contains(digits.count), digits.allSatisfy(isDigit) else { return nil }
    return lowered
}

/// Whether two container ids, in any form `normalizedECSContainerID` accepts, name the same container.
public func ecsContainerIDsMatch(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
    guard let a = normalizedECSContainerID(a) else { return false }
    return a == normalizedECSContainerID(b)
}

private func isHex(_ bytes: some Collection<UInt8>, count: Int) -> Bool {
    bytes.count == count && bytes.allSatisfy { isDigit($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
}

private func isDigit(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
}

private func isLowercaseLetter(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
}

extension Optional where Wrapped == String {
    fileprivate var nonEmpty: String? {
        guard let self, !self.isEmpty else { return nil }
        return self
    }
}

extension String {
    fileprivate var nonEmpty: String? { isEmpty ? nil : self }
}
