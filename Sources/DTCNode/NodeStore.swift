import DTCCore
import DTCStorage

/// A node's durable state: one row per txn of every partition it leads or replicates (records
/// merge into rows), and the epoch it has promised per partition.
final class NodeStore: Sendable {
    let environment: LMDBEnvironment
    let rows: RowStore

    /// The node store's format: version 2 holds rows with opaque branches (`TxnRow` v2).
    static let formatVersion: UInt32 = 2

    init(path: String) throws {
        environment = try LMDBEnvironment(path: path)
        let (rowsDatabase, meta) = (try environment.database("rows"), try environment.database("meta"))
        try StoreFormat.check(environment, meta: meta, expected: Self.formatVersion) { txn in
            try txn.count(rowsDatabase) > 0 || txn.count(meta) > 0
        }
        rows = try RowStore(environment: environment, committer: GroupCommitter(environment: environment))
    }

    /// Merges the records into their rows, and records new promises, in the next group commit.
    func append(_ records: [PartitionRecord], promises: [UInt32: Epoch] = [:], onDurable: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let updates = records.map { entry in
            RowUpdate(partition: entry.partition, key: Array(entry.record.txnID.rawValue.utf8)) { stored in
                if case .trim = entry.record { return nil }
                // A decision or END without decoding the row (an unchanged row is not written).
                if let stored, let applied = TxnRow.applying(entry.record, toEncoded: stored) { return applied }
                var row = try stored.map { try TxnRow(decoding: $0) } ?? TxnRow(txnID: entry.record.txnID)
                row.apply(entry.record)
                return row.encoded()
            }
        }
        rows.update(updates, meta: promises.map { (Self.promiseKey($0.key), encodeEpoch($0.value)) }, onDurable: onDurable)
    }

    /// Persists promised epochs; durable when it returns.
    func promise(_ epochs: [UInt32: Epoch]) async throws {
        try await rows.update([], meta: epochs.map { (Self.promiseKey($0.key), encodeEpoch($0.value)) })
    }

    /// The txns of `partition` that have a row, rows unread.
    func txnIDs(of partition: UInt32) throws -> [TxnID] {
        try rows.keys(partition: partition).map { TxnID(String(decoding: $0, as: UTF8.self)) }
    }

    func rows(of partition: UInt32) throws -> [TxnRow] {
        try rows.rows(partition: partition).map { try TxnRow(decoding: $0.value) }
    }

    /// Counts the node's starts, durably: each start's replication sessions number above the
    /// sessions of every earlier start (`NodeMachine`'s incarnation).
    func nextIncarnation() async throws -> UInt64 {
        let stored = try rows.meta("incarnation").map { bytes -> UInt64 in
            var reader = ByteReader(bytes)
            return try reader.readUInt64()
        }
        let next = (stored ?? 0) + 1
        var writer = ByteWriter()
        writer.write(next)
        try await rows.update([], meta: [("incarnation", writer.bytes)])
        return next
    }

    func promise(of partition: UInt32) throws -> Epoch? {
        try rows.meta(Self.promiseKey(partition)).map(decodeEpoch)
    }

    private static func promiseKey(_ partition: UInt32) -> String { "promise/\(partition)" }
}

func encodeEpoch(_ epoch: Epoch) -> [UInt8] {
    var writer = ByteWriter()
    writer.write(epoch)
    return writer.bytes
}

func decodeEpoch(_ bytes: [UInt8]) throws -> Epoch {
    var reader = ByteReader(bytes)
    return try reader.readEpoch()
}
