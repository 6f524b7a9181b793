import CNMHTTP
import CNMModel
import FoundationEssentials
import Testing

@testable import CNMIntake

@Suite struct DeliveryTests {
    @Test func aFullQueueDropsTheOldest() {
        var queue = DeliveryQueue<Int>(maxItems: 3, maxBytes: 1000)
        for n in 1...3 { #expect(queue.push(n, bytes: 10).isEmpty) }
        #expect(queue.push(4, bytes: 10) == [1])
        #expect(queue.push(5, bytes: 10) == [2])
        #expect(queue.count == 3 && queue.bytes == 30)
        #expect([queue.pop(), queue.pop(), queue.pop(), queue.pop()] == [3, 4, 5, nil])
        #expect(queue.bytes == 0)
    }

    @Test func theByteBoundDropsAsManyOldestAsNeeded() {
        var queue = DeliveryQueue<String>(maxItems: 100, maxBytes: 100)
        _ = queue.push("a", bytes: 40)
        _ = queue.push("b", bytes: 40)
        _ = queue.push("c", bytes: 10)
        // 90 more bytes: "a" and "b" must go, "c" still fits beside "d" (10 + 90 = 100).
        #expect(queue.push("d", bytes: 90) == ["a", "b"])
        #expect(queue.count == 2 && queue.bytes == 100)
        // An item that can never fit is refused, and nothing else goes.
        #expect(queue.push("huge", bytes: 101) == ["huge"])
        #expect([queue.pop(), queue.pop(), queue.pop()] == ["c", "d", nil])
    }

    /// Against a plain array as the model, through many compactions of the queue's storage.
    @Test func manyPushesAndPopsMatchASimpleModel() {
        var queue = DeliveryQueue<Int>(maxItems: 10, maxBytes: 1 << 20)
        var model: [Int] = []
        for n in 0..<2000 {
            var evictedByModel: [Int] = []
            if model.count == 10 { evictedByModel.append(model.removeFirst()) }
            model.append(n)
            #expect(queue.push(n, bytes: 1) == evictedByModel)
            if n % 3 == 0 {
                #expect(queue.pop() == model.first)
                model.removeFirst()
            }
            #expect(queue.count == model.count && queue.bytes == model.count)
        }
    }

    @Test func backoffGrowsToTheMaximumWithJitterInTheUpperHalf() {
        let backoff = Backoff(base: 2, max: 64)
        let ceilings = (0..<10).map { backoff.ceiling(attempt: $0) }
        #expect(ceilings == [2, 4, 8, 16, 32, 64, 64, 64, 64, 64])
        for attempt in 0..<80 {
            let top = backoff.ceiling(attempt: attempt)
            #expect(backoff.delay(attempt: attempt, unit: 0) == top / 2)
            #expect(backoff.delay(attempt: attempt, unit: 0.999_999) <= top)
            for _ in 0..<20 {
                let d = backoff.delay(attempt: attempt)
                #expect(d >= top / 2 && d <= top)
            }
        }
        #expect(Backoff(base: 0.05, max: 0.2).ceiling(attempt: 1000) == 0.2)
    }

    @Test(arguments: [
        (200, "accepted"), (202, "accepted"), (408, "retry"), (429, "retry"), (500, "server_error"),
        (503, "server_error"),
        (403, "forbidden"), (401, "rejected"), (400, "rejected"), (404, "rejected"), (413, "rejected"),
    ])
    func statusesAreClassified(status: Int, expected: String) {
        let outcome = IntakeSender.classify(status: status, body: Data("nope".utf8))
        let kind =
            switch outcome {
            case .accepted: "accepted"
            case .retry(_, let serverError): serverError ? "server_error" : "retry"
            case .rejected(_, let forbidden): forbidden ? "forbidden" : "rejected"
            }
        #expect(kind == expected)
    }
}
