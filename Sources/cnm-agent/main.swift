import CLinux
import CNMCollector
import CNMHTTP
import CNMIntake
import CNMModel
import CNMProcfs
import CNMReport
import CNMServer
import CNMSystem
import FoundationEssentials
import Glibc
import Logging
import ServiceLifecycle

/// sysexits.h EX_CONFIG: the configuration is wrong and retrying will not help.
let exitConfigurationError: Int32 = 78
let version = "0.1.0"

func fail(_ line: String) -> Never {
    writeAll(to: STDERR_FILENO, "cnm-agent: \(line)\n")
    exit(exitConfigurationError)
}

// `cnm-agent version`: prints the version (the image build runs it to check every library loads).
if ["version", "--version"].contains(CommandLine.arguments.dropFirst().first) {
    writeAll(to: STDOUT_FILENO, "cnm-agent \(version)\n")
    exit(0)
}

// Two arenas are enough for a collection thread and the HTTP server; more only strand freed memory.
_ = cnm_linux_malloc_limit_arenas(2)
// Large temporary arrays (a pass, a report's JSON) go back to the kernel when freed.
_ = cnm_linux_malloc_fix_mmap_threshold(256 << 10)

var environment = ProcessInfo.processInfo.environment
// Datadog's container layout mounts the host's procfs at /host/proc; use it when it is there.
if environment["HOST_PROC", default: ""].isEmpty && access("/host/proc/1/ns/net", F_OK) == 0 {
    environment["HOST_PROC"] = "/host/proc"
}
let configuration: Configuration = {
    var configuration: Configuration
    do {
        configuration = try Configuration(environment: environment)
    } catch {
        fail("\(error)")
    }
    if let path = configuration.apiTokenFile { configuration.apiToken = readToken(path) }
    return configuration
}()

// `cnm-agent health`: the container health check. Asks the running agent's own /healthz.
if CommandLine.arguments.dropFirst().first == "health" {
    exit(healthCheck(configuration))
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = configuration.logLevel.swiftLogLevel
    return handler
}
var logger = Logger(label: "cnm-agent")
logger.logLevel = configuration.logLevel.swiftLogLevel

guard configuration.networkEnabled else {
    logger.notice("network monitoring is disabled by DD_SYSTEM_PROBE_NETWORK_ENABLED=false; nothing to do")
    exit(0)
}

let hostname = configuration.hostname ?? ProcessInfo.processInfo.hostName
let store = StatusStore(
    status: AgentStatus(
        version: version,
        hostname: hostname,
        startedAt: .now,
        intervalSeconds: configuration.intervalSeconds,
        mode: .starting,
        modeReason: "the collector has not picked a mode yet"
    )
)
let terminal: Bool =
    switch configuration.terminal {
    case .always: true
    case .never: false
    case .auto: isatty(STDOUT_FILENO) == 1
    }

// The memory the agent keeps under: its cgroup's limit, or a lower one it was given.
let memoryLimit = MemoryLimit.smaller(CgroupMemory.limit(), configuration.memoryLimit)
if let memoryLimit {
    logger.info(
        "memory limit \(memoryLimit.bytes >> 20) MiB (\(memoryLimit.source)): the agent keeps under \(memoryLimit.budgetBytes >> 20) MiB"
    )
} else {
    logger.info("no memory limit: neither the agent's cgroup nor DD_CNM_MEMORY_LIMIT sets one")
}
// What the agent holds before any load (code, libraries, runtime) is not the load's to share.
let budget = MemoryBudget(
    limit: memoryLimit, baselineBytes: ProcessMemory.current().residentBytes + MemoryBudget.startupAllowanceBytes,
    configuredFlows: configuration.maxTrackedConnections)
if let load = budget.loadBytes {
    logger.info(
        "memory budget for the load: \(load >> 20) MiB: \(budget.kernelFlows) flows in each eBPF table, \(budget.trackedFlows) flows followed, \(budget.reportConnections ?? 0) connections a report before rollup"
    )
}

// With DD_API_KEY, every interval's connections also go to Datadog's process intake.
let intake = configuration.intake.map { settings in
    var settings = settings
    settings.queueBytes = budget.intakeQueueBytes(configured: settings.queueBytes)
    let host = HostDescription.detect(hostname: hostname, hostTags: configuration.hostTags, environment: environment)
    do {
        return try IntakeSender(
            settings: settings, host: host, version: version, logger: logger, clock: { .now }
        ) { status in
            store.updateStatus { $0.intake = status }
        }
    } catch {
        logger.critical("cannot set up the intake's HTTP client", metadata: ["error": "\(error)"])
        exit(1)
    }
}
if intake == nil { logger.info("DD_API_KEY is not set: connections are served locally only") }

