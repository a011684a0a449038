import DTCCore
import Logging
import PostgresNIO

/// dtc-pg's own table in the participant's database: how each txn ended there, in the same
/// terms as every participant's ledger (`LedgerEntry`). A txn's COMMIT row is inserted inside
/// the prepared transaction itself, so it becomes visible exactly when the branch's writes do:
/// the ledger cannot say "committed" for writes that are not there, or miss writes that are.
/// A ROLLBACK's row (or a tombstone) is inserted after PostgreSQL has rolled the branch back.
enum PostgresLedger {
    static let createTable = """
        CREATE TABLE IF NOT EXISTS dtc_ledger (
            participant text COLLATE "C" NOT NULL,
            txn_id text COLLATE "C" NOT NULL,
            outcome smallint NOT NULL CHECK (outcome IN (1, 2)),
            epoch_counter bigint NOT NULL,
            epoch_node bigint NOT NULL,
            seen_counter bigint NOT NULL,
            seen_node bigint NOT NULL,
            applications integer NOT NULL,
            participants text[] NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (participant, txn_id)
        )
        """

    /// The constraint a second row for one txn breaks (a tombstone raced a PREPARE).
    static let primaryKey = "dtc_ledger_pkey"

    static func insert(_ participant: String, _ txnID: TxnID, _ entry: LedgerEntry, ifAbsent: Bool = false) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(participant)
        binds.append(txnID.rawValue)
        binds.append(entry.outcome == .commit ? Int16(1) : Int16(2))
        binds.append(Int64(bitPattern: entry.epoch.counter))
        binds.append(Int64(entry.epoch.node))
        binds.append(Int64(bitPattern: entry.seenEpoch.counter))
        binds.append(Int64(entry.seenEpoch.node))
        binds.append(Int32(clamping: entry.applications))
        binds.append(entry.participants)
        let sql = """
            INSERT INTO dtc_ledger (participant, txn_id, outcome, epoch_counter, epoch_node, seen_counter, seen_node, applications, participants)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """ + (ifAbsent ? " ON CONFLICT (participant, txn_id) DO NOTHING" : "")
        return PostgresQuery(unsafeSQL: sql, binds: binds)
    }

    /// After COMMIT PREPARED by a decision of another epoch than the PREPARE's (a new leader):
    /// the row written in the prepared transaction gets the decision's epochs.
    static func setEpochs(_ participant: String, _ txnID: TxnID, epoch: Epoch, seen: Epoch) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(participant)
        binds.append(txnID.rawValue)
        binds.append(Int64(bitPattern: epoch.counter))
        binds.append(Int64(epoch.node))
        binds.append(Int64(bitPattern: seen.counter))
        binds.append(Int64(seen.node))
        return PostgresQuery(
            unsafeSQL: """
                UPDATE dtc_ledger SET epoch_counter = $3, epoch_node = $4, seen_counter = $5, seen_node = $6
                WHERE participant = $1 AND txn_id = $2
                """, binds: binds)
    }

    static let columns = "txn_id, outcome, epoch_counter, epoch_node, seen_counter, seen_node, applications, participants"

    static func select(_ participant: String, _ txnID: TxnID) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(participant)
        binds.append(txnID.rawValue)
        return PostgresQuery(unsafeSQL: "SELECT \(columns) FROM dtc_ledger WHERE participant = $1 AND txn_id = $2", binds: binds)
    }

    /// Ledger rows in txn ID byte order, for Scan: those starting with `prefix`, after `after`.
    static func scan(_ participant: String, prefix: String, after: String?, limit: Int) -> PostgresQuery {
        var binds = PostgresBindings()
        binds.append(participant)
        binds.append(prefix)
        binds.append(after ?? "")
        binds.append(Int64(limit))
        return PostgresQuery(
            unsafeSQL: """
                SELECT \(columns) FROM dtc_ledger
                WHERE participant = $1 AND starts_with(txn_id, $2) AND txn_id > $3
                ORDER BY txn_id LIMIT $4
                """, binds: binds)
    }

    /// The global ids of every prepared transaction of the connection's database.
    static func preparedGIDs(on connection: PostgresConnection, logger: Logger) async throws -> [String] {
        try await connection.run("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()", logger: logger)
            .rows.map { try $0.decode(String.self) }
    }

    static func decode(_ row: PostgresRow) throws -> (TxnID, LedgerEntry) {
        let (id, outcome, epochCounter, epochNode, seenCounter, seenNode, applications, participants) = try row.decode(
            (String, Int16, Int64, Int64, Int64, Int64, Int32, [String]).self)
        let entry = LedgerEntry(
            outcome: outcome == 1 ? .commit : .abort,
            epoch: Epoch(counter: UInt64(bitPattern: epochCounter), node: UInt32(truncatingIfNeeded: epochNode)),
            seenEpoch: Epoch(counter: UInt64(bitPattern: seenCounter), node: UInt32(truncatingIfNeeded: seenNode)),
            applications: UInt32(clamping: applications), participants: participants)
        return (TxnID(id), entry)
    }
}

/// The global id of a branch's prepared transaction in PostgreSQL. It carries what dtc-pg
/// needs to finish the branch after a restart: the txn, its partition (for the termination
/// inquiry) and the PREPARE's epoch (the highest epoch seen, to refuse stale decisions).
///
///     dtc:<participant>:<partition>:<epoch counter>.<epoch node>:<txn ID>
struct PreparedGID: Hashable, Sendable {
    var txnID: TxnID
    var partition: UInt32
    var epoch: Epoch

    /// PostgreSQL keeps at most 199 bytes of a global id.
    static let bytesMax = 199

    static func prefix(of participant: String) -> String { "dtc:\(participant):" }

    func text(participant: String) -> String {
        "\(Self.prefix(of: participant))\(partition):\(epoch.counter).\(epoch.node):\(txnID.rawValue)"
    }

    /// Why this txn's branch cannot be prepared under a global id, if it cannot.
    func problem(participant: String) -> String? {
        if txnID.rawValue.utf8.contains(0) { return "txn ID contains a NUL character, which PostgreSQL cannot store" }
        let bytes = text(participant: participant).utf8.count
        if bytes > Self.bytesMax {
            return "txn ID too long for a PostgreSQL global id (\(bytes) bytes with the prefix, at most \(Self.bytesMax))"
        }
        return nil
    }

    /// The SQL literal of the global id (PREPARE TRANSACTION takes no bind parameters).
    func literal(participant: String) -> String {
        "'" + text(participant: participant).replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// Parses a global id of this participant's; nil for any other (not dtc's, or another
    /// participant's).
    init?(_ gid: String, participant: String) {
        let prefix = Self.prefix(of: participant)
        guard gid.hasPrefix(prefix) else { return nil }
        let fields = gid.dropFirst(prefix.count).split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, let partition = UInt32(fields[0]), !fields[2].isEmpty else { return nil }
        let epochParts = fields[1].split(separator: ".")
        guard epochParts.count == 2, let counter = UInt64(epochParts[0]), let node = UInt32(epochParts[1]) else { return nil }
        self.init(txnID: TxnID(String(fields[2])), partition: partition, epoch: Epoch(counter: counter, node: node))
    }

    init(txnID: TxnID, partition: UInt32, epoch: Epoch) {
        self.txnID = txnID
        self.partition = partition
        self.epoch = epoch
    }
}
