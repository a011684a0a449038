import DTCRuntime
import Testing

@Suite struct BatchQueueTests {
    @Test func whatIsAppendedWhileTheConsumerIsAwayGoesOutInOneBatch() async {
        let queue = BatchQueue<Int>()
        queue.append(contentsOf: [1])
        queue.append(contentsOf: [2, 3])
        #expect(await queue.next() == [1, 2, 3])
    }

    @Test func aWaitingConsumerGetsWhatIsAppended() async {
        let queue = BatchQueue<Int>()
        let consumer = Task { await queue.next() }
        // The consumer may or may not be waiting yet: either way it gets the element.
        queue.append(contentsOf: [7])
        #expect(await consumer.value == [7])
    }

    /// A replication stream that is restarted cancels its writer and then queues the new
    /// session's catch-up: the cancelled writer must not take it (it would go out on the
    /// stream being dropped, and the follower would never get it).
    @Test func aConsumerCancelledWhileWaitingLeavesLaterItemsForTheNextOne() async {
        let queue = BatchQueue<Int>()
        let started = AsyncStream<Void>.makeStream()
        let consumer = Task {
            started.continuation.yield()
            return await queue.next()
        }
        for await _ in started.stream { break }
        consumer.cancel()
        queue.append(contentsOf: [42])
        #expect(await consumer.value == nil)
        #expect(queue.removeAll { _ in true } == [42])
    }

    @Test func aClosedQueueStillHandsOutWhatItHeldThenNil() async {
        let queue = BatchQueue<Int>()
        queue.append(contentsOf: [1])
        queue.close()
        queue.append(contentsOf: [2])
        #expect(await queue.next() == [1])
        #expect(await queue.next() == nil)
    }
}
