import DTCCore
import DTCRuntime
import DequeModule
import Logging
import PostgresNIO
import Synchronization

/// A branch PostgreSQL holds as a prepared transaction.
struct PreparedBranch: Sendable {
    var gid: PreparedGID
    var sender: Sender
    /// Every participant of the txn, as its PREPARE named them (empty when reloaded after a
    /// restart: the COMMIT row in the prepared transaction has them, an abort row does not).
    var participants: [String]
    /// The highest epoch seen for the txn (H): decisions below it are refused as stale.
    var highest: Epoch
    /// When the branch was prepared or reloaded: the termination inquiry starts from here.
    var since: UInt64
}

/// dtc-pg's participant: the participant contract (docs/participant-protocol.md) kept with a
/// PostgreSQL database. A branch's statements run in one PostgreSQL transaction that
/// `PREPARE TRANSACTION` makes durable before the YES; COMMIT and ROLLBACK are
/// `COMMIT PREPARED` and `ROLLBACK PREPARED`. Locks, constraints and deadlock detection are
/// PostgreSQL's own. The messages of one txn are handled one after another, in arrival
/// order (a ROLLBACK that arrives while the branch is being prepared waits for it); different
/// txns go on at once, each on a connection of its own.
actor PostgresParticipant {
    struct Counters {
        var committed: UInt64 = 0
        var aborted: UInt64 = 0
        var refused: UInt64 = 0
        var staleEpochRefusals: UInt64 = 0
        var conflictingDecisions: UInt64 = 0
        var ledgerLookups: UInt64 = 0
        /// Durable commits dtc-pg asked of PostgreSQL (which may flush several with one fsync).
        var syncs: UInt64 = 0
    }

    private enum Job {
        case prepare(PrepareMessage, ReplyRoute)
        case decide(DecisionMessage, ReplyRoute?)
    }

    /// How a txn ended here, as far as memory still knows.
    private enum Finished {
        case decided(LedgerEntry)
        /// Voted NO; nothing durable (the coordinator aborts the txn and sends ROLLBACK).
        case refused(AbortReason)
    }

    let name: String
    private let pool: PostgresPool
    private let timing: ClusterConfig.Timing
    private let nodes: [String]
    private let logger: Logger
    private let clock = ProcessClock()
    private let inquire: @Sendable (TxnID, UInt32) async -> Outcome?
    private(set) var counters = Counters()

    private var prepared: [TxnID: PreparedBranch] = [:]
    private var finished: [TxnID: Finished] = [:]
    private var finishedOrder: Deque<TxnID> = []
    private let finishedCachedMax = 10_000
    private var jobs: [TxnID: Deque<Job>] = [:]
    private var inquiring: Set<TxnID> = []
    private var streams: [ReplyRoute: BatchQueue<ParticipantReply>] = [:]
    private var nextRoute: ReplyRoute = 0
    private var nextOrphanCheck: UInt64 = 0

    init(
        name: String, pool: PostgresPool, config: ClusterConfig, logger: Logger,
        inquire: @escaping @Sendable (TxnID, UInt32) async -> Outcome?
    ) {
        self.name = name
        self.pool = pool
        self.timing = config.timing
        self.nodes = config.nodes.map(\.name)
        self.logger = logger
        self.inquire = inquire
    }

    // MARK: - Streams

    func open(_ queue: BatchQueue<ParticipantReply>) -> ReplyRoute {
        nextRoute += 1
        streams[nextRoute] = queue
        return nextRoute
    }

    func close(_ route: ReplyRoute) {
        streams[route] = nil
    }

    private func reply(_ route: ReplyRoute?, _ reply: ParticipantReply) {
        guard let route else { return }
        if case .ack(let ack) = reply, !ack.accepted { logger.warning("\(name): refused decision for \(ack.txnID): \(ack.reason)") }
        streams[route]?.append(contentsOf: [reply])
    }

    /// Votes name the PREPARE's attempt and acks the rollback's: the coordinator counts only
    /// those of the attempt it is in.
    private func vote(_ route: ReplyRoute, _ message: PrepareMessage, _ vote: Vote) {
        reply(route, .vote(VoteReply(txnID: message.txnID, vote: vote, attempt: message.attempt)))
    }

    private func ack(_ route: ReplyRoute?, _ message: DecisionMessage, accepted: Bool, _ reason: String = "") {
        reply(route, .ack(AckReply(txnID: message.txnID, accepted: accepted, reason: reason, rolledBackAttempt: message.rolledBackAttempt)))
    }

    // MARK: - Jobs, one txn at a time

    /// A batch from one coordinator stream: PREPAREs, then decisions, each queued behind
    /// whatever its txn is doing.
    func receive(prepares: [PrepareMessage], decisions: [DecisionMessage], from route: ReplyRoute) {
        for message in prepares { enqueue(.prepare(message, route), for: message.txnID) }
        for message in decisions { enqueue(.decide(message, route), for: message.txnID) }
    }

    private func enqueue(_ job: Job, for txnID: TxnID) {
        if jobs[txnID] != nil {
            jobs[txnID]!.append(job)
            return
        }
        jobs[txnID] = [job]
        Task { await self.drain(txnID) }
    }

    private func drain(_ txnID: TxnID) async {
        while let job = jobs[txnID]?.popFirst() {
            switch job {
            case .prepare(let message, let route): await prepare(message, replyTo: route)
            case .decide(let message, let route): await decide(message, replyTo: route)
            }
        }
        jobs[txnID] = nil
    }

    // MARK: - PREPARE

    private func prepare(_ message: PrepareMessage, replyTo route: ReplyRoute) async {
        let txnID = message.txnID
        if var branch = prepared[txnID] {
            branch.highest = max(branch.highest, message.sender.epoch)
            prepared[txnID] = branch
            // dtc-pg prepares a txn's first attempt only (below), so a later one finds it held.
            guard message.attempt == 0 else {
                return vote(route, message, .no(reason: AbortReason(.contention, "attempt 0 is still held here")))
            }
            return vote(route, message, .yes)
        }
        switch finished[txnID] {
        case .decided(let entry): return vote(route, message, Self.recordedVote(entry, attempt: message.attempt))
        case .refused(let reason) where message.attempt > 0:
            // A later attempt is not prepared here (below): the refusal stands, as the txn's end.
            return vote(route, message, .no(reason: AbortReason(.refused, "\(reason.text) (dtc-pg prepares no further attempt)")))
        case .refused(let reason): return vote(route, message, .no(reason: reason))
        case nil: break
        }
        guard message.attempt == 0 else {
            return vote(route, message, .no(reason: AbortReason(.refused, "dtc-pg prepares no further attempt of a txn (attempt \(message.attempt))")))
        }
        // The vote goes out at the deadline at the latest; the branch's work goes on to its
        // end (PostgreSQL's statement_timeout bounds it) so the txn's next message finds it
        // settled either way.
        let once = ReplyOnce()
        let deadlineMs = timing.prepareTimeoutMs * 3 / 4
        let timer = Task {
            try await Task.sleep(for: .milliseconds(deadlineMs))
            if once.claim() {
                self.vote(route, message, .no(reason: AbortReason(.unavailable, "postgres unavailable: no answer within \(deadlineMs) ms")))
            }
        }
        let result = await prepareInPostgres(message)
        timer.cancel()
        if once.claim() { vote(route, message, result) }
    }

    /// A rolled-back txn is not prepared again: dtc-pg's ledger row of the rollback is final
    /// (the coordinator's retry of an attempt refused elsewhere for contention ends here).
    private static func recordedVote(_ entry: LedgerEntry, attempt: Attempt) -> Vote {
        if entry.outcome == .commit { return .yes }
        return .no(reason: AbortReason(.refused, attempt == 0 ? "rolled back" : "rolled back; dtc-pg prepares no further attempt (attempt \(attempt))"))
    }

    private func prepareInPostgres(_ message: PrepareMessage) async -> Vote {
        let txnID = message.txnID
        let branch: SQLBranch
        do {
            guard message.branch.kind == SQLBranch.kind else {
                throw SQLBranchError("branch kind '\(message.branch.kind)' is not one dtc-pg runs (it runs '\(SQLBranch.kind)')")
            }
            branch = try SQLBranch(decoding: message.branch.payload)
        } catch {
            return refuse(txnID, AbortReason(.refused, "\(error)"))
        }
        let gid = PreparedGID(txnID: txnID, partition: message.sender.partition, epoch: message.sender.epoch)
        if let problem = gid.problem(participant: name) { return refuse(txnID, AbortReason(.refused, problem)) }
        let commitRow = LedgerEntry(
            outcome: .commit, epoch: message.sender.epoch, seenEpoch: message.sender.epoch, participants: message.participants)
        let work = BranchWork(
            participant: name, txnID: txnID, branch: branch, gid: gid, commitRow: commitRow,
            lockTimeoutMs: timing.lockWaitTimeoutMs, statementTimeoutMs: max(timing.prepareTimeoutMs / 2, timing.lockWaitTimeoutMs),
            logger: logger)
        do {
            switch try await pool.withConnection({ try await work.run(on: $0) }) {
            case .alreadyFinished(let entry):
                counters.ledgerLookups += 1
                remember(txnID, .decided(entry))
                return Self.recordedVote(entry, attempt: message.attempt)
            case .refused(let reason):
                return refuse(txnID, reason)
            case .prepared:
                PostgresCrashPoints.shared.reached(.afterPrepare)
                counters.syncs += 1
                prepared[txnID] = PreparedBranch(
                    gid: gid, sender: message.sender, participants: message.participants, highest: message.sender.epoch, since: clock.now())
                return .yes
            }
        } catch {
            return refuse(txnID, AbortReason(.unavailable, Self.unavailable(error)))
        }
    }

    private func refuse(_ txnID: TxnID, _ reason: AbortReason) -> Vote {
        counters.refused += 1
        remember(txnID, .refused(reason))
        return .no(reason: reason)
    }

    private static func unavailable(_ error: any Error) -> String {
        if let error = error as? PostgresUnavailable { return error.description }
        return "postgres unavailable: \(PostgresPool.describe(error))"
    }

    // MARK: - Decisions

    private func decide(_ message: DecisionMessage, replyTo route: ReplyRoute?) async {
        let txnID = message.txnID
        if let branch = prepared[txnID] { return await finish(branch, message, replyTo: route) }
        if case .decided(let entry) = finished[txnID] { return answer(message, finishedWith: entry, replyTo: route) }
        if message.rolledBackAttempt != nil, case .refused = finished[txnID] {
            // Refused here, so nothing to roll back; the refusal answers the next attempt.
            return ack(route, message, accepted: true)
        }
        do {
            counters.ledgerLookups += 1
            if let entry = try await pool.withConnection({ [name] in try await Self.ledgerEntry(txnID, participant: name, on: $0) }) {
                remember(txnID, .decided(entry))
                return answer(message, finishedWith: entry, replyTo: route)
            }
            // Prepared in PostgreSQL but unknown here: a PREPARE whose answer was lost with its
            // connection. It is finished like any other prepared branch.
            if let branch = try await adoptPrepared(txnID) { return await finish(branch, message, replyTo: route) }
            switch message.outcome {
            case .commit:
                ack(route, message, accepted: false, "commit of a txn this participant never prepared")
            case .abort:
                try await recordTombstone(message, replyTo: route)
            }
        } catch {
            logger.warning("\(name): decision \(message.outcome.rawValue) for \(txnID) not applied yet: \(Self.unavailable(error))")
        }
    }

    private func answer(_ message: DecisionMessage, finishedWith entry: LedgerEntry, replyTo route: ReplyRoute?) {
        if message.sender.epoch < entry.epoch {
            counters.staleEpochRefusals += 1
            return ack(route, message, accepted: false, "stale epoch \(message.sender.epoch) < \(entry.epoch)")
        }
        if entry.outcome == message.outcome { return ack(route, message, accepted: true) }
        counters.conflictingDecisions += 1
        ack(route, message, accepted: false, "conflicting decision \(message.outcome.rawValue) for a txn in state \(entry.outcome == .commit ? "committed" : "aborted")")
    }

    /// COMMIT PREPARED or ROLLBACK PREPARED, and the ledger row; acked once both are durable.
    /// If PostgreSQL cannot be reached the branch stays prepared and nothing is acked: the
    /// coordinator resends the decision.
    private func finish(_ branch: PreparedBranch, _ message: DecisionMessage, replyTo route: ReplyRoute?) async {
        let txnID = message.txnID
        if message.sender.epoch < branch.highest {
            counters.staleEpochRefusals += 1
            return ack(route, message, accepted: false, "stale epoch \(message.sender.epoch) < \(branch.highest)")
        }
        let entry = LedgerEntry(
            outcome: message.outcome, epoch: message.sender.epoch, seenEpoch: branch.highest, participants: branch.participants)
        let finishing = FinishWork(participant: name, branch: branch, entry: entry)
        do {
            let recorded = try await pool.withConnection { try await finishing.run(on: $0) }
            // COMMIT PREPARED; ROLLBACK PREPARED and the abort row.
            counters.syncs += message.outcome == .commit ? 1 : 2
            prepared[txnID] = nil
            remember(txnID, .decided(recorded))
            if recorded.outcome != message.outcome {
                counters.conflictingDecisions += 1
                return ack(route, message, accepted: false, "conflicting decision \(message.outcome.rawValue) for a txn in state \(recorded.outcome == .commit ? "committed" : "aborted")")
            }
            if message.outcome == .commit {
                PostgresCrashPoints.shared.reached(.afterCommit)
                counters.committed += 1
            } else {
                counters.aborted += 1
            }
            ack(route, message, accepted: true)
        } catch {
            logger.warning("\(name): \(message.outcome.rawValue) of \(txnID) not applied yet: \(Self.unavailable(error))")
        }
    }

    /// ROLLBACK of a txn never prepared here: an aborted ledger row, so a PREPARE that arrives
    /// late is refused (its own ledger row would collide with this one).
    private func recordTombstone(_ message: DecisionMessage, replyTo route: ReplyRoute?) async throws {
        let txnID = message.txnID
        let tombstone = LedgerEntry(outcome: .abort, epoch: message.sender.epoch, seenEpoch: .zero)
        let recorded = try await pool.withConnection { [name] connection in
            try await connection.run(PostgresLedger.insert(name, txnID, tombstone, ifAbsent: true), logger: Logger(label: "dtc-pg"))
            return try await Self.ledgerEntry(txnID, participant: name, on: connection) ?? tombstone
        }
        counters.syncs += 1
        remember(txnID, .decided(recorded))
        if recorded == tombstone { counters.aborted += 1 }
        answer(message, finishedWith: recorded, replyTo: route)
    }

    private func remember(_ txnID: TxnID, _ outcome: Finished) {
        if finished.updateValue(outcome, forKey: txnID) == nil { finishedOrder.append(txnID) }
        while finishedOrder.count > finishedCachedMax, let oldest = finishedOrder.popFirst() { finished[oldest] = nil }
    }

    static func ledgerEntry(_ txnID: TxnID, participant: String, on connection: PostgresConnection) async throws -> LedgerEntry? {
        let rows = try await connection.run(PostgresLedger.select(participant, txnID), logger: Logger(label: "dtc-pg")).rows
        return try rows.first.map { try PostgresLedger.decode($0).1 }
    }

    // MARK: - Prepared transactions PostgreSQL holds

    /// Takes every prepared transaction of this participant's in the database as in doubt
    /// (at start, and now and then for one whose PREPARE's answer was lost), and reports the
    /// prepared transactions that belong to no dtc participant: they are left alone.
    func adoptPreparedTransactions() async throws {
        let gids = try await preparedGIDs()
        var adopted = 0
        for text in gids {
            guard let gid = PreparedGID(text, participant: name) else {
                if !text.hasPrefix("dtc:") { logger.warning("\(name): prepared transaction '\(text)' belongs to no dtc txn; left alone") }
                continue
            }
            if adopt(gid) { adopted += 1 }
        }
        if adopted > 0 { logger.info("\(name): took \(adopted) prepared transactions as in doubt; asking the coordinator how they ended") }
    }

    private func adoptPrepared(_ txnID: TxnID) async throws -> PreparedBranch? {
        let gids = try await preparedGIDs()
        guard let gid = gids.lazy.compactMap({ PreparedGID($0, participant: self.name) }).first(where: { $0.txnID == txnID }) else { return nil }
        _ = adopt(gid, force: true)
        return prepared[txnID]
    }

    private func preparedGIDs() async throws -> [String] {
        try await pool.withConnection { [logger] in try await PostgresLedger.preparedGIDs(on: $0, logger: logger) }
    }

    /// A prepared transaction found in PostgreSQL becomes a prepared branch whose outcome is
    /// asked for at once; one that a job of its txn is working on is left to that job.
    private func adopt(_ gid: PreparedGID, force: Bool = false) -> Bool {
        let txnID = gid.txnID
        // A txn that voted NO may still be held: its PREPARE TRANSACTION went through but the
        // answer was lost with the connection. One already decided here is not adopted again.
        var decided = false
        if case .decided = finished[txnID] { decided = true }
        guard prepared[txnID] == nil, force || (jobs[txnID] == nil && !decided) else { return false }
        let node = gid.epoch.node >= 1 && Int(gid.epoch.node) <= nodes.count ? nodes[Int(gid.epoch.node) - 1] : ""
        let now = clock.now()
        prepared[txnID] = PreparedBranch(
            gid: gid, sender: Sender(partition: gid.partition, epoch: gid.epoch, node: node), participants: [], highest: gid.epoch,
            since: now >= UInt64(timing.inquiryAfterMs) ? now - UInt64(timing.inquiryAfterMs) : 0)
        return true
    }

    // MARK: - Termination inquiry

    /// Asks the coordinator about branches prepared for longer than `inquiryAfterMs`, and
    /// looks for prepared transactions nobody here knows of every so often.
    func tick() async {
        let now = clock.now()
        let inquiryAfter = UInt64(timing.inquiryAfterMs)
        for (txnID, branch) in prepared where now >= branch.since + inquiryAfter && !inquiring.contains(txnID) {
            inquiring.insert(txnID)
            prepared[txnID]!.since = now
            let inquire = inquire
            Task {
                let outcome = await inquire(txnID, branch.gid.partition)
                self.inquired(txnID, outcome, sender: branch.sender)
            }
        }
        if now >= nextOrphanCheck {
            nextOrphanCheck = now + inquiryAfter
            do {
                try await adoptPreparedTransactions()
            } catch {
                logger.warning("\(name): cannot list prepared transactions: \(Self.unavailable(error))")
            }
        }
    }

    private func inquired(_ txnID: TxnID, _ outcome: Outcome?, sender: Sender) {
        inquiring.remove(txnID)
        guard let outcome, prepared[txnID] != nil else { return }
        logger.info("\(name): resolved \(txnID) with the coordinator: \(outcome.rawValue)")
        // Applied like a decision from the PREPARE's sender; nobody waits for an ack.
        enqueue(.decide(DecisionMessage(txnID: txnID, outcome: outcome, sender: sender), nil), for: txnID)
    }

    // MARK: - Reads

    var preparedTxns: [(TxnID, String)] {
        prepared.map { ($0.key, $0.value.gid.text(participant: name)) }.sorted { $0.0.rawValue.utf8.lexicographicallyPrecedes($1.0.rawValue.utf8) }
    }

    var activeCount: Int { jobs.count }
    var preparedCount: Int { prepared.count }
    var cachedFinishedCount: Int { finished.count }

    func ledgerPage(prefix: String, after: String?, limit: Int) async throws -> [(TxnID, LedgerEntry)] {
        try await pool.withConnection { [name] connection in
            try await connection.query(PostgresLedger.scan(name, prefix: prefix, after: after, limit: limit), logger: Logger(label: "dtc-pg"))
                .get().rows.map { try PostgresLedger.decode($0) }
        }
    }
}

/// The first of several answers to one PREPARE claims the vote.
final class ReplyOnce: Sendable {
    private let claimed = Mutex(false)

    func claim() -> Bool {
        claimed.withLock { was in
            defer { was = true }
            return !was
        }
    }
}
