import CNMIntakeProto
import FoundationEssentials
import Glibc

extension HostDescription {
    /// Describes this host: kernel and architecture from uname(2), the distribution from os-release,
    /// Fargate from `AWS_EXECUTION_ENV`, which ECS sets to `AWS_ECS_FARGATE` in Fargate tasks.
    public static func detect(hostname: String, hostTags: [String], environment: [String: String]) -> HostDescription {
        var names = utsname()
        let (machine, kernel): (String, String) =
            uname(&names) == 0
            ? (field(&names.machine), field(&names.release)) : ("", "")
        let release = osRelease()
        return HostDescription(
            hostname: hostname,
            hostTags: hostTags,
            containerHostType: environment["AWS_EXECUTION_ENV"] == "AWS_ECS_FARGATE" ? .fargateEcs : .notSpecified,
            architecture: machine,
            kernelVersion: kernel,
            platform: release["ID"] ?? "linux",
            platformVersion: release["VERSION_ID"] ?? ""
        )
    }

    private static func field<T>(_ value: inout T) -> String {
        withUnsafeBytes(of: &value) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// `KEY=value` lines of /etc/os-release (or /usr/lib/os-release), quotes removed.
    static func osRelease() -> [String: String] {
        for path in ["/etc/os-release", "/usr/lib/os-release"] {
            guard let data = try? Data(contentsOf: URL(fileURLWithPath: path)) else { continue }
            return parseOSRelease(String(decoding: data, as: UTF8.self))
        }
        return [:]
    }

    static func parseOSRelease(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            var value = line[line.index(after: equals)...]
            if value.count >= 2, let quote = value.first, quote == "\"" || quote == "'", value.last == quote {
                value = value.dropFirst().dropLast()
            }
            values[String(line[..<equals])] = String(value)
        }
        return values
    }
}
