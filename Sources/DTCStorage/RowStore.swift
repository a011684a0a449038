/// One change to a row: the stored value (nil if none) goes in, the new value comes out (nil
/// deletes the row; the stored value itself leaves the row unwritten). It runs inside the
/// group's write transaction, so a merge of what is stored with what arrives is atomic.
public struct RowUpdate: Sendable {
    public var partition: UInt32
    public var key: [UInt8]
    public var transform: @Sendable ([UInt8]?) throws -> [UInt8]?

    public init(partition: UInt32, key: [UInt8], transform: @escaping @Sendable ([UInt8]?) throws -> [UInt8]?) {
        self.partition = partition
        self.key = key
        self.transform = transform
    }
}

/// The rows of the partitions a node leads or replicates, in the LMDB database "rows", keyed
/// by partition (UInt32 big-endian) ++ row key, so a partition's rows are one key range; small
/// named values (promised epochs) live in "meta". Every write goes through the group
/// committer: many updates, one transaction, one fsync.
public final class RowStore: @unchecked Sendable {
    private let committer: GroupCommitter
    private let environment: LMDBEnvironment
    private let rowsDatabase: Database
    private let metaDatabase: Database

    public init(environment: LMDBEnvironment, committer: GroupCommitter) throws {
        self.environment = environment
        self.committer = committer
        rowsDatabase = try environment.database("rows")
        metaDatabase = try environment.database("meta")
    }

    /// Queues the updates and meta values for the next group commit, in call order, and calls
    /// `onDurable` once they are fsynced (or with the error if their group failed).
    public func update(
        _ updates: [RowUpdate], meta: [(String, [UInt8])] = [],
        onDurable: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        let (rows, metaDatabase) = (rowsDatabase, metaDatabase)
        committer.enqueue({ transaction in
            for (key, value) in meta { try transaction.put(metaDatabase, key, value) }
            for update in updates {
                let key = Self.key(update.partition, update.key)
                let stored = try transaction.get(rows, key)
                if let value = try update.transform(stored) {
                    if value == stored { continue }  // unchanged: no write
                    try transaction.put(rows, key, value)
                } else {
                    try transaction.delete(rows, key)
                }
            }
        }, onDurable: onDurable)
    }

    /// The same, returning once the updates are durable.
    public func update(_ updates: [RowUpdate], meta: [(String, [UInt8])] = []) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            update(updates, meta: meta) { continuation.resume(with: $0) }
        }
    }

    /// `partition`'s rows in key order, checksums verified (a corrupt row throws, naming its key).
    public func rows(partition: UInt32) throws -> [(key: [UInt8], value: [UInt8])] {
        let prefix = Self.bytes(partition)
        return try environment.read { try $0.scan(rowsDatabase, prefix: prefix) }.map { (Array($0.key.dropFirst(4)), $0.value) }
    }

    /// The keys of `partition`'s rows, in order, values unread: for callers that need to know
    /// which rows exist, not what they hold.
    public func keys(partition: UInt32) throws -> [[UInt8]] {
        let prefix = Self.bytes(partition)
        return try environment.read { try $0.keys(rowsDatabase, prefix: prefix) }.map { Array($0.dropFirst(4)) }
    }

    public func rowCount() throws -> Int {
        try environment.read { try $0.count(rowsDatabase) }
    }

    public func meta(_ key: String) throws -> [UInt8]? {
        try environment.read { try $0.get(metaDatabase, key) }
    }

    /// LMDB write transactions committed so far (= fsyncs).
    public var syncCount: UInt64 { committer.syncCount }

    static func key(_ partition: UInt32, _ key: [UInt8]) -> [UInt8] { bytes(partition) + key }

    private static func bytes(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)]
    }
}
