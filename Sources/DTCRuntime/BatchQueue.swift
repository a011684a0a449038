import Synchronization

/// A queue whose single consumer takes everything queued at once. It is the batching point of
/// a stream: while one message is being written, what arrives meanwhile gathers into the next.
///
/// An append only wakes the consumer; the consumer takes the items when it runs. Under load
/// the woken consumer waits its turn for a thread, and what the producers add meanwhile goes
/// into the same message (handing the waiter the items at wake-up sent one message per append).
public final class BatchQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: CheckedContinuation<Void, Never>?
        var isClosed = false
    }

    private let state = Mutex(State())

    public init() {}

    public func append(contentsOf items: [Element]) {
        guard !items.isEmpty else { return }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.isClosed else { return nil }
            state.items += items
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Everything queued, waiting for at least one element; nil once closed or cancelled.
    public func next() async -> [Element]? {
        while true {
            switch take() {
            case .items(let items): return items
            case .finished: return nil
            case .empty:
                await waitForItems()
                // A consumer cancelled while it waited takes nothing: what was appended
                // meanwhile is for the next one (a restarted stream's catch-up).
                if Task.isCancelled { return nil }
            }
        }
    }

    private enum Taken {
        case items([Element])
        case finished
        case empty
    }

    private func take() -> Taken {
        state.withLock { state in
            if !state.items.isEmpty {
                defer { state.items = [] }
                return .items(state.items)
            }
            return state.isClosed || Task.isCancelled ? .finished : .empty
        }
    }

    /// Returns once something was appended, the queue closed or the task cancelled.
    private func waitForItems() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Bool in
                    if !state.items.isEmpty || state.isClosed || Task.isCancelled { return true }
                    precondition(state.waiter == nil, "BatchQueue has one consumer")
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume()
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

    /// Wakes the consumer, which gets nil once the queue is empty; later appends are dropped.
    public func close() {
        state.withLock { state in
            state.isClosed = true
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }
}
