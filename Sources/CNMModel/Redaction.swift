/// Credentials in URLs (`scheme://user:password@host`) are replaced by `****` wherever a URL may
/// be printed or stored: a proxy or intake URL itself, and the error texts libcurl builds from them.
public enum Redaction {
    /// `text` with the userinfo of every `scheme://userinfo@host` in it replaced by `****`.
    public static func credentials(in text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while let scheme = Self.firstSeparator(in: rest) {
            out += rest[..<scheme]
            rest = rest[scheme...]
            // The authority ends at the first of / ? # or a space; its userinfo at its last @.
            let end = rest.firstIndex { "/?# \t\n\"'<>".contains($0) } ?? rest.endIndex
            if let at = rest[..<end].lastIndex(of: "@") {
                out += "****"
                rest = rest[at...]
            }
        }
        return out + rest
    }

    /// Where the first `://` in `text` ends.
    private static func firstSeparator(in text: Substring) -> Substring.Index? {
        var index = text.startIndex
        while index < text.endIndex {
            let rest = text[index...]
            if rest.hasPrefix("://") { return text.index(index, offsetBy: 3) }
            index = text.index(after: index)
        }
        return nil
    }

    /// Printable text of at most `limit` characters: control characters (a terminal's escape
    /// sequences among them) become `?`.
    public static func printable(_ text: some StringProtocol, limit: Int = 256) -> String {
        String(text.prefix(limit).map { $0.isASCII && ($0.asciiValue! < 0x20 || $0.asciiValue! == 0x7F) ? "?" : $0 })
    }
}