// The outputs: each takes every interval's report from the one stream.
// Intervals behind the latest are kept as zstd at its fastest level: 12 MB of JSON for 20,000
// connections becomes about 220 KB in about 20 ms.
let intervalCompression = IntervalCompression(
    compress: { json in json.withUnsafeReadableBytes { try? Zstd.compress($0, level: 1) } },
    decompress: { compressed, size in try? Zstd.decompress(compressed, maxBytes: size) })
let intervals = IntervalHistory(
    status: store, maxBytes: budget.retainedIntervalBytes, compression: intervalCompression)
var outputs: [any ReportSubscriber] = [intervals]
if terminal {
    outputs.append(TerminalOutput(rows: configuration.tableRows, intervalSeconds: configuration.intervalSeconds))
}
if let intake { outputs.append(intake) }
let collector = CollectionService(
    configuration: configuration, budget: budget, status: store, reports: ReportStream(outputs), logger: logger)
if let path = configuration.httpSocketPath { removeStaleSocket(path) }
if configuration.httpSocketPath == nil, !configuration.httpAddress.isLoopback, configuration.apiToken == nil {
    // Every process, container and label of the host is in the answers: say it where people look.
    logger.warning(
        "the API answers anyone who reaches \(configuration.httpAddress) without a token: publish it to loopback only, or set DD_CNM_API_TOKEN"
    )
}
let apiAccess = APIServer.Access(
    address: configuration.httpAddress, socketPath: configuration.httpSocketPath, token: configuration.apiToken,
    maxConcurrent: configuration.apiMaxConcurrent)
let api = APIServer.application(
    store: store, intervals: intervals, access: apiAccess, logger: logger, memory: { ProcessMemory.current() },
    memoryBudget: budget, clock: { .now })
let group = ServiceGroup(
    configuration: .init(
        services: [.init(service: collector), .init(service: api)] + (intake.map { [.init(service: $0)] } ?? []),
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger
    )
)
do {
    try await group.run()
} catch let error where APIServer.isAddressInUse(error) {
    fail(
        "invalid DD_CNM_HTTP_ADDR=\"\(configuration.apiListenDescription)\": the address is already in use; "
            + "expected a free IP:port, [IPv6]:port, localhost:port or unix:///path"
    )
} catch {
    logger.critical("stopped", metadata: ["error": "\(error)"])
    exit(1)
}

/// The API token from `DD_CNM_API_TOKEN_FILE`, whose last newline is not part of it; an unreadable
/// file or a malformed token is a configuration error.
func readToken(_ path: String) -> Configuration.APIToken {
    guard let data = FileManager.default.contents(atPath: path) else {
        fail("invalid DD_CNM_API_TOKEN_FILE=\"\(path)\": expected a readable file holding the token")
    }
    var text = String(decoding: data, as: UTF8.self)
    while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
    guard let token = Configuration.APIToken(text) else {
        fail(
            "invalid DD_CNM_API_TOKEN_FILE=\"\(path)\": expected 16 to 4096 characters of A-Z a-z 0-9 - . _ ~ + / =")
    }
    return token
}

/// A socket file left by an agent that did not stop cleanly is removed; anything else at the path
/// is left alone, and binding then fails as "already in use".
func removeStaleSocket(_ path: String) {
    var info = stat()
    guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return }
    unlink(path)
}

/// 0 when the agent's API answers `/healthz` with 200, else 1 with the reason on stderr. A wildcard
/// listen address is asked on loopback.
func healthCheck(_ configuration: Configuration) -> Int32 {
    let address = configuration.httpAddress
    let host =
        switch address.host {
        case "0.0.0.0": "127.0.0.1"
        case "::": "::1"
        default: address.host
        }
    let url =
        configuration.httpSocketPath == nil
        ? "http://\(Configuration.ListenAddress(host: host, port: address.port))/healthz" : "http://localhost/healthz"
    do {
        let request = HTTPRequest(url: url, unixSocketPath: configuration.httpSocketPath, timeout: .seconds(4))
        let response = try HTTPClient(label: "cnm.health").perform(request)
        guard response.status == 200 else {
            writeAll(to: STDERR_FILENO, "cnm-agent health: \(url) answered \(response.status)\n")
            return 1
        }
        return 0
    } catch {
        writeAll(to: STDERR_FILENO, "cnm-agent health: \(url): \(error)\n")
        return 1
    }
}

extension Configuration.LogLevel {
    var swiftLogLevel: Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .warn: .warning
        case .error: .error
        case .critical, .off: .critical
        }
    }
}
