import DTCCore
import DTCRuntime
import Foundation
import Logging
import PostgresNIO
import Testing

@testable import DTCPostgres

/// The server of DTC_TEST_POSTGRES=host:port:database:user:password, if set.
private let testPostgres: ClusterConfig.PostgresTarget? = {
    guard let value = ProcessInfo.processInfo.environment["DTC_TEST_POSTGRES"] else { return nil }
    let parts = value.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    guard parts.count == 5, let port = Int(parts[1]) else { return nil }
    return ClusterConfig.PostgresTarget(host: parts[0], port: port, database: parts[2], user: parts[3], password: parts[4])
}()

/// dtc-pg's participant against a real PostgreSQL server: scripts/pg-test.sh starts one and
/// runs this suite with DTC_TEST_POSTGRES=host:port:database:user:password. Each test drives
/// the participant as a coordinator's stream would, and reads the database to see what
/// PostgreSQL holds. A new participant on the same database is a restart of dtc-pg.
@Suite(.serialized, .enabled(if: testPostgres != nil, "needs DTC_TEST_POSTGRES (scripts/pg-test.sh sets it)"))
struct PostgresParticipantTests {
    static var target: ClusterConfig.PostgresTarget? { testPostgres }

    static let config: ClusterConfig = {
        let json = """
            {"partitions": 8, "replicationFactor": 3, "virtualNodes": 8,
             "nodes": [{"name": "n1", "host": "127.0.0.1", "port": 1, "dataDir": "x"}, {"name": "n2", "host": "127.0.0.1", "port": 2, "dataDir": "x"}],
             "rms": [],
             "timing": {"tickMs": 20, "prepareTimeoutMs": 4000, "lockWaitTimeoutMs": 300, "decisionRetryInitialMs": 100,
                        "decisionRetryMaxMs": 2000, "inquiryAfterMs": 3000, "rpcTimeoutMs": 5000, "heartbeatMs": 100,
                        "suspicionTimeoutMs": 800, "logRetentionMs": 60000}}
            """
        return try! JSONDecoder().decode(ClusterConfig.self, from: Data(json.utf8))
    }()

    /// Each test has a participant name of its own, so global ids and ledger rows never meet.
    let name = "pgtest-\(UUID().uuidString.prefix(8).lowercased())"
    let logger = Logger(label: "dtc-pg.test")
    let epoch = Epoch(counter: 2, node: 1)

    /// The pools of a test's participants, closed when the test ends (a connection must be
    /// closed before it goes).
    final class Pools: @unchecked Sendable {
        var all: [PostgresPool] = []
    }
    let pools = Pools()

