import DTCCore
import Logging
import PostgresNIO

/// What preparing one branch came to.
enum PrepareResult: Sendable {
    /// PostgreSQL holds the branch as a prepared transaction.
    case prepared
    /// The branch cannot commit: an SQL error, a wrong row count, a lock wait past its bound,
    /// a deadlock or serialization failure PostgreSQL detected, or a tombstone. Rolled back.
    case refused(AbortReason)
    /// The ledger already says how the txn ended (a repeated PREPARE after a restart).
    case alreadyFinished(LedgerEntry)
}

/// Preparing a branch on one connection, in as few round trips as it takes: BEGIN; the
/// transaction's lock and statement timeouts; the COMMIT row of the ledger, first, so that a
/// txn already finished here (its row is there: a commit, or a tombstone) stops at once and
/// answers from that row without running its statements again; the statements with their row
/// counts checked; PREPARE TRANSACTION. An error PostgreSQL reports about the branch is a NO;
/// a connection that fails is thrown (the pool closes it; PostgreSQL rolls the branch back).
struct BranchWork: Sendable {
    var participant: String
    var txnID: TxnID
    var branch: SQLBranch
    var gid: PreparedGID
    var commitRow: LedgerEntry
    var lockTimeoutMs: Int
    var statementTimeoutMs: Int
    var logger: Logger

    func run(on connection: PostgresConnection) async throws -> PrepareResult {
        try await execute("BEGIN", on: connection)
        do {
            var timeouts = PostgresBindings()
            timeouts.append("\(lockTimeoutMs)ms")
            timeouts.append("\(statementTimeoutMs)ms")
            try await connection.run(
                PostgresQuery(unsafeSQL: "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)", binds: timeouts),
                logger: logger)
            try await connection.run(PostgresLedger.insert(participant, txnID, commitRow), logger: logger)
            for (index, statement) in branch.statements.enumerated() {
                let result = try await connection.run(PostgresQuery(unsafeSQL: statement.sql, binds: statement.bindings), logger: logger)
                if let wanted = statement.rows, result.metadata.rows != wanted {
                    try await execute("ROLLBACK", on: connection)
                    let got = result.metadata.rows.map(String.init) ?? "no count"
                    let counts = "statements[\(index)] affected \(got) rows, not \(wanted)"
                    return .refused(AbortReason(.refused, statement.refusal.map { "\($0) (\(counts))" } ?? counts))
                }
            }
            try await execute("PREPARE TRANSACTION \(gid.literal(participant: participant))", on: connection)
            return .prepared
        } catch let error as PSQLError where error.serverInfo != nil {
            try await execute("ROLLBACK", on: connection)
            if Self.isLedgerCollision(error), let entry = try await PostgresParticipant.ledgerEntry(txnID, participant: participant, on: connection) {
                return .alreadyFinished(entry)
            }
            return .refused(Self.reason(error))
        }
    }

    /// The txn has a ledger row already: it finished here before.
    static func isLedgerCollision(_ error: PSQLError) -> Bool {
        error.serverInfo?[.sqlState] == "23505" && error.serverInfo?[.constraintName] == PostgresLedger.primaryKey
    }

    private func execute(_ sql: String, on connection: PostgresConnection) async throws {
        try await connection.run(PostgresQuery(unsafeSQL: sql), logger: logger)
    }

    /// PostgreSQL's message, with the cause a client can act on: lock conflicts, deadlocks,
    /// serialization failures and statement timeouts are contention (a retry may succeed),
    /// the rest a refusal.
    static func reason(_ error: PSQLError) -> AbortReason {
        let state = error.serverInfo?[.sqlState] ?? ""
        let message = error.serverInfo?[.message] ?? "\(error.code)"
        if isLedgerCollision(error) { return AbortReason(.refused, "rolled back before it was prepared") }
        let contention: Set<String> = ["55P03", "40P01", "40001", "57014"]
        let cause: AbortCause = contention.contains(state) ? .contention : .refused
        return AbortReason(cause, "postgres: \(message) (SQLSTATE \(state))")
    }
}

/// Applying a decision to a prepared branch: COMMIT PREPARED (whose ledger row came with the
/// branch; its epochs are updated if a later leader decided) or ROLLBACK PREPARED and an
/// aborted row. A branch PostgreSQL no longer holds was finished before (the answer to an
/// earlier decision was lost): the ledger says how, and that is returned.
struct FinishWork: Sendable {
    var participant: String
    var branch: PreparedBranch
    var entry: LedgerEntry

    func run(on connection: PostgresConnection) async throws -> LedgerEntry {
        let logger = Logger(label: "dtc-pg")
        let txnID = branch.gid.txnID
        let verb = entry.outcome == .commit ? "COMMIT PREPARED" : "ROLLBACK PREPARED"
        do {
            try await connection.run(PostgresQuery(unsafeSQL: "\(verb) \(branch.gid.literal(participant: participant))"), logger: logger)
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42704" {
            // "prepared transaction with identifier ... does not exist"
            if let recorded = try await PostgresParticipant.ledgerEntry(txnID, participant: participant, on: connection) { return recorded }
            guard entry.outcome == .abort else { throw error }
        }
        switch entry.outcome {
        case .commit:
            if entry.epoch != branch.gid.epoch || entry.seenEpoch != branch.gid.epoch {
                try await connection.run(PostgresLedger.setEpochs(participant, txnID, epoch: entry.epoch, seen: entry.seenEpoch), logger: logger)
            }
            // A branch reloaded after a restart does not know its participants; its row does.
            if branch.participants.isEmpty { return try await PostgresParticipant.ledgerEntry(txnID, participant: participant, on: connection) ?? entry }
            return entry
        case .abort:
            let inserted = try await connection.run(PostgresLedger.insert(participant, txnID, entry, ifAbsent: true), logger: logger)
            if inserted.metadata.rows == 1 { return entry }
            return try await PostgresParticipant.ledgerEntry(txnID, participant: participant, on: connection) ?? entry
        }
    }
}

extension SQLStatement {
    var bindings: PostgresBindings {
        var binds = PostgresBindings(capacity: params.count)
        for param in params {
            switch param {
            case .null: binds.appendNull()
            case .bool(let value): binds.append(value)
            case .int(let value): binds.append(value)
            case .double(let value): binds.append(value)
            case .text(let value): binds.append(value)
            }
        }
        return binds
    }
}
