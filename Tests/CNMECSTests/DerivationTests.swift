import CNMECS
import Foundation
import Testing

/// Decoding tolerance and the rules that turn values into tags, on hand-written responses.
@Suite struct DerivationTests {
    private func decodeTask(_ json: String) throws -> ECSTaskMetadata {
        try JSONDecoder().decode(ECSTaskMetadata.self, from: Data(json.utf8))
    }

    @Test(arguments: [
        ("EC2", ECSLaunchType.ec2), ("ec2", .ec2), ("Ec2", .ec2), ("FARGATE", .fargate), ("fargate", .fargate),
        ("Fargate", .fargate), ("EXTERNAL", .external), ("MANAGED_INSTANCES", .unknown("MANAGED_INSTANCES")),
        ("", .unknown("")),
    ])
    func launchTypeIgnoresCase(text: String, expected: ECSLaunchType) throws {
        let task = try decodeTask(#"{"TaskARN": "x", "LaunchType": "\#(text)"}"#)
        #expect(task.launchType == expected)
    }

    @Test func launchTypeDescription() {
        #expect(ECSLaunchType("fargate").description == "FARGATE")
        #expect(ECSLaunchType("Managed_Instances").description == "Managed_Instances")
    }

    @Test func unknownFieldsAndNullsAreIgnored() throws {
        let json = """
            {
              "Cluster": "prod", "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef0123456789abcdef",
              "Family": "web", "Revision": "7", "NewTaskField": {"Nested": [1, 2, {"x": null}]}, "ServiceName": null,
              "FaultInjectionEnabled": false, "Limits": {"CPU": 0.25, "Memory": 512},
              "Containers": [{
                "DockerId": "0123456789abcdef0123456789abcdef-1234567890", "Name": "app", "RestartCount": 2,
                "Labels": null, "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.1.2.3"], "Future": true}],
                "Snapshotter": "overlayfs", "ClockDrift": {"ClockErrorBound": 0.5}
              }]
            }
            """
        let task = try decodeTask(json)
        #expect(task.serviceName == nil)
        #expect(task.availabilityZone == nil)
        #expect(task.containers?.first?.labels == nil)
        #expect(task.containers?.first?.networks?.first?.ipv4Addresses == ["10.1.2.3"])
        let taskTags = [
            "task_arn:arn:aws:ecs:eu-west-1:123456789012:task/prod/0123456789abcdef0123456789abcdef",
            "task_family:web", "task_name:web", "task_version:7", "ecs_cluster_name:prod", "cluster_name:prod",
            "aws_account:123456789012", "region:eu-west-1",
        ]
        #expect(task.tags == taskTags)
        #expect(
            task.containerTags == ["0123456789abcdef0123456789abcdef-1234567890": taskTags + ["ecs_container_name:app"]]
        )
    }

    /// The DockerId is the one field a container cannot do without.
    @Test func containerWithoutDockerIdIsRejected() {
        #expect(throws: DecodingError.self) {
            try decodeTask(#"{"TaskARN": "x", "Containers": [{"Name": "app"}]}"#)
        }
    }

