import DTCCore
import DTCRuntime
import Logging
import PostgresNIO

/// The shop's accounts service kept in PostgreSQL: what a dtc-pg participant whose config
/// entry says `"service": "accounts"` creates and seeds, the SQL branch of an order's debit,
/// and what `dtc check` reads back. Same users, balances and rules as the shop's own accounts
/// RM: a debit takes `amount` cents from a user who has them and records it under the order.
public enum ShopAccountsSQL {
    static let schema = [
        "CREATE TABLE IF NOT EXISTS shop_balances (user_id text COLLATE \"C\" PRIMARY KEY, cents bigint NOT NULL CHECK (cents >= 0))",
        "CREATE TABLE IF NOT EXISTS shop_debits (order_id text COLLATE \"C\" PRIMARY KEY, user_id text NOT NULL, cents bigint NOT NULL CHECK (cents > 0))",
    ]

    /// An order's debit as an SQL branch: the balance check is the UPDATE's row count, and a
    /// second debit for one order breaks shop_debits' primary key.
    public static func debit(rm: String, orderID: String, userID: String, amount: Int64) -> Branch {
        let branch = SQLBranch(statements: [
            SQLStatement(
                "UPDATE shop_balances SET cents = cents - $1 WHERE user_id = $2 AND cents >= $1", params: [.int(amount), .text(userID)],
                rows: 1, refusal: "insufficient funds or unknown user"),
            SQLStatement("INSERT INTO shop_debits (order_id, user_id, cents) VALUES ($1, $2, $3)", params: [.text(orderID), .text(userID), .int(amount)]),
        ])
        return Branch(rm: rm, kind: SQLBranch.kind, payload: branch.encoded())
    }

    /// Creates the tables and, when they are empty, the users `user-0`… with their balances.
    static func seed(users: Int, centsPerUser: Int64, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        for statement in schema { try await connection.run(PostgresQuery(unsafeSQL: statement), logger: logger) }
        var binds = PostgresBindings()
        binds.append(Int64(users))
        binds.append(centsPerUser)
        let inserted = try await connection.run(
            PostgresQuery(
                unsafeSQL: """
                    INSERT INTO shop_balances (user_id, cents)
                    SELECT 'user-' || n, $2 FROM generate_series(0, $1 - 1) AS n
                    WHERE NOT EXISTS (SELECT 1 FROM shop_balances)
                    """, binds: binds), logger: logger)
        return (inserted.metadata.rows ?? 0) > 0
    }

    /// What `dtc check` compares with the other services: every balance, every debit, and the
    /// prepared transactions of this database that dtc-pg still holds.
    public struct Snapshot: Sendable {
        public var balances: [String: Int64] = [:]
        public var debits: [String: (user: String, amount: Int64)] = [:]
        /// Txn IDs of dtc prepared transactions PostgreSQL holds for this participant.
        public var prepared: [String] = []
    }

    public static func read(_ target: ClusterConfig.PostgresTarget, participant: String) async throws -> Snapshot {
        try await withConnection(target) { connection, logger in
            var snapshot = Snapshot()
            try await connection.run("BEGIN ISOLATION LEVEL REPEATABLE READ", logger: logger)
            for row in try await connection.run("SELECT user_id, cents FROM shop_balances", logger: logger).rows {
                let (user, cents) = try row.decode((String, Int64).self)
                snapshot.balances[user] = cents
            }
            for row in try await connection.run("SELECT order_id, user_id, cents FROM shop_debits", logger: logger).rows {
                let (order, user, cents) = try row.decode((String, String, Int64).self)
                snapshot.debits[order] = (user, cents)
            }
            snapshot.prepared = try await held(by: participant, on: connection, logger: logger)
            try await connection.run("COMMIT", logger: logger)
            return snapshot
        }
    }

    /// The txn IDs of the prepared transactions the database holds for `participant`.
    public static func preparedTxns(_ target: ClusterConfig.PostgresTarget, participant: String) async throws -> [String] {
        try await withConnection(target) { connection, logger in try await held(by: participant, on: connection, logger: logger) }
    }

    private static func held(by participant: String, on connection: PostgresConnection, logger: Logger) async throws -> [String] {
        try await PostgresLedger.preparedGIDs(on: connection, logger: logger).compactMap { PreparedGID($0, participant: participant)?.txnID.rawValue }
    }

    /// Runs `body` on a connection of its own, closed after (a connection must be closed before
    /// it goes).
    private static func withConnection<T>(
        _ target: ClusterConfig.PostgresTarget, _ body: (PostgresConnection, Logger) async throws -> T
    ) async throws -> T {
        let logger = Logger(label: "dtc.check")
        let configuration = PostgresConnection.Configuration(
            host: target.host, port: target.port, username: target.user, password: target.password, database: target.database, tls: .disable)
        let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
        do {
            let result = try await body(connection, logger)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}
