import DTCCore
import DTCStorage

/// A participant's durable state in one LMDB environment, in four databases: `state` (the
/// committed values its logic reads and writes), `ledger` (how each txn ended: txn ID →
/// `LedgerEntry`), `prepared` (txn ID → `PreparedTxn`) and `meta` (format version, seeding,
/// the ledger's last sequence). Every write goes through one group committer: many records, one
/// transaction, one fsync.
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
        let databases = Databases(state: state, ledger: ledger, prepared: prepared, meta: meta)
        committer.enqueue({ txn in
            for record in records { try Self.write(record, into: txn, databases) }
        }, onDurable: onDurable)
    }

    /// The databases a record's write touches, handed to the writer thread's closure.
    private struct Databases: Sendable {
        let state: Database
        let ledger: Database
        let prepared: Database
        let meta: Database
    }

    private static func write(_ record: ParticipantRecord, into txn: WriteTransaction, _ databases: Databases) throws {
        switch record {
        case .prepared(let txnState):
            try txn.put(databases.prepared, txnState.txnID.rawValue, txnState.encoded())
        case .committed(let txnID, let attempt, let writes, let epoch, let seen, let participants, let keys):
            for write in writes {
                if let value = write.value {
                    try txn.put(databases.state, write.key, value)
                } else {
                    try txn.delete(databases.state, Array(write.key.utf8))
                }
            }
            try txn.delete(databases.prepared, Array(txnID.rawValue.utf8))
            let decision = LedgerEntry(outcome: .commit, attempt: attempt, epoch: epoch, seenEpoch: seen, participants: participants, keys: keys)
            try writeLedger(txnID, decision, into: txn, databases)
        case .aborted(let txnID, let attempt, let epoch, let seen, let participants):
            try txn.delete(databases.prepared, Array(txnID.rawValue.utf8))
            let decision = LedgerEntry(outcome: .abort, attempt: attempt, epoch: epoch, seenEpoch: seen, participants: participants)
            try writeLedger(txnID, decision, into: txn, databases)
        }
    }

    /// Counts applications from what is on disk, not from what the machine believes, so that a
    /// decision applied twice (after a restart, a duplicate, a bug) shows in the ledger. The
    /// rollback of one attempt is replaced by the next attempt's entry; applications count the
    /// decisions of one attempt.
    ///
    /// A new decision takes the next ledger sequence. A repeated one keeps the sequence (and
    /// keys) of its first application: that is when its writes were applied and its locks
    /// released, and `applications` already shows the repeat.
    private static func writeLedger(_ txnID: TxnID, _ decision: LedgerEntry, into txn: WriteTransaction, _ databases: Databases) throws {
        let previous = try txn.get(databases.ledger, txnID.rawValue).map { try LedgerEntry(decoding: $0) }
        var entry = decision
        if let previous, previous.attempt == decision.attempt, previous.outcome == decision.outcome {
            entry.applications = previous.applications + 1
            entry.sequence = previous.sequence
            if entry.keys.isEmpty { entry.keys = previous.keys }
        } else {
            entry.sequence = try nextLedgerSequence(in: txn, databases.meta)
        }
        if entry.participants.isEmpty { entry.participants = previous?.participants ?? [] }
        try txn.put(databases.ledger, txnID.rawValue, entry.encoded())
    }

    /// The key in `meta` of the last ledger sequence assigned (uint64, big-endian).
    static let ledgerSequenceKey = "ledger-sequence"

    /// Takes the next ledger sequence from the counter in `meta`, inside the write transaction
    /// of the ledger entry that gets it: the counter is durable exactly when that entry is, so a
    /// restart never hands out a sequence twice, and costs no scan of the ledger (which is keyed
    /// by txn ID, not by sequence). A store without the counter (new, or written before entries
    /// had sequences) starts at 1; its older entries read as sequence 0.
    private static func nextLedgerSequence(in txn: WriteTransaction, _ meta: Database) throws -> UInt64 {
        var last: UInt64 = 0
        if let bytes = try txn.get(meta, ledgerSequenceKey) {
            var reader = ByteReader(bytes)
            last = try reader.readUInt64()
            guard reader.isAtEnd else { throw RecordDecodingError.trailingBytes(at: reader.offset) }
        }
        var writer = ByteWriter()
        writer.write(last + 1)
        try txn.put(meta, ledgerSequenceKey, writer.bytes)
        return last + 1
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