    @Test func truncatedBodyThrows() throws {
        let body = try Fixtures.ecs("awsdocs/examples/ec2-v4-task.json")
        for length in [0, 1, body.count / 2, body.count - 2] {
            #expect(throws: DecodingError.self) {
                try JSONDecoder().decode(ECSTaskMetadata.self, from: body.prefix(length))
            }
        }
    }

    @Test func containersWithoutDockerIdHaveNoTags() throws {
        let task = try decodeTask(
            #"{"Family": "web", "Containers": [{"DockerId": "", "Name": "pending"}, {"DockerId": "abc", "Name": "odd"}]}"#
        )
        // An id in neither known form is kept as sent.
        #expect(task.containerTags == ["abc": ["task_family:web", "task_name:web", "ecs_container_name:odd"]])
    }

    @Test func emptyValuesGiveNoTags() throws {
        let task = try decodeTask(
            #"{"Cluster": "", "TaskARN": "", "Family": "", "Revision": "", "ServiceName": "", "AvailabilityZone": ""}"#)
        #expect(task.tags.isEmpty)
        #expect(ECSTaskTags(task: task) == ECSTaskTags())
    }

    @Test func regionFromTheAvailabilityZoneOnlyWhenRegular() {
        func region(_ zone: String) -> String? {
            ECSTaskTags(task: ECSTaskMetadata(availabilityZone: zone)).region
        }
        #expect(region("us-west-2d") == "us-west-2")
        #expect(region("us-gov-west-1a") == "us-gov-west-1")
        #expect(region("ap-southeast-1b") == "ap-southeast-1")
        // Local Zones and Wavelength Zones are not a region plus a letter.
        #expect(region("us-west-2-lax-1a") == nil)
        #expect(region("us-east-1-wl1-bos-wlz-1") == nil)
        #expect(region("use1-az1") == nil)
        #expect(region("us-west-2") == nil)
    }

    @Test func regionAndAccountPreferTheTaskARN() {
        let tags = ECSTaskTags(
            task: ECSTaskMetadata(
                cluster: "arn:aws:ecs:eu-central-1:999999999999:cluster/c1",
                taskARN: "arn:aws:ecs:eu-west-1:123456789012:task/c1/0123456789abcdef0123456789abcdef",
                availabilityZone: "us-east-2b"
            ))
        #expect(tags.region == "eu-west-1")
        #expect(tags.account == "123456789012")
        #expect(tags.clusterName == "c1")
        #expect(tags.availabilityZone == "us-east-2b")
    }

    @Test func regionAndAccountFromTheClusterARNWithoutATaskARN() {
        let tags = ECSTaskTags(task: ECSTaskMetadata(cluster: "arn:aws-cn:ecs:cn-north-1:123456789012:cluster/c1"))
        #expect(
            tags.tags == ["ecs_cluster_name:c1", "cluster_name:c1", "aws_account:123456789012", "region:cn-north-1"])
    }

    @Test func malformedARNsGiveNoDerivedTags() {
        // Not an ECS cluster's ARN: no cluster name rather than a wrong one.
        #expect(ECSTaskTags(task: ECSTaskMetadata(cluster: "arn:aws:ecs:us-west-2:111122223333:service/x")).tags == [])
        #expect(ECSTaskTags(task: ECSTaskMetadata(cluster: "arn:aws:ecs:us-west-2:111122223333:cluster/")).tags == [])
        // The ARN is given as it is, but says nothing more.
        let odd = ECSTaskTags(task: ECSTaskMetadata(taskARN: "task/0123"))
        #expect(odd.tags == ["task_arn:task/0123"])
        let shortAccount = ECSTaskTags(task: ECSTaskMetadata(taskARN: "arn:aws:ecs:us-west-2:1234:task/abc"))
        #expect(shortAccount.account == nil)
        #expect(shortAccount.region == "us-west-2")
        let notECS = ECSTaskTags(task: ECSTaskMetadata(taskARN: "arn:aws:s3:::bucket/task"))
        #expect(notECS.region == nil)
        #expect(notECS.account == nil)
    }

    @Test func arnParts() throws {
        let arn = try #require(AmazonResourceName(parsing: "arn:aws-us-gov:ecs:us-gov-west-1:123456789012:task/a:b/c"))
        #expect(arn.partition == "aws-us-gov")
        #expect(arn.service == "ecs")
        #expect(arn.region == "us-gov-west-1")
        #expect(arn.account == "123456789012")
        #expect(arn.resource == "task/a:b/c")
        #expect(AmazonResourceName(parsing: "arn:aws:ecs:us-west-2:123456789012") == nil)
        #expect(AmazonResourceName(parsing: "urn:aws:ecs:us-west-2:123456789012:task/x") == nil)
    }

    @Test func labelsOfAContainerECSDidNotStart() {
        #expect(ecsTags(fromDockerLabels: [:]) == [])
        #expect(ecsTags(fromDockerLabels: ["com.docker.compose.service": "web"]) == [])
        #expect(ECSTaskTags(dockerLabels: [ECSLabel.cluster: ""]) == nil)
        #expect(ecsTags(fromDockerLabels: [ECSLabel.containerName: "app"]) == [])
    }

    @Test func labelsNeverGiveServiceOrZone() {
        let tags = ecsTags(fromDockerLabels: [
            ECSLabel.taskARN: "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c",
            ECSLabel.taskDefinitionFamily: "curltest",
            ECSLabel.taskDefinitionVersion: "26",
            ECSLabel.cluster: "default",
            ECSLabel.containerName: "curl",
            "com.amazonaws.ecs.service-name": "MyService",
        ])
        #expect(!tags.contains { $0.hasPrefix("ecs_service:") || $0.hasPrefix("availability") })
        #expect(tags.count == 9)
        #expect(tags.last == "ecs_container_name:curl")
    }
}
