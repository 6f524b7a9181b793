/// Values learnt in this pass and in the one before: what one pass learns may be asked for in the
/// next (a destroy notification comes in the pass its connection ended, or the one after), and no
/// longer.
public struct Generations<Key: Hashable, Value> {
    private var current: [Key: Value] = [:]
    private var previous: [Key: Value] = [:]

    public init() {}

    /// This pass's value, else the one before's.
    public subscript(key: Key) -> Value? { current[key] ?? previous[key] }

    /// The value, kept for the next pass too: one of the pass before is moved into this one, and one
    /// of this pass costs no write.
    public mutating func refresh(_ key: Key) -> Value? {
        if let value = current[key] { return value }
        guard let value = previous.removeValue(forKey: key) else { return nil }
        current[key] = value
        return value
    }

    /// Sets this pass's value.
    public mutating func set(_ value: Value, for key: Key) { current[key] = value }

    /// Starts a new pass: this pass's values become the one before's, older ones are forgotten.
    public mutating func advance() {
        // Swapped, not copied: nothing that is kept is copied.
        swap(&current, &previous)
        current.removeAll()
    }
}

extension Generations {
    /// Adds to this pass's list under `key`.
    mutating func append<Element>(_ element: Element, to key: Key) where Value == [Element] {
        current[key, default: []].append(element)
    }

    /// Takes out the first element under `key` that matches, this pass's before the one before's.
    mutating func removeFirst<Element>(under key: Key, where matches: (Element) -> Bool) -> Element?
    where Value == [Element] {
        if let index = current[key]?.firstIndex(where: matches) { return current[key]?.remove(at: index) }
        if let index = previous[key]?.firstIndex(where: matches) { return previous[key]?.remove(at: index) }
        return nil
    }
}

extension Generations: Sendable where Key: Sendable, Value: Sendable {}
