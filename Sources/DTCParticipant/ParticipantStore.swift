import DTCCore
import DTCStorage

/// A participant's durable state in one LMDB environment, in four databases: `state` (the
/// committed values its logic reads and writes), `ledger` (how each txn ended: txn ID →
/// `LedgerEntry`), `prepared` (txn ID → `PreparedTxn`) and `meta` (format version, seeding).
/// Every write goes through one group committer: many records, one transaction, one fsync.
public final class ParticipantStore: Sendable {
    /// Version 2: separate state, ledger and prepared databases, opaque values.
    public static let formatVersion: UInt32 = 2

    let environment: LMDBEnvironment
    let committer: GroupCommitter
    let state: Database
    let ledger: Database
    let prepared: Database
    let meta: Database

    public init(path: String) throws {
        environment = try LMDBEnvironment(path: path)
        committer = GroupCommitter(environment: environment)
        state = try environment.database("state")
        ledger = try environment.database("ledger")
        prepared = try environment.database("prepared")
        meta = try environment.database("meta")
        let databases = [state, ledger, prepared, meta]
        try StoreFormat.check(environment, meta: meta, expected: Self.formatVersion) { txn in
            try databases.contains { try txn.count($0) > 0 }
        }
    }

    /// The committed value of `key`, or nil: for a service's own reads outside any txn.
    public func value(for key: String) throws -> [UInt8]? {
        try environment.read { try $0.get(state, key) }
    }

    /// Committed values of `keys`; absent keys are missing from the result.
    func committedValues(_ keys: [String]) throws -> [String: [UInt8]] {
        try environment.read { txn in
            var values: [String: [UInt8]] = [:]
            for key in keys {
                if let bytes = try txn.get(state, key) { values[key] = bytes }
            }
            return values
        }
    }

    func ledgerEntry(_ txnID: TxnID) throws -> LedgerEntry? {
        try environment.read { txn in try txn.get(ledger, txnID.rawValue).map { try LedgerEntry(decoding: $0) } }
    }

    /// Queues the records' writes for the next group commit; `onDurable` runs after the fsync.
    func persist(_ records: [ParticipantRecord], onDurable: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let (state, ledger, prepared) = (state, ledger, prepared)
        committer.enqueue({ txn in
            for record in records { try Self.write(record, into: txn, state: state, ledger: ledger, prepared: prepared) }
        }, onDurable: onDurable)
    }

    private static func write(_ record: ParticipantRecord, into txn: WriteTransaction, state: Database, ledger: Database, prepared: Database) throws {
        switch record {
        case .prepared(let txnState):
            try txn.put(prepared, txnState.txnID.rawValue, txnState.encoded())
        case .committed(let txnID, let attempt, let writes, let epoch, let seen, let participants):
            for write in writes {
                if let value = write.value { try txn.put(state, write.key, value) } else { try txn.delete(state, Array(write.key.utf8)) }
            }
            try txn.delete(prepared, Array(txnID.rawValue.utf8))
            try writeLedger(txnID, .commit, attempt, epoch: epoch, seen: seen, participants: participants, into: txn, ledger)
        case .aborted(let txnID, let attempt, let epoch, let seen, let participants):
            try txn.delete(prepared, Array(txnID.rawValue.utf8))
            try writeLedger(txnID, .abort, attempt, epoch: epoch, seen: seen, participants: participants, into: txn, ledger)
        }
    }

    /// Counts applications from what is on disk, not from what the machine believes, so that a
    /// decision applied twice (after a restart, a duplicate, a bug) shows in the ledger. The
    /// rollback of one attempt is replaced by the next attempt's entry; applications count the
    /// decisions of one attempt.
    private static func writeLedger(
        _ txnID: TxnID, _ outcome: Outcome, _ attempt: Attempt, epoch: Epoch, seen: Epoch, participants: [String], into txn: WriteTransaction,
        _ ledger: Database
    ) throws {
        let previous = try txn.get(ledger, txnID.rawValue).map { try LedgerEntry(decoding: $0) }
        let sameDecision = previous.map { $0.attempt == attempt && $0.outcome == outcome } ?? false
        let entry = LedgerEntry(
            outcome: outcome, attempt: attempt, epoch: epoch, seenEpoch: seen, applications: sameDecision ? previous!.applications + 1 : 1,
            participants: participants.isEmpty ? previous?.participants ?? [] : participants)
        try txn.put(ledger, txnID.rawValue, entry.encoded())
    }

    func database(_ space: ScanSpace) -> Database {
        switch space {
        case .state: state
        case .ledger: ledger
        case .prepared: prepared
        }
    }

    func scan(_ space: ScanSpace, prefix: String, after: String?, limit: Int) throws -> [(key: String, value: [UInt8])] {
        let database = database(space)
        return try environment.read { txn in
            try txn.scan(database, prefix: Array(prefix.utf8), after: after.map { Array($0.utf8) }, limit: limit)
        }.map { (String(decoding: $0.key, as: UTF8.self), $0.value) }
    }

    /// The prepared txns a restart re-locks.
    func preparedTxns() throws -> [PreparedTxn] {
        try scan(.prepared, prefix: "", after: nil, limit: .max).map { try PreparedTxn(decoding: $0.value) }
    }

    /// Writes the initial state once, on the first start of an empty store.
    func seedIfEmpty(_ values: [(key: String, value: [UInt8])]) async throws -> Bool {
        let (state, meta) = (state, meta)
        return try await committer.commit { txn in
            guard try txn.get(meta, "seeded") == nil else { return false }
            for (key, value) in values { try txn.put(state, key, value) }
            try txn.put(meta, "seeded", [1])
            return true
        }
    }

    func close() {
        committer.close()
        environment.close()
    }
}

/// Which of a participant's databases a `Scan` reads.
enum ScanSpace: Sendable {
    case state, ledger, prepared
}
