import CNMECS
import CNMModel
import Foundation
import Testing

/// Real v4 responses (the AWS developer guide's examples, and the test data of the Datadog agent and
/// the OpenTelemetry ECS detectors) decode, and the tags derived from them are the values in the files.
@Suite struct FixtureTagTests {
    private func address(_ text: String) -> IPAddress {
        guard let address = IPAddress(parsing: text) else { preconditionFailure("not an address: \(text)") }
        return address
    }

    // The AWS examples: EC2, awsvpc network mode, with the pause container listed.
    private static let docsTaskARN = "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c"
    private static let docsPauseID = "598cba581fe3f939459eaba1e071d5c93bb2c49b7d1ba7db6bb19deeb70d8e38"
    private static let docsCurlID = "ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca"
    private static let docsTaskTags = [
        "task_arn:\(docsTaskARN)", "task_family:curltest", "task_name:curltest", "task_version:26",
        "ecs_cluster_name:default", "cluster_name:default", "ecs_service:MyService", "aws_account:111122223333",
        "region:us-west-2", "availability_zone:us-west-2d", "availability-zone:us-west-2d",
    ]

    private func expectDocsTask(_ task: ECSTaskMetadata) throws {
        #expect(task.cluster == "default")
        #expect(task.taskARN == Self.docsTaskARN)
        #expect(task.family == "curltest")
        #expect(task.revision == "26")
        #expect(task.serviceName == "MyService")
        #expect(task.availabilityZone == "us-west-2d")
        #expect(task.vpcID == "vpc-1234567890abcdef0")
        #expect(task.launchType == .ec2)
        let containers = try #require(task.containers)
        #expect(containers.map(\.dockerID) == [Self.docsPauseID, Self.docsCurlID])
        #expect(containers.map(\.name) == ["~internal~ecs~pause", "curl"])
        #expect(containers.map(\.type) == ["CNI_PAUSE", "NORMAL"])
        #expect(containers[1].dockerName == "ecs-curltest-26-curl-a0e7dba5aca6d8cb2e00")
        #expect(containers[1].networks?.first?.networkMode == "awsvpc")
        #expect(containers.map(\.ipAddresses) == [[address("10.0.2.61")], [address("10.0.2.61")]])

        #expect(task.tags == Self.docsTaskTags)
        #expect(
            task.containerTags == [
                Self.docsPauseID: Self.docsTaskTags + ["ecs_container_name:~internal~ecs~pause"],
                Self.docsCurlID: Self.docsTaskTags + ["ecs_container_name:curl"],
            ])
        #expect(task.tags(for: containers[1]) == Self.docsTaskTags + ["ecs_container_name:curl"])
        #expect(task.container(withID: Self.docsCurlID.uppercased())?.name == "curl")
        #expect(
            task.container(withID: "/ecs/158d1c8083dd49d6b527399fd6414f5c/\(Self.docsPauseID)")?.type == "CNI_PAUSE")
    }

    @Test func ec2AwsvpcTask() throws {
        let task = try Fixtures.task("awsdocs/examples/ec2-v4-task.json")
        try expectDocsTask(task)
        #expect(task.taskTags == nil)
        #expect(task.containerInstanceTags == nil)
        #expect(task.errors == nil)
    }

    @Test func ec2AwsvpcTaskWithTags() throws {
        let task = try Fixtures.task("awsdocs/examples/ec2-v4-taskWithTags.json")
        try expectDocsTask(task)
        #expect(task.taskTags == ["tag-use": "task-metadata-endpoint-test"])
        #expect(task.containerInstanceTags == ["tag_key": "tag_value"])
        #expect(task.errors == nil)
    }

    /// The tag lookups failed, but the task itself is whole and gives every tag.
    @Test func ec2TaskWithTagsError() throws {
        let task = try Fixtures.task("awsdocs/examples/ec2-v4-taskWithTags-error.json")
        try expectDocsTask(task)
        #expect(task.taskTags == nil)
        #expect(task.containerInstanceTags == nil)
        let errors = try #require(task.errors)
        #expect(errors.map(\.errorField) == ["ContainerInstanceTags", "TaskTags"])
        #expect(errors.map(\.errorCode) == ["AccessDeniedException", "AccessDeniedException"])
        #expect(errors.map(\.statusCode) == [400, 400])
        #expect(
            errors[1].resourceARN == "arn:aws:ecs:us-west-2:111122223333:task/default/9ef30e4b7aa44d0db562749cff4983f3")
    }

    /// The same task from the OpenTelemetry detector's data, from an ECS agent without ServiceName.
    @Test func ec2TaskWithoutServiceName() throws {
        let task = try Fixtures.task("v4/otel-go/metadatav4-response-task-ec2.json")
        #expect(task.serviceName == nil)
        #expect(task.vpcID == nil)
        let expected = Self.docsTaskTags.filter { $0 != "ecs_service:MyService" }
        #expect(task.tags == expected)
        #expect(task.containerTags[Self.docsCurlID] == expected + ["ecs_container_name:curl"])
    }

    /// Bridge mode, from the Datadog agent: the task ARN's account differs from the container
    /// ARN's, and the labels are partial.
    @Test func ec2BridgeTaskWithTags() throws {
        let task = try Fixtures.task("v4/datadog/ec2-bridge-taskWithTags-nginx.json")
        let id = "2ad9e753a0dfbba1c91e0e7bebaaf3a0918d3ef304b7549b1ced5f573bc05645"
        let arn = "arn:aws:ecs:us-east-1:123457279990:task/ecs-cluster/e39c666b3b134c2ca2241c4c3c64e6ac"
        #expect(task.launchType == .ec2)
        #expect(task.serviceName == "nginx-ec2")
        #expect(task.taskTags == ["tag-test": "task-test-value"])
        let container = try #require(task.containers?.first)
        #expect(task.containers?.count == 1)
        #expect(container.dockerID == id)
        #expect(container.name == "my-nginx")
        #expect(container.dockerName == "nginx-my-nginx-aa9883f7f3d6c5f73e00")
        #expect(container.image == "ghcr.io/nginx/my-nginx:main")
        #expect(container.networks == [.init(networkMode: "bridge", ipv4Addresses: ["172.17.0.3"])])
        #expect(container.ipAddresses == [address("172.17.0.3")])
        #expect(
            container.ports == [
                .init(containerPort: 8125, transportProtocol: "udp", hostPort: 8125, hostIP: "0.0.0.0"),
                .init(containerPort: 8125, transportProtocol: "udp", hostPort: 8125, hostIP: "::"),
            ])

        let taskTags = [
            "task_arn:\(arn)", "task_family:nginx", "task_name:nginx", "task_version:3",
            "ecs_cluster_name:ecs-cluster", "cluster_name:ecs-cluster", "ecs_service:nginx-ec2",
            "aws_account:123457279990", "region:us-east-1", "availability_zone:us-east-1a",
            "availability-zone:us-east-1a",
        ]
        #expect(task.tags == taskTags)
        #expect(task.containerTags == [id: taskTags + ["ecs_container_name:my-nginx"]])

        // Only the cluster and container-name labels: the rest stays unknown.
        #expect(
            ecsTags(fromDockerLabels: container.labels ?? [:]) == [
                "ecs_cluster_name:ecs-cluster", "cluster_name:ecs-cluster", "ecs_container_name:nginx",
            ])
    }

    /// Bridge mode, from the OpenTelemetry collector: lower-case `ec2`, three containers with their
    /// own addresses, one stopped.
    @Test func ec2BridgeTask() throws {
        let task = try Fixtures.task("v4/otel-collector/ec2-bridge-task_metadata.json")
        let arn = "arn:aws:ecs:us-west-2:803860917211:task/test200/d22aaa11bf0e4ab19c2c940a1cbabbee"
        #expect(task.launchType == .ec2)
        #expect(task.cluster == "test200")
        let containers = try #require(task.containers)
        let ids = [
            "5302b3fac16c62951717f444030cb1b8f233f40c03fe5507fc127ca1a70597da",
            "4a984770705c4f4f95e1267af3623ab0923c602b7cd4ed7d77b7f8356537337f",
            "fffb51bc2ca1f0205be9579b893372e728cd3bf6823c006f417323565b8cb7d1",
        ]
        #expect(containers.map(\.dockerID) == ids)
        #expect(containers.map(\.name) == ["nginx100", "nginx300", "nginx200"])
        #expect(containers.map(\.knownStatus) == ["RUNNING", "RUNNING", "STOPPED"])
        #expect(
            containers.map(\.ipAddresses) == [
                [address("172.17.0.3")], [address("172.17.0.4")], [address("172.17.0.2")],
            ])

        let taskTags = [
            "task_arn:\(arn)", "task_family:three-nginx", "task_name:three-nginx", "task_version:1",
            "ecs_cluster_name:test200", "cluster_name:test200", "aws_account:803860917211", "region:us-west-2",
            "availability_zone:us-west-2a", "availability-zone:us-west-2a",
        ]
        #expect(task.tags == taskTags)
        #expect(
            task.containerTags == [
                ids[0]: taskTags + ["ecs_container_name:nginx100"],
                ids[1]: taskTags + ["ecs_container_name:nginx300"],
                ids[2]: taskTags + ["ecs_container_name:nginx200"],
            ])

        // The labels give the same tags but the availability zone's.
        let fromLabels = taskTags.filter { !$0.hasPrefix("availability") }
        for container in containers {
            #expect(
                ecsTags(fromDockerLabels: container.labels ?? [:])
                    == fromLabels + ["ecs_container_name:\(container.name ?? "")"])
        }
    }

    /// Fargate: the cluster is an ARN, the DockerId is `<task id>-<digits>`, dual-stack addresses.
    @Test func fargateTask() throws {
        let task = try Fixtures.task("v4/otel-go/metadatav4-response-task-fargate.json")
        let id = "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603"
        let arn = "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3"
        #expect(task.launchType == .fargate)
        #expect(task.cluster == "arn:aws:ecs:us-west-2:111122223333:cluster/default")
        #expect(task.serviceName == nil)
        let container = try #require(task.containers?.first)
        #expect(container.dockerID == id)
        #expect(container.name == "curl")
        #expect(container.dockerName == "curl")
        #expect(container.ipAddresses == [address("192.0.2.3"), address("2001:db8:10b:1a00:32bf:a372:d80f:e958")])

        let taskTags = [
            "task_arn:\(arn)", "task_family:curltest", "task_name:curltest", "task_version:3",
            "ecs_cluster_name:default", "cluster_name:default", "aws_account:111122223333", "region:us-west-2",
            "availability_zone:us-west-2a", "availability-zone:us-west-2a",
        ]
        #expect(task.tags == taskTags)
        #expect(task.containerTags == [id: taskTags + ["ecs_container_name:curl"]])
        #expect(task.container(withID: "1:name=systemd:/ecs/e9028f8d5d8e4f258373e7b93ce9a3c3/\(id)")?.name == "curl")
    }

    /// The container endpoint's answers, and the tags their labels give on their own.
    @Test func containerResponses() throws {
        let ec2 = try Fixtures.container("awsdocs/examples/ec2-v4-container.json")
        #expect(ec2 == (try Fixtures.container("v4/otel-go/metadatav4-response-container-ec2.json")))
        #expect(ec2.dockerID == "ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66")
        #expect(ec2.containerARN == "arn:aws:ecs:us-west-2:111122223333:container/0206b271-b33f-47ab-86c6-a0ba208a70a9")
        #expect(ec2.ipAddresses == [address("10.0.2.100")])
        #expect(
            ecsTags(fromDockerLabels: ec2.labels ?? [:]) == [
                "task_arn:arn:aws:ecs:us-west-2:111122223333:task/default/8f03e41243824aea923aca126495f665",
                "task_family:curltest", "task_name:curltest", "task_version:24", "ecs_cluster_name:default",
                "cluster_name:default", "aws_account:111122223333", "region:us-west-2", "ecs_container_name:curl",
            ])

        let fargate = try Fixtures.container("v4/otel-go/metadatav4-response-container-fargate.json")
        #expect(fargate.dockerID == "cd189a933e5849daa93386466019ab50-2495160603")
        #expect(fargate.dockerName == "curl")
        #expect(fargate.networks?.first?.ipv4Addresses == ["192.0.2.3"])
        // The cluster label holds the ARN; the tag is the short name.
        #expect(
            ecsTags(fromDockerLabels: fargate.labels ?? [:]) == [
                "task_arn:arn:aws:ecs:us-west-2:111122223333:task/default/cd189a933e5849daa93386466019ab50",
                "task_family:curltest", "task_name:curltest", "task_version:2", "ecs_cluster_name:default",
                "cluster_name:default", "aws_account:111122223333", "region:us-west-2", "ecs_container_name:curl",
            ])
    }
}
