import Foundation

/// Group commit: everything queued while the previous group was being fsynced goes into ONE
/// LMDB write transaction and ONE commit, so N concurrent writers cost one fsync, not N.
///
/// A dedicated writer thread (LMDB write transactions are bound to the thread that began
/// them) loops: wait for work, take up to `batchMax` items, run them in queue order in one
/// write transaction, commit, then resume every waiter. Groups commit in queue order, so
/// anything queued before a `commit` that has returned is durable too.
public final class GroupCommitter: @unchecked Sendable {
    /// One queued closure and what to do with its outcome.
    struct Work: Sendable {
        /// Runs inside the group's transaction; returns what to do once the group is durable.
        let apply: @Sendable (WriteTransaction) throws -> @Sendable () -> Void
        let fail: @Sendable (any Error) -> Void
    }

    private let environment: LMDBEnvironment
    private let batchMax: Int
    /// Guards every field below; broadcast on each change so the writer and test waiters wake.
    private let condition = NSCondition()
    private var queue: [Work] = []
    private var committedGroups: UInt64 = 0
    private var isClosing = false
    private var isFinished = false

    public init(environment: LMDBEnvironment, batchMax: Int = 8192) {
        precondition(batchMax > 0, "batchMax \(batchMax) must be positive")
        self.environment = environment
        self.batchMax = batchMax
        let writer = Thread { [self] in runWriter() }
        writer.name = "dtc-group-commit"
        writer.start()
    }

    /// Runs `body` in the next group's write transaction and returns only after that
    /// transaction's commit (fsync) succeeded.
    public func commit<T: Sendable>(_ body: @escaping @Sendable (WriteTransaction) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit(Work(
                apply: { transaction in
                    let value = try body(transaction)
                    return { continuation.resume(returning: value) }
                },
                fail: { continuation.resume(throwing: $0) }))
        }
    }

    /// Queues `body` without waiting (lazy durability): it is durable once any later
    /// `commit` returns. If its group fails the write is lost and reported on stderr.
    public func enqueue(_ body: @escaping @Sendable (WriteTransaction) throws -> Void) {
        submit(Work(
            apply: { transaction in
                try body(transaction)
                return {}
            },
            fail: { error in
                FileHandle.standardError.write(Data("dtc storage: lazy write lost: \(error)\n".utf8))
            }))
    }

    /// Queues `body` at once and calls `onDurable` after its group is fsynced (or failed).
    public func enqueue(
        _ body: @escaping @Sendable (WriteTransaction) throws -> Void,
        onDurable: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        submit(Work(
            apply: { transaction in
                try body(transaction)
                return { onDurable(.success(())) }
            },
            fail: { onDurable(.failure($0)) }))
    }

    /// Number of LMDB write transactions this committer has committed (= fsyncs).
    public var syncCount: UInt64 {
        condition.withLock { committedGroups }
    }

    /// Stops the writer thread after it has committed everything already queued.
    public func close() {
        condition.withLock {
            isClosing = true
            condition.broadcast()
            while !isFinished { condition.wait() }
        }
    }

    /// Appends `work` to the queue. Callers that need queue order to match another order
    /// (e.g. log sequence numbers) call this while holding their own lock.
    func submit(_ work: Work) {
        condition.withLock {
            precondition(!isClosing, "GroupCommitter used after close()")
            queue.append(work)
            condition.broadcast()
        }
    }

    /// Test hook: blocks until at least `count` items wait in the queue (not yet taken).
    func waitUntilQueued(atLeast count: Int) {
        condition.withLock {
            while queue.count < count { condition.wait() }
        }
    }

    private func runWriter() {
        while let group = nextGroup() {
            run(group)
        }
        condition.withLock {
            isFinished = true
            condition.broadcast()
        }
    }

    /// Waits for work and takes up to `batchMax` items; nil once closed and drained.
    private func nextGroup() -> [Work]? {
        condition.withLock {
            while queue.isEmpty && !isClosing { condition.wait() }
            guard !queue.isEmpty else { return nil }
            let count = min(batchMax, queue.count)
            let group = Array(queue[..<count])
            queue.removeFirst(count)
            return group
        }
    }

    /// One transaction for the whole group. A throwing closure is a programmer or storage
    /// error: the group is aborted and all its waiters fail. A failed commit means the disk
    /// may not hold what we acknowledged before, so the process stops and recovers from the
    /// log on restart (STYLE.md §7).
    private func run(_ group: [Work]) {
        let transaction: WriteTransaction
        do {
            transaction = try environment.beginWrite()
        } catch {
            group.forEach { $0.fail(error) }
            return
        }
        var completions: [@Sendable () -> Void] = []
        completions.reserveCapacity(group.count)
        do {
            for work in group { completions.append(try work.apply(transaction)) }
        } catch {
            transaction.abort()
            group.forEach { $0.fail(error) }
            return
        }
        do {
            try transaction.commit()
        } catch {
            fatalError("dtc storage: commit failed: \(error)")
        }
        condition.withLock { committedGroups += 1 }
        completions.forEach { $0() }
    }
}
