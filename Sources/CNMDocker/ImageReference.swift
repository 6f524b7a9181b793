/// An image name split the way Datadog tags it: `registry.example.com:5000/team/app:v2` has
/// `image_name:registry.example.com:5000/team/app`, `short_image:app`, `image_tag:v2`,
/// `docker_image:registry.example.com:5000/team/app:v2`. The name is kept as given, not
/// normalised (`busybox` stays `busybox`, not `docker.io/library/busybox`), as Datadog does.
public struct ImageReference: Sendable, Hashable {
    /// The repository with its registry and path, without tag or digest.
    public var name: String
    /// The tag as given, `latest` when none was.
    public var tag: String
    /// `sha256:…` when the reference pins a digest.
    public var digest: String?

    /// Parses a name as given to `docker run`. Nil for an empty string and for image ids
    /// (`sha256:…`, or 64 hex digits), which name no repository: their tags are unknown, not guessed.
    public init?(parsing reference: String) {
        guard !reference.isEmpty, !Self.isImageID(reference) else { return nil }
        var rest = Substring(reference)
        if let at = rest.lastIndex(of: "@") {
            digest = String(rest[rest.index(after: at)...])
            rest = rest[..<at]
        }
        // A colon after the last slash starts the tag; one before it belongs to a registry port.
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        } else {
            tag = "latest"
        }
        guard !rest.isEmpty, !tag.isEmpty, digest.map({ !$0.isEmpty }) ?? true else { return nil }
        name = String(rest)
    }

    /// The last path component: `app` for `registry.example.com:5000/team/app`.
    public var shortName: String {
        name.lastIndex(of: "/").map { String(name[name.index(after: $0)...]) } ?? name
    }

    /// `name:tag`, Datadog's `docker_image`.
    public var dockerImage: String { "\(name):\(tag)" }

    /// `image_name`, `short_image`, `image_tag` and `docker_image`, in that order.
    public var tags: [String] {
        ["image_name:\(name)", "short_image:\(shortName)", "image_tag:\(tag)", "docker_image:\(dockerImage)"]
    }

    /// True for a full image id: `sha256:…`, or 64 hex digits, which Docker refuses as a
    /// repository name.
    static func isImageID(_ text: String) -> Bool {
        text.hasPrefix("sha256:") || (text.count == 64 && text.allSatisfy(\.isHexDigit))
    }
}
