import FoundationEssentials

/// One line saying where decoding a response failed, instead of DecodingError's long dump.
public func describeDecodingError(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func at(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return path.isEmpty ? "" : " at \(path)"
    }
    switch error {
    case .keyNotFound(let key, let context): return "no \(key.stringValue)\(at(context))"
    case .typeMismatch(let type, let context): return "expected \(type)\(at(context))"
    case .valueNotFound(let type, let context): return "null for \(type)\(at(context))"
    case .dataCorrupted(let context): return "not valid JSON\(at(context))"
    @unknown default: return "\(error)"
    }
}
