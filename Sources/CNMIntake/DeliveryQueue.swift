/// A bounded first-in first-out queue, bounded both in items and in bytes. When a new item does not
/// fit, the oldest items go first, and the caller is told which, so that the loss can be counted: the
/// newest data is the most useful, and old data waiting behind an outage is what can be spared.
public struct DeliveryQueue<Item: Sendable>: Sendable {
    public let maxItems: Int
    public let maxBytes: Int
    private var items: [(item: Item, bytes: Int)] = []
    /// Index of the oldest item in `items`; the prefix before it is dead and compacted now and then.
    private var head = 0
    public private(set) var bytes = 0

    public init(maxItems: Int, maxBytes: Int) {
        precondition(maxItems > 0 && maxBytes > 0, "a queue must hold something")
        self.maxItems = maxItems
        self.maxBytes = maxBytes
    }

    public var count: Int { items.count - head }
    public var isEmpty: Bool { count == 0 }

    /// Adds `item` and returns what was pushed out to make room, oldest first. An item larger than
    /// `maxBytes` on its own can never fit: it is the one returned, and the queue stays as it was.
    public mutating func push(_ item: Item, bytes size: Int) -> [Item] {
        guard size <= maxBytes else { return [item] }
        var evicted: [Item] = []
        while count > 0 && (count + 1 > maxItems || bytes + size > maxBytes) {
            if let oldest = pop() { evicted.append(oldest) }
        }
        items.append((item, size))
        bytes += size
        return evicted
    }

    /// Takes out the oldest item.
    public mutating func pop() -> Item? {
        guard head < items.count else { return nil }
        let (item, size) = items[head]
        head += 1
        bytes -= size
        if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }
}
