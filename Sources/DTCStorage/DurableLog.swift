import Synchronization

/// One record of a partition's log.
public struct LogEntry: Sendable, Equatable {
    public let partition: UInt32
    public let sequence: UInt64
    public let payload: [UInt8]

    public init(partition: UInt32, sequence: UInt64, payload: [UInt8]) {
        self.partition = partition
        self.sequence = sequence
        self.payload = payload
    }
}

/// The coordinator's durable log: per-partition ordered records in the LMDB database "log"
/// keyed by partition (UInt32 big-endian) ++ sequence (UInt64 big-endian), so key order is
/// (partition, sequence) order; small named values live in "meta".
///
/// The database "log.trimmed" remembers, per partition, the last sequence removed by
/// trimming, so a partition trimmed empty does not reuse sequence numbers after a restart.
public final class DurableLog: @unchecked Sendable {
    private let committer: GroupCommitter
    private let environment: LMDBEnvironment
    private let log: Database
    private let meta: Database
    private let trimmed: Database
    /// Next sequence per partition. Held while queueing so queue order = sequence order: a
    /// later record never becomes durable in an earlier group than an earlier one.
    private let nextSequences: Mutex<[UInt32: UInt64]>

    public init(environment: LMDBEnvironment, committer: GroupCommitter) throws {
        self.environment = environment
        self.committer = committer
        log = try environment.database("log")
        meta = try environment.database("meta")
        trimmed = try environment.database("log.trimmed")
        let (log, trimmed) = (log, trimmed)
        nextSequences = Mutex(try environment.read { try Self.loadNextSequences($0, log: log, trimmed: trimmed) })
    }

    /// Appends in call order. If `sync`, returns once the records are durable (fsynced);
    /// otherwise returns once they are queued and they become durable with a later sync.
    public func append(_ records: [(partition: UInt32, payload: [UInt8])], sync: Bool) async throws {
        guard sync else {
            queue(records, committer.enqueue)
            return
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue(records) { body in
                committer.submit(GroupCommitter.Work(
                    apply: { transaction in
                        try body(transaction)
                        return { continuation.resume() }
                    },
                    fail: { continuation.resume(throwing: $0) }))
            }
        }
    }

    /// Queues the records at once, in call order, and calls `onDurable` once they are fsynced
    /// (or with the error if their group failed). For callers that must not suspend between
    /// deciding on a record and queueing it, such as an actor applying a state machine's output.
    public func append(
        _ records: [(partition: UInt32, payload: [UInt8])],
        onDurable: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        queue(records) { body in
            committer.submit(GroupCommitter.Work(
                apply: { transaction in
                    try body(transaction)
                    return { onDurable(.success(())) }
                },
                fail: { onDurable(.failure($0)) }))
        }
    }

    /// Every record of `partition` in sequence order, checksums verified.
    public func entries(partition: UInt32) throws -> [LogEntry] {
        try environment.read { try $0.scan(log, prefix: Self.bytes(partition)) }.map(Self.entry)
    }

    /// Every record of every partition, in (partition, sequence) order.
    public func allEntries() throws -> [LogEntry] {
        try environment.read { try $0.scan(log, prefix: []) }.map(Self.entry)
    }

    /// Removes `partition`'s records with sequence <= `throughSequence`; durable on return.
    public func removeEntries(partition: UInt32, throughSequence: UInt64) async throws {
        let next = nextSequences.withLock { $0[partition, default: 0] }
        precondition(throughSequence < next, "trim of partition \(partition) through \(throughSequence) beyond next sequence \(next)")
        let (log, trimmed) = (log, trimmed)
        try await committer.commit { transaction in
            let first = Self.key(partition, 0)
            let last = Self.key(partition, throughSequence)
            while let key = try transaction.firstKey(log, atOrAfter: first), !last.lexicographicallyPrecedes(key) {
                try transaction.delete(log, key)
            }
            let previous = try transaction.get(trimmed, Self.bytes(partition)).map(Self.sequence) ?? 0
            try transaction.put(trimmed, Self.bytes(partition), Self.bytes(max(previous, throughSequence)))
        }
    }

    public func recordCount() throws -> Int {
        try environment.read { try $0.count(log) }
    }

    /// Stores a small named value (e.g. a promised epoch); durable when it returns.
    public func putMeta(_ key: String, _ value: [UInt8]) async throws {
        let meta = meta
        try await committer.commit { try $0.put(meta, key, value) }
    }

    public func meta(_ key: String) throws -> [UInt8]? {
        try environment.read { try $0.get(meta, key) }
    }

    public var syncCount: UInt64 { committer.syncCount }

    /// Assigns sequences and hands the write to `submit` under the same lock (see `nextSequences`).
    private func queue(
        _ records: [(partition: UInt32, payload: [UInt8])],
        _ submit: (@escaping @Sendable (WriteTransaction) throws -> Void) -> Void
    ) {
        let log = log
        nextSequences.withLock { next in
            let keyed = records.map { record in
                let sequence = next[record.partition, default: 0]
                next[record.partition] = sequence + 1
                return (key: Self.key(record.partition, sequence), payload: record.payload)
            }
            submit { transaction in
                for record in keyed { try transaction.put(log, record.key, record.payload) }
            }
        }
    }

    /// Finds each partition's last key by jumping partition to partition, so start-up costs
    /// O(partitions · log n), not a scan of the whole log.
    private static func loadNextSequences(_ transaction: ReadTransaction, log: Database, trimmed: Database) throws -> [UInt32: UInt64] {
        var next: [UInt32: UInt64] = [:]
        for (key, value) in try transaction.scan(trimmed, prefix: []) {
            next[partition(key)] = sequence(value) + 1
        }
        var firstKey = try transaction.firstKey(log, atOrAfter: [])
        while let key = firstKey {
            let partition = partition(key)
            let following = partition == .max ? nil : bytes(partition + 1)
            guard let last = try transaction.lastKey(log, before: following) else { break }
            next[partition] = max(next[partition, default: 0], sequence(Array(last[4...])) + 1)
            guard let following else { break }
            firstKey = try transaction.firstKey(log, atOrAfter: following)
        }
        return next
    }

    private static func entry(_ stored: (key: [UInt8], value: [UInt8])) -> LogEntry {
        LogEntry(partition: partition(stored.key), sequence: sequence(Array(stored.key[4...])), payload: stored.value)
    }

    static func key(_ partition: UInt32, _ sequence: UInt64) -> [UInt8] {
        bytes(partition) + bytes(sequence)
    }

    private static func bytes<Integer: FixedWidthInteger>(_ value: Integer) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    private static func partition(_ key: [UInt8]) -> UInt32 {
        key.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    private static func sequence(_ bytes: [UInt8]) -> UInt64 {
        bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}
