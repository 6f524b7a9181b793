import CNMECS
import Foundation
import Testing

@Suite struct ContainerIDTests {
    private static let ec2ID = "3c94e08259a6235781bb65f3dec91150c92e9d414ecc410d6245687392d3900f"

    @Test func acceptedForms() {
        #expect(normalizedECSContainerID(Self.ec2ID) == Self.ec2ID)
        #expect(normalizedECSContainerID(Self.ec2ID.uppercased()) == Self.ec2ID)
        #expect(normalizedECSContainerID(" \(Self.ec2ID)\n") == Self.ec2ID)
        #expect(normalizedECSContainerID("docker://\(Self.ec2ID)") == Self.ec2ID)
        let fargate = "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603"
        #expect(normalizedECSContainerID(fargate) == fargate)
        #expect(normalizedECSContainerID("E9028F8D5D8E4F258373E7B93CE9A3C3-2495160603") == fargate)
        #expect(normalizedECSContainerID("/ecs/e9028f8d5d8e4f258373e7b93ce9a3c3/\(fargate)") == fargate)
        // Fewer than 10 digits also occurs.
        let nineDigits = "0520ecd8e4194fd48309d1ae6eec92ec-946514567"
        #expect(normalizedECSContainerID(nineDigits) == nineDigits)
    }

    @Test func rejectedForms() {
        for text in [
            "", "/", String(Self.ec2ID.dropLast()), Self.ec2ID + "0", "docker-\(Self.ec2ID).scope",
            "e9028f8d5d8e4f258373e7b93ce9a3c3", "e9028f8d5d8e4f258373e7b93ce9a3c3-",
            "e9028f8d5d8e4f258373e7b93ce9a3c3-12345678901",
            "e9028f8d5d8e4f258373e7b93ce9a3c-2495160603", "e9028f8d5d8e4f258373e7b93ce9a3cg-2495160603",
            "e9028f8d5d8e4f258373e7b93ce9a3c3-24951606a3", "628967a1-46b4-4a8a-84ff-605128f4679e", "\(Self.ec2ID)/",
        ] {
            #expect(normalizedECSContainerID(text) == nil, "\(text)")
        }
    }

    @Test func matching() {
        #expect(ecsContainerIDsMatch(Self.ec2ID, Self.ec2ID.uppercased()))
        #expect(ecsContainerIDsMatch("/ecs/628967a1-46b4-4a8a-84ff-605128f4679e/\(Self.ec2ID)", Self.ec2ID))
        #expect(!ecsContainerIDsMatch(Self.ec2ID, "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603"))
        // Text in neither form matches nothing, itself included.
        #expect(!ecsContainerIDsMatch("abc", "abc"))
        #expect(!ecsContainerIDsMatch("", ""))
    }

    /// Each line of real `/proc/<pid>/cgroup` files of ECS containers ends with the DockerId.
    @Test(arguments: [
        ("docker-gen-ecs-ec2-cgroupv1-2018.cgroup", ec2ID),
        ("datadog-agent/ecs-fargate-1.4-cgroupv1.cgroup", "8474ac4cec7a4f488834b00591271ec3-3054012820"),
        ("datadog-agent/ecs-fargate-1.4-cgroupv1-short-random.cgroup", "0520ecd8e4194fd48309d1ae6eec92ec-946514567"),
    ])
    func cgroupLinesEndWithTheDockerId(file: String, dockerID: String) throws {
        let text = String(decoding: try Fixtures.data("proc/cgroup/" + file), as: UTF8.self)
        let lines = text.split(whereSeparator: \.isNewline)
        #expect(lines.count >= 9)
        for line in lines {
            #expect(normalizedECSContainerID(line) == dockerID)
            #expect(ecsContainerIDsMatch(line, dockerID))
        }
    }
}
