import Synchronization

/// A queue whose single consumer takes everything queued at once. It is the batching point of
/// a stream: while one message is being written, what arrives meanwhile gathers into the next.
public final class BatchQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: CheckedContinuation<[Element]?, Never>?
        var isClosed = false
    }

    private let state = Mutex(State())

    public init() {}

    public func append(contentsOf items: [Element]) {
        guard !items.isEmpty else { return }
        let (waiter, batch) = state.withLock { state -> (CheckedContinuation<[Element]?, Never>?, [Element]) in
            guard !state.isClosed else { return (nil, []) }
            state.items += items
            guard let waiter = state.waiter else { return (nil, []) }
            state.waiter = nil
            defer { state.items = [] }
            return (waiter, state.items)
        }
        waiter?.resume(returning: batch)
    }

    /// Everything queued, waiting for at least one element; nil once closed or cancelled.
    public func next() async -> [Element]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> [Element]?? in
                    if !state.items.isEmpty {
                        defer { state.items = [] }
                        return .some(state.items)
                    }
                    if state.isClosed || Task.isCancelled { return .some(nil) }
                    precondition(state.waiter == nil, "BatchQueue has one consumer")
                    state.waiter = continuation
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume(returning: nil)
        }
    }

    /// Removes and returns the queued elements that match.
    public func removeAll(where matches: (Element) -> Bool) -> [Element] {
        state.withLock { state in
            let removed = state.items.filter(matches)
            state.items.removeAll(where: matches)
            return removed
        }
    }

    /// Wakes the consumer with nil; later appends are dropped.
    public func close() {
        state.withLock { state in
            state.isClosed = true
            defer { state.waiter = nil }
            return state.waiter
        }?.resume(returning: nil)
    }
}
