import Synchronization

/// Completions reported on another thread (a group commit's callbacks), gathered for one step
/// of their owner: the first report since the last step asks the caller to schedule one;
/// reports until it runs join it. A group commit that made many writes durable then costs one
/// step and one batch of replies, not one per write.
public final class CompletionBatch<Value: Sendable>: Sendable {
    private let state: Mutex<(pending: Value, isScheduled: Bool)>
    private let empty: Value

    /// `empty`: what is pending when nothing is.
    public init(empty: Value) {
        self.empty = empty
        state = Mutex((empty, false))
    }

    /// Merges a report into what is pending; true if the caller must schedule the step.
    public func add(_ merge: (inout Value) -> Void) -> Bool {
        state.withLock { state in
            merge(&state.pending)
            defer { state.isScheduled = true }
            return !state.isScheduled
        }
    }

    /// Everything reported since the last step, for the scheduled step.
    public func take() -> Value {
        state.withLock { state in
            state.isScheduled = false
            defer { state.pending = empty }
            return state.pending
        }
    }
}
