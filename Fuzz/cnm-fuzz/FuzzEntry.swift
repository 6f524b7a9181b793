import CNMFuzzTargets
import Glibc

/// The target `CNM_FUZZ_TARGET` names, looked up once: libFuzzer calls the entry point millions of times.
let selectedTarget: FuzzTargets.Target? = {
    guard let name = getenv("CNM_FUZZ_TARGET") else { return nil }
    return FuzzTargets.named(String(cString: name))
}()

/// Refuses to start without a known target, naming the ones there are.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    guard selectedTarget == nil else { return 0 }
    let names = FuzzTargets.all.map(\.name).joined(separator: " ")
    let message = Array("cnm-fuzz: set CNM_FUZZ_TARGET to one of: \(names)\n".utf8)
    _ = write(STDERR_FILENO, message, message.count)
    exit(2)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget?.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
