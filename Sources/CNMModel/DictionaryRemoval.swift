extension Dictionary {
    /// Removes `keys`, which are those whose values are `gone`: a few among many are removed one by
    /// one, so a table of held flows is not hashed again at every report; most of the table is
    /// left out of a new one instead.
    mutating func remove(_ keys: [Key], whose gone: (Value) -> Bool) {
        if keys.count > count / 4 {
            self = filter { !gone($0.value) }
        } else {
            for key in keys { self[key] = nil }
        }
    }
}