    /// Runs a test's body, then closes every connection its participants opened.
    private func withParticipants(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            for pool in pools.all { await pool.close() }
            throw error
        }
        for pool in pools.all { await pool.close() }
    }

    /// A participant on the test database (a new one is a restart), and a stream to it.
    private func start() async throws -> (PostgresParticipant, Stream) {
        let target = try #require(Self.target)
        let pool = PostgresPool(target: target, capacity: 4, connectTimeoutMs: 1_000, logger: logger)
        pools.all.append(pool)
        try await prepareDatabase(pool, target: target, participant: name, logger: logger)
        let participant = PostgresParticipant(name: name, pool: pool, config: Self.config, logger: logger) { _, _ in nil }
        try await participant.adoptPreparedTransactions()
        let replies = BatchQueue<ParticipantReply>()
        return (participant, Stream(participant: participant, replies: replies, route: await participant.open(replies)))
    }

    struct Stream {
        let participant: PostgresParticipant
        let replies: BatchQueue<ParticipantReply>
        let route: ReplyRoute

        /// Sends one message and waits (bounded) for its one reply.
        func send(prepare: PrepareMessage? = nil, decision: DecisionMessage? = nil) async throws -> ParticipantReply {
            await participant.receive(prepares: prepare.map { [$0] } ?? [], decisions: decision.map { [$0] } ?? [], from: route)
            let reply = try await withThrowingTaskGroup(of: [ParticipantReply]?.self) { group in
                group.addTask { await replies.next() }
                group.addTask {
                    try await Task.sleep(for: .seconds(10))
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            return try #require(reply?.first, "no reply within 10 s")
        }
    }

    private func sender(_ epoch: Epoch? = nil) -> Sender { Sender(partition: 3, epoch: epoch ?? self.epoch, node: "n1") }

    private func prepare(_ txn: String, _ statements: [SQLStatement], epoch: Epoch? = nil) -> PrepareMessage {
        PrepareMessage(
            txnID: TxnID(txn), stamp: 1, sender: sender(epoch),
            branch: Branch(rm: name, kind: SQLBranch.kind, payload: SQLBranch(statements: statements).encoded()), participants: [name, "orders"])
    }

    private func decision(_ txn: String, _ outcome: Outcome, epoch: Epoch? = nil) -> DecisionMessage {
        DecisionMessage(txnID: TxnID(txn), outcome: outcome, sender: sender(epoch))
    }

    private var table: String { "items_\(name.replacingOccurrences(of: "-", with: "_"))" }

    private func insert(_ key: String, _ value: Int64) -> SQLStatement {
        SQLStatement("INSERT INTO \(table) (k, n) VALUES ($1, $2)", params: [.text(key), .int(value)])
    }

    /// Runs SQL on a connection of the test's own; returns the first column of every row, which
    /// must be text (cast it: `count(*)::text`).
    private func sql(_ text: String) async throws -> [String] {
        let target = try #require(Self.target)
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: target.host, port: target.port, username: target.user, password: target.password, database: target.database, tls: .disable),
            id: 99, logger: logger)
        defer { Task { try? await connection.close() } }
        return try await connection.run(PostgresQuery(unsafeSQL: text), logger: logger).rows.map { row in
            (try? row.decode(String.self)) ?? "(not text)"
        }
    }

    private func createTable() async throws {
        _ = try await sql("CREATE TABLE \(table) (k text PRIMARY KEY, n bigint NOT NULL CHECK (n >= 0))")
    }

    private func preparedGIDs() async throws -> [String] {
        try await sql("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'dtc:\(name):%'")
    }

    private static func isYes(_ reply: ParticipantReply) -> Bool {
        if case .vote(let vote) = reply, vote.vote == .yes { return true }
        return false
    }

    private static func noReason(_ reply: ParticipantReply) -> AbortReason? {
        if case .vote(let vote) = reply, case .no(let reason) = vote.vote { return reason }
        return nil
    }

    private static func ack(_ reply: ParticipantReply) -> AckReply? {
        if case .ack(let ack) = reply { return ack }
        return nil
    }

    @Test func aPreparedBranchIsHeldByPostgresAndCommitsOnce() async throws {
        try await createTable()
        try await withParticipants {
            let (_, stream) = try await start()
            #expect(Self.isYes(try await stream.send(prepare: prepare("t1", [insert("a", 5)]))))
            #expect(try await preparedGIDs() == ["dtc:\(name):3:2.1:t1"])
            #expect(try await sql("SELECT count(*)::text FROM \(table)") == ["0"], "nothing is visible before COMMIT")
            #expect(Self.ack(try await stream.send(decision: decision("t1", .commit)))?.accepted == true)
            #expect(try await sql("SELECT n::text FROM \(table) WHERE k = 'a'") == ["5"])
            #expect(try await preparedGIDs().isEmpty)
            #expect(try await sql("SELECT outcome::text || ' ' || applications || ' ' || array_to_string(participants, ',') FROM dtc_ledger WHERE participant = '\(name)'") == ["1 1 \(name),orders"])
        }
    }

    @Test func aDuplicateCommitAfterARestartIsAckedWithoutActing() async throws {
        try await createTable()
        try await withParticipants {
            let (_, first) = try await start()
            #expect(Self.isYes(try await first.send(prepare: prepare("t1", [insert("a", 5)]))))
            #expect(Self.ack(try await first.send(decision: decision("t1", .commit)))?.accepted == true)
            let (_, restarted) = try await start()
            let again = Self.ack(try await restarted.send(decision: decision("t1", .commit)))
            #expect(again?.accepted == true, "a repeated COMMIT is acknowledged: \(String(describing: again))")
            // Run again, the insert would break the primary key: YES says the ledger answered.
            #expect(Self.isYes(try await restarted.send(prepare: prepare("t1", [insert("a", 5)]))), "a repeated PREPARE gets the recorded vote")
            #expect(try await sql("SELECT count(*)::text FROM \(table)") == ["1"])
            #expect(try await sql("SELECT applications::text FROM dtc_ledger WHERE participant = '\(name)'") == ["1"])
            let conflicting = Self.ack(try await restarted.send(decision: decision("t1", .abort)))
            #expect(conflicting?.accepted == false && conflicting?.reason.contains("conflicting decision") == true)
        }
    }

    @Test func aRestartTakesPreparedBranchesAsInDoubtAndFinishesThem() async throws {
        try await createTable()
        try await withParticipants {
            let (_, first) = try await start()
            #expect(Self.isYes(try await first.send(prepare: prepare("t1", [insert("a", 5)]))))
            #expect(Self.isYes(try await first.send(prepare: prepare("t2", [insert("b", 6)]))))
            let (restarted, stream) = try await start()
            #expect(await restarted.preparedCount == 2)
            #expect(Self.isYes(try await stream.send(prepare: prepare("t1", [insert("a", 5)]))), "a repeated PREPARE of a held branch gets YES again")
            #expect(Self.ack(try await stream.send(decision: decision("t1", .commit)))?.accepted == true)
            #expect(Self.ack(try await stream.send(decision: decision("t2", .abort)))?.accepted == true)
            #expect(try await preparedGIDs().isEmpty)
            #expect(try await sql("SELECT k FROM \(table) ORDER BY k") == ["a"])
            #expect(try await sql("SELECT txn_id || ' ' || outcome FROM dtc_ledger WHERE participant = '\(name)' ORDER BY txn_id") == ["t1 1", "t2 2"])
        }
    }

    @Test func aLatePrepareAfterARollbackOfAnUnknownTxnIsRefused() async throws {
        try await createTable()
        try await withParticipants {
            let (_, stream) = try await start()
            #expect(Self.ack(try await stream.send(decision: decision("t1", .abort)))?.accepted == true, "a tombstone")
            let late = Self.noReason(try await stream.send(prepare: prepare("t1", [insert("a", 5)])))
            #expect(late?.text == "rolled back", "the late PREPARE gets NO: \(String(describing: late))")
            let (_, restarted) = try await start()
            let afterRestart = Self.noReason(try await restarted.send(prepare: prepare("t1", [insert("a", 5)])))
            #expect(afterRestart?.text == "rolled back", "and so after a restart, from the ledger: \(String(describing: afterRestart))")
            #expect(try await sql("SELECT count(*)::text FROM \(table)") == ["0"])
            #expect(try await preparedGIDs().isEmpty)
        }
    }

    @Test func aDecisionFromAStaleEpochIsRefused() async throws {
        try await createTable()
        try await withParticipants {
            let (_, stream) = try await start()
            #expect(Self.isYes(try await stream.send(prepare: prepare("t1", [insert("a", 5)], epoch: Epoch(counter: 3, node: 2)))))
            let stale = Self.ack(try await stream.send(decision: decision("t1", .abort, epoch: Epoch(counter: 2, node: 1))))
            #expect(stale?.accepted == false && stale?.reason == "stale epoch 2.1 < 3.2")
            #expect(Self.ack(try await stream.send(decision: decision("t1", .commit, epoch: Epoch(counter: 4, node: 1))))?.accepted == true)
            #expect(try await sql("SELECT epoch_counter || '.' || epoch_node || ' ' || seen_counter || '.' || seen_node FROM dtc_ledger WHERE participant = '\(name)'") == ["4.1 3.2"])
        }
    }

    @Test func sqlErrorsAndWrongRowCountsVoteNoAndApplyNothing() async throws {
        try await createTable()
        try await withParticipants {
            let (_, stream) = try await start()
            #expect(Self.isYes(try await stream.send(prepare: prepare("t0", [insert("a", 5)]))))
            #expect(Self.ack(try await stream.send(decision: decision("t0", .commit)))?.accepted == true)
            let duplicate = Self.noReason(try await stream.send(prepare: prepare("t1", [insert("b", 1), insert("a", 1)])))
            #expect(duplicate?.cause == .refused && duplicate?.text.contains("duplicate key") == true, "\(String(describing: duplicate))")
            let check = Self.noReason(try await stream.send(prepare: prepare("t2", [insert("c", -1)])))
            #expect(check?.text.contains("check constraint") == true, "\(String(describing: check))")
            let rows = Self.noReason(try await stream.send(prepare: prepare("t3", [
                insert("d", 1), SQLStatement("UPDATE \(table) SET n = n - $1 WHERE k = $2 AND n >= $1", params: [.int(9), .text("a")], rows: 1, refusal: "not enough"),
            ])))
            #expect(rows?.text == "not enough (statements[1] affected 0 rows, not 1)")
            let syntax = Self.noReason(try await stream.send(prepare: prepare("t4", [SQLStatement("UPDATE nowhere SET")])))
            #expect(syntax?.text.contains("syntax error") == true, "\(String(describing: syntax))")
            let badType = Self.noReason(try await stream.send(prepare: prepare("t5", [SQLStatement("UPDATE \(table) SET n = $1 WHERE k = 'a'", params: [.text("many")])])))
            #expect(badType?.cause == .refused, "\(String(describing: badType))")
            let payload = Self.noReason(try await stream.send(prepare: PrepareMessage(
                txnID: TxnID("t6"), stamp: 1, sender: sender(), branch: Branch(rm: name, kind: SQLBranch.kind, payload: Array("{}".utf8)), participants: [name])))
            #expect(payload?.text.contains("payload is not a statement list") == true, "\(String(describing: payload))")
            #expect(try await sql("SELECT k || '=' || n FROM \(table) ORDER BY k") == ["a=5"])
            #expect(try await preparedGIDs().isEmpty)
        }
    }

    @Test func aLockWaitPastItsBoundVotesNoAsContention() async throws {
        try await createTable()
        try await withParticipants {
            _ = try await sql("INSERT INTO \(table) VALUES ('a', 5)")
            let target = try #require(Self.target)
            let holder = try await PostgresConnection.connect(
                configuration: .init(host: target.host, port: target.port, username: target.user, password: target.password, database: target.database, tls: .disable),
                id: 98, logger: logger)
            try await holder.run("BEGIN", logger: logger)
            try await holder.run(PostgresQuery(unsafeSQL: "SELECT n::text FROM \(table) WHERE k = 'a' FOR UPDATE"), logger: logger)
            let (_, stream) = try await start()
            let reply = Self.noReason(try await stream.send(prepare: prepare("t1", [SQLStatement("UPDATE \(table) SET n = n + 1 WHERE k = 'a'", rows: 1)])))
            try await holder.run("ROLLBACK", logger: logger)
            try await holder.close()
            #expect(reply?.cause == .contention && reply?.text.contains("lock timeout") == true, "\(String(describing: reply))")
            #expect(try await sql("SELECT n::text FROM \(table)") == ["5"])
        }
    }

    @Test func aPreparedTransactionThatIsNotDtcsIsLeftAlone() async throws {
        try await createTable()
        let target = try #require(Self.target)
        let other = try await PostgresConnection.connect(
            configuration: .init(host: target.host, port: target.port, username: target.user, password: target.password, database: target.database, tls: .disable),
            id: 97, logger: logger)
        let gid = "not-dtc-\(name)"
        try await other.run("BEGIN", logger: logger)
        try await other.run(PostgresQuery(unsafeSQL: "INSERT INTO \(table) VALUES ('x', 1)"), logger: logger)
        try await other.run(PostgresQuery(unsafeSQL: "PREPARE TRANSACTION '\(gid)'"), logger: logger)
        try await other.close()
        try await withParticipants {
            let (participant, _) = try await start()
            await participant.tick()
            #expect(await participant.preparedCount == 0)
            #expect(try await sql("SELECT gid FROM pg_prepared_xacts WHERE gid = '\(gid)'") == [gid], "another application's prepared transaction stays")
        }
        _ = try await sql("ROLLBACK PREPARED '\(gid)'")
    }
}
