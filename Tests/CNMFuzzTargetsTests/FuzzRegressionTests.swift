import CNMFuzzTargets
import Foundation
import Testing

/// `<repo>/Fuzz`: the committed seeds and the reproducers of crashes fixed.
private let fuzzDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz")

/// The files of `Fuzz/<kind>/<target>/`, none when the directory does not exist.
private func inputs(_ kind: String, _ target: String) throws -> [URL] {
    let directory = fuzzDirectory.appendingPathComponent(kind).appendingPathComponent(target)
    guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
    return try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
        .filter { !$0.lastPathComponent.hasPrefix(".") }
        .sorted { $0.lastPathComponent < $1.lastPathComponent }
}

/// Every fuzz target over its committed seeds and over the inputs that once crashed it: a target traps
/// (and the test process with it) when a parser does or an invariant fails, so a fixed crash stays fixed.
@Suite struct FuzzRegressionTests {
    @Test(arguments: FuzzTargets.all.map(\.name))
    func seedsAndReproducersRunClean(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let seeds = try inputs("seeds", name)
        #expect(!seeds.isEmpty, "no seed in Fuzz/seeds/\(name)")
        for file in seeds + (try inputs("regressions", name)) {
            target.run([UInt8](try Data(contentsOf: file)))
        }
    }

    /// A directory named after no target would have its inputs silently skipped.
    @Test func everyInputDirectoryNamesATarget() throws {
        let names = Set(FuzzTargets.all.map(\.name))
        for kind in ["seeds", "regressions"] {
            let directory = fuzzDirectory.appendingPathComponent(kind)
            guard FileManager.default.fileExists(atPath: directory.path) else { continue }
            for entry in try FileManager.default.contentsOfDirectory(atPath: directory.path) where !entry.hasPrefix(".")
            {
                #expect(names.contains(entry), "Fuzz/\(kind)/\(entry) names no fuzz target")
            }
        }
    }

    @Test func targetNamesAreUnique() {
        let names = FuzzTargets.all.map(\.name)
        #expect(Set(names).count == names.count)
    }
}
