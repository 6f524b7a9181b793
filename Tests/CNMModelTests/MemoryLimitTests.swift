import CNMModel
import Foundation
import Testing

/// `<repo>/../shared/fixtures/proc/cgroup`: real `/proc/<pid>/cgroup` files (see SOURCES.md there).
private let cgroupFixtures = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("../shared/fixtures/proc/cgroup").standardizedFileURL

@Suite struct MemoryLimitTests {
    static func fixture(_ name: String) throws -> String {
        try String(contentsOf: cgroupFixtures.appendingPathComponent(name), encoding: .utf8)
    }

    @Test func theMemoryCgroupOfEachRuntime() throws {
        let fargate = MemoryLimit.cgroupPaths(
            procCgroup: try Self.fixture("datadog-agent/ecs-fargate-1.4-cgroupv1.cgroup"))
        #expect(
            fargate.memoryV1
                == "/ecs/8474ac4cec7a4f488834b00591271ec3/8474ac4cec7a4f488834b00591271ec3-3054012820")
        #expect(fargate.unified == nil)
        let dockerd = MemoryLimit.cgroupPaths(procCgroup: try Self.fixture("coroot/proc-100-cgroup"))
        #expect(dockerd.memoryV1 == "/system.slice/docker.service")
        let k8s = MemoryLimit.cgroupPaths(procCgroup: try Self.fixture("datadog-agent/k8s-cgroupv2-cgroupfs.cgroup"))
        #expect(k8s.memoryV1 == nil)
        #expect(
            k8s.unified
                == "/kubepods/burstable/pod15513b48-e7a5-48fc-b9e3-92f713f36504/a51a9f7d073f848e7fc59e56e8f11524f330a2175a4ed26327da2dfe0d28015f"
        )
        // Outside its own cgroup namespace's root the path is relative: no file can be found from it.
        let relative = MemoryLimit.cgroupPaths(
            procCgroup: try Self.fixture("datadog-agent/k8s-cgroupv2-systemd-docker-nohost-relative.cgroup"))
        #expect(relative == MemoryLimit.CgroupPaths(unified: nil, memoryV1: nil))
        // Colons in the path, a line without fields, an empty file.
        let odd = MemoryLimit.cgroupPaths(procCgroup: "garbage\n4:memory:/a:b/c\n0::/x\n\n")
        #expect(odd == MemoryLimit.CgroupPaths(unified: "/x", memoryV1: "/a:b/c"))
        #expect(MemoryLimit.cgroupPaths(procCgroup: "") == MemoryLimit.CgroupPaths(unified: nil, memoryV1: nil))
    }

    @Test func limitFiles() {
        #expect(MemoryLimit.parseCgroupLimit("268435456\n") == 268_435_456)
        #expect(MemoryLimit.parseCgroupLimit("max\n") == nil, "v2: no limit")
        #expect(MemoryLimit.parseCgroupLimit("9223372036854771712\n") == nil, "v1: no limit")
        for bad in ["", "-1", "0", "12 MiB", "18446744073709551616"] {
            #expect(MemoryLimit.parseCgroupLimit(bad) == nil, "\(bad)")
        }
    }

    @Test func sizesTheVariableAccepts() {
        #expect(MemoryLimit.parseSize("268435456") == 268_435_456)
        #expect(MemoryLimit.parseSize("256Mi") == 256 << 20)
        #expect(MemoryLimit.parseSize("256MiB") == 256 << 20)
        #expect(MemoryLimit.parseSize("1Gi") == 1 << 30)
        #expect(MemoryLimit.parseSize("512k") == 512_000)
        #expect(MemoryLimit.parseSize("2G") == 2_000_000_000)
        #expect(MemoryLimit.parseSize(" 64Mi ") == 64 << 20)
        for bad in ["", "Mi", "1.5G", "-1", "12 MiB", "ten", "99999999999999999999", "18446744073709551615Ki"] {
            #expect(MemoryLimit.parseSize(bad) == nil, "\(bad)")
        }
    }

    @Test func theSmallerLimitWinsAndTheBudgetIsItsShare() {
        let cgroup = MemoryLimit(bytes: 256 << 20, source: "/sys/fs/cgroup/memory.max")
        let variable = MemoryLimit(bytes: 128 << 20, source: "DD_CNM_MEMORY_LIMIT")
        #expect(MemoryLimit.smaller(cgroup, variable) == variable)
        #expect(MemoryLimit.smaller(variable, cgroup) == variable)
        #expect(MemoryLimit.smaller(nil, cgroup) == cgroup && MemoryLimit.smaller(cgroup, nil) == cgroup)
        #expect(MemoryLimit.smaller(nil, nil) == nil)
        #expect(variable.budgetBytes == (128 << 20) / 100 * 80)

        let budget = MemoryBudget(limit: variable)
        #expect(budget.retainedIntervalBytes == Int(variable.budgetBytes / 16))
        #expect(budget.intakeQueueBytes(configured: 60_000_000) == Int(variable.budgetBytes / 16))
        #expect(budget.intakeQueueBytes(configured: 1_000) == 1_000, "a smaller configured queue is kept")
        let unlimited = MemoryBudget(limit: nil)
        #expect(unlimited.retainedIntervalBytes == 64 << 20)
        #expect(unlimited.intakeQueueBytes(configured: 60_000_000) == 60_000_000)
        #expect(MemoryBudget(limit: MemoryLimit(bytes: 16 << 30, source: "x")).retainedIntervalBytes == 64 << 20)
    }

    /// Every table's bound comes from its share of what the load may use: the budget less what the
    /// agent held before any load; all of them full stay within the budget.
    @Test func eachTableIsBoundedByItsShareOfTheLoad() {
        let limit = MemoryLimit(bytes: 128 << 20, source: "memory.max")
        let baseline: UInt64 = 40 << 20
        let budget = MemoryBudget(limit: limit, baselineBytes: baseline, configuredFlows: 65_536)
        let load = limit.budgetBytes - baseline
        #expect(budget.loadBytes == load)
        let sixteenth = load / 16
        #expect(budget.kernelFlows == Int(sixteenth * 4 / MemoryBudget.bytesPerKernelFlow))
        #expect(budget.trackedFlows == Int(sixteenth * 2 / MemoryBudget.bytesPerTrackedFlow))
        #expect(budget.countedFlows == Int(sixteenth * 5 / MemoryBudget.bytesPerCountedFlow))
        #expect(budget.reportConnections == Int(sixteenth * 2 / MemoryBudget.bytesPerReportedConnection))
        #expect(budget.closedFlows == Int(sixteenth / MemoryBudget.bytesPerClosedFlow))
        #expect(budget.retainedIntervalBytes == Int(sixteenth))
        let full =
            UInt64(budget.kernelFlows) * MemoryBudget.bytesPerKernelFlow
            + UInt64(budget.trackedFlows) * MemoryBudget.bytesPerTrackedFlow
            + UInt64(budget.countedFlows) * MemoryBudget.bytesPerCountedFlow
            + UInt64(budget.reportConnections!) * MemoryBudget.bytesPerReportedConnection
            + UInt64(budget.closedFlows!) * MemoryBudget.bytesPerClosedFlow + UInt64(budget.retainedIntervalBytes)
            + UInt64(budget.intakeQueueBytes(configured: .max))
        #expect(full <= load)

        // A configured bound below the budget's stays; a baseline past the budget leaves the load its minimum.
        #expect(MemoryBudget(limit: limit, baselineBytes: baseline, configuredFlows: 500).trackedFlows == 500)
        let starved = MemoryBudget(limit: limit, baselineBytes: 200 << 20)
        #expect(starved.loadBytes == MemoryBudget.minimumLoadBytes)
        #expect(starved.trackedFlows == 1024, "the floor")
        // No limit: no bound but the configured one.
        let unlimited = MemoryBudget(limit: nil, baselineBytes: baseline, configuredFlows: 65_536)
        #expect(unlimited.trackedFlows == 65_536 && unlimited.reportConnections == nil && unlimited.closedFlows == nil)
        #expect(unlimited.kernelFlows == 65_536 && unlimited.countedFlows == 4 * 65_536)
    }

    @Test func theVariableIsCheckedAtStartUp() throws {
        let limit = try Configuration(environment: ["DD_CNM_MEMORY_LIMIT": "96Mi"]).memoryLimit
        #expect(limit == MemoryLimit(bytes: 96 << 20, source: "DD_CNM_MEMORY_LIMIT"))
        #expect(try Configuration(environment: [:]).memoryLimit == nil)
        for bad in ["1Mi", "2Ti", "lots", "0"] {
            let error = #expect(throws: ConfigurationError.self) {
                try Configuration(environment: ["DD_CNM_MEMORY_LIMIT": bad])
            }
            #expect(error?.variable == "DD_CNM_MEMORY_LIMIT" && error?.description.contains("16Mi") == true)
        }
    }
}
