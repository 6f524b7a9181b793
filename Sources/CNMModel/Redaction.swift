/// Credentials in URLs (`scheme://user:password@host`) are replaced by `****` wherever a URL may
/// be printed or stored: a proxy or intake URL itself, and the error texts libcurl builds from them.
public enum Redaction {
    /// `text` with the userinfo of every `scheme://userinfo@host` in it replaced by `****`.
    public static func credentials(in text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while let scheme = rest.firstRange(of: "://") {
            out += rest[..<scheme.upperBound]
            rest = rest[scheme.upperBound...]
            // The authority ends at the first of / ? # or a space; its userinfo at its last @.
            let end = rest.firstIndex { "/?# \t\n\"'<>".contains($0) } ?? rest.endIndex
            if let at = rest[..<end].lastIndex(of: "@") {
                out += "****"
                rest = rest[at...]
            }
        }
        return out + rest
    }

    /// Printable text of at most `limit` characters: control characters (a terminal's escape
    /// sequences among them) become `?`.
    public static func printable(_ text: some StringProtocol, limit: Int = 256) -> String {
        String(text.prefix(limit).map { $0.isASCII && ($0.asciiValue! < 0x20 || $0.asciiValue! == 0x7F) ? "?" : $0 })
    }
}
