import DTCCore
import DTCStorage

/// An RM's durable state in one LMDB database, by key prefix: the business state (`stock/`,
/// `resv/`, `order/`, `bal/`, `debit/`), prepared txns (`prep/`) and the txn ledger (`txn/`).
final class RMStore: Sendable {
    let environment: LMDBEnvironment
    let committer: GroupCommitter
    let state: Database

    init(path: String) throws {
        environment = try LMDBEnvironment(path: path)
        committer = GroupCommitter(environment: environment)
        state = try environment.database("state")
    }

    /// Committed values of `keys`; absent keys are missing from the result.
    func committedValues(_ keys: [String]) throws -> [String: StateValue] {
        try environment.read { txn in
            var values: [String: StateValue] = [:]
            for key in keys {
                if let bytes = try txn.get(state, key) { values[key] = try StateValue(decoding: bytes) }
            }
            return values
        }
    }

    /// Queues the record's writes for the next group commit; `onDurable` runs after the fsync.
    func persist(_ record: ParticipantRecord, onDurable: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let state = state
        committer.enqueue({ txn in try Self.write(record, into: txn, state) }, onDurable: onDurable)
    }

    private static func write(_ record: ParticipantRecord, into txn: WriteTransaction, _ state: Database) throws {
        switch record {
        case .prepared(let prepared):
            try txn.put(state, StateKey.prepared(prepared.txnID), prepared.encoded())
        case .committed(let txnID, let writes, let epoch, let seen):
            for write in writes { try txn.put(state, write.key, write.value.encoded()) }
            try txn.delete(state, Array(StateKey.prepared(txnID).utf8))
            try writeLedger(txnID, .commit, epoch: epoch, seen: seen, into: txn, state)
        case .aborted(let txnID, let epoch, let seen):
            try txn.delete(state, Array(StateKey.prepared(txnID).utf8))
            try writeLedger(txnID, .abort, epoch: epoch, seen: seen, into: txn, state)
        }
    }

    /// Counts applications from what is on disk, not from what the core believes, so that a
    /// decision applied twice (after a restart, a duplicate, a bug) shows in the ledger.
    private static func writeLedger(_ txnID: TxnID, _ outcome: Outcome, epoch: Epoch, seen: Epoch, into txn: WriteTransaction, _ state: Database) throws {
        let key = StateKey.txn(txnID)
        let previous = try txn.get(state, key).map { try LedgerEntry(decoding: $0) }
        let entry = LedgerEntry(outcome: outcome, epoch: epoch, seenEpoch: seen, applications: (previous?.applications ?? 0) + 1)
        try txn.put(state, key, entry.encoded())
    }

    func scan(prefix: String, after: String?, limit: Int) throws -> [(key: String, value: [UInt8])] {
        try environment.read { txn in
            try txn.scan(state, prefix: Array(prefix.utf8), after: after.map { Array($0.utf8) }, limit: limit)
        }.map { (String(decoding: $0.key, as: UTF8.self), $0.value) }
    }

    /// What a restart needs: the prepared txns and the ledger.
    func recoveryState() throws -> (prepared: [PreparedTxn], finished: [(TxnID, Outcome)]) {
        let prepared = try scan(prefix: StateKey.preparedPrefix, after: nil, limit: .max).map { try PreparedTxn(decoding: $0.value) }
        let finished = try scan(prefix: StateKey.txnPrefix, after: nil, limit: .max).map { entry in
            (TxnID(String(entry.key.dropFirst(StateKey.txnPrefix.count))), try LedgerEntry(decoding: entry.value).outcome)
        }
        return (prepared, finished)
    }

    /// Seeds the business state once, on the first start of an empty store.
    func seedIfEmpty(_ values: [(String, StateValue)]) async throws -> Bool {
        let state = state
        return try await committer.commit { txn in
            guard try txn.get(state, "meta/seeded") == nil else { return false }
            for (key, value) in values { try txn.put(state, key, value.encoded()) }
            try txn.put(state, "meta/seeded", [1])
            return true
        }
    }

    func close() {
        committer.close()
        environment.close()
    }
}
