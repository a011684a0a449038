import DequeModule

/// A txn a participant holds prepared: its writes are durable and its locks held until the
/// decision. `keys` are the locks it holds, so a restart re-takes them without running the
/// participant's logic again.
public struct PreparedTxn: Hashable, Sendable {
    public var txnID: TxnID
    public var stamp: StartStamp
    public var attempt: Attempt
    public var sender: Sender
    public var kind: String
    public var keys: [String]
    public var writes: [Write]
    /// Every participant of the txn, for the ledger entry of its decision.
    public var participants: [String]

    public init(txnID: TxnID, stamp: StartStamp, attempt: Attempt = 0, sender: Sender, kind: String, keys: [String], writes: [Write], participants: [String]) {
        self.txnID = txnID
        self.stamp = stamp
        self.attempt = attempt
        self.sender = sender
        self.kind = kind
        self.keys = keys
        self.writes = writes
        self.participants = participants
    }

    /// The first byte of every stored prepared txn. Version 3 added the attempt; version 2
    /// (no attempt) is read as attempt 0; any other version is refused.
    public static let formatVersion: UInt8 = 3

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.formatVersion)
        writer.write(txnID.rawValue); writer.write(stamp); writer.write(attempt)
        writer.write(sender.partition); writer.write(sender.epoch); writer.write(sender.node)
        writer.write(kind)
        writer.write(strings: keys)
        writer.write(UInt32(writes.count))
        for write in writes {
            writer.write(write.key)
            writer.write(write.value != nil)
            if let value = write.value { writer.write(bytes: value) }
        }
        writer.write(strings: participants)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        let version = try reader.readVersion(accepting: 2...Self.formatVersion)
        txnID = TxnID(try reader.readString())
        stamp = try reader.readUInt64()
        attempt = version >= 3 ? try reader.readUInt32() : 0
        sender = Sender(partition: try reader.readUInt32(), epoch: try reader.readEpoch(), node: try reader.readString())
        kind = try reader.readString()
        keys = try reader.readStrings()
        writes = []
        for _ in 0..<(try reader.readUInt32()) {
            let key = try reader.readString()
            writes.append(Write(key: key, value: try reader.readBool() ? try reader.readBytes() : nil))
        }
        participants = try reader.readStrings()
        guard reader.isAtEnd else { throw .trailingBytes(at: reader.offset) }
    }
}

/// What a participant makes durable. Votes YES and acks follow only from `recordsDurable`, so
/// nothing is promised before its record is on disk. A decision carries its epoch and
/// `seenEpoch`, the highest epoch the participant had seen for the txn before it: the ledger
/// keeps both, so a checker can prove from disk that no decision from a stale epoch was
/// applied (fencing at the participant, DESIGN.md "Failover").
public enum ParticipantRecord: Hashable, Sendable {
    case prepared(PreparedTxn)
    /// `participants`: every participant of the txn, or none where this one never learned
    /// them (a tombstone). `attempt`: the attempt committed; for an abort, the last attempt it
    /// covers (`Attempt.max`: the txn's final ABORT, which covers every attempt). `keys`: the
    /// keys the committed txn locked here, for the ledger (the precedence graph's edges).
    case committed(txnID: TxnID, attempt: Attempt, writes: [Write], epoch: Epoch, seenEpoch: Epoch, participants: [String], keys: [String])
    case aborted(txnID: TxnID, attempt: Attempt, epoch: Epoch, seenEpoch: Epoch, participants: [String])

    public var txnID: TxnID {
        switch self {
        case .prepared(let txn): txn.txnID
        case .committed(let id, _, _, _, _, _, _), .aborted(let id, _, _, _, _): id
        }
    }
}

public struct VoteReply: Hashable, Sendable {
    public var txnID: TxnID
    public var vote: Vote
    /// The attempt the PREPARE named: a coordinator counts only votes of its current attempt.
    public var attempt: Attempt

    public init(txnID: TxnID, vote: Vote, attempt: Attempt = 0) {
        self.txnID = txnID
        self.vote = vote
        self.attempt = attempt
    }
}

public struct AckReply: Hashable, Sendable {
    public var txnID: TxnID
    /// False when the participant refused the decision; `reason` says why.
    public var accepted: Bool
    public var reason: String
    /// The decision's `rolledBackAttempt`: nil acknowledges the txn's decision.
    public var rolledBackAttempt: Attempt?

    public init(txnID: TxnID, accepted: Bool, reason: String, rolledBackAttempt: Attempt? = nil) {
        self.txnID = txnID
        self.accepted = accepted
        self.reason = reason
        self.rolledBackAttempt = rolledBackAttempt
    }
}

/// The shell's name for where a message came from and its reply goes: a coordinator's stream
/// in the library, a node in the simulator. `nil` routes nowhere (an inquiry's answer).
public typealias ReplyRoute = Int

public enum ParticipantReply: Hashable, Sendable {
    case vote(VoteReply)
    case ack(AckReply)
}

public struct RoutedReply: Hashable, Sendable {
    public var route: ReplyRoute
    public var reply: ParticipantReply
}

/// A branch whose locks are held: the shell reads `keys` at committed state, runs the
/// participant's logic on the branch and calls `planned` with its writes or its refusal.
public struct PlanRequest: Hashable, Sendable {
    public var txnID: TxnID
    public var branch: Branch
    public var keys: [String]
}

public struct ParticipantOutput: Equatable, Sendable {
    public var plans: [PlanRequest] = []
    /// Persist (group commit, fsync), then report each with `recordsDurable`.
    public var recordsToPersist: [ParticipantRecord] = []
    /// Votes and acks that depend on nothing unsynced; send at once.
    public var replies: [RoutedReply] = []
    /// Prepared txns held too long: ask the partition's leader for the outcome.
    public var inquiries: [PreparedTxn] = []

    public init() {}

    public var isEmpty: Bool { self == ParticipantOutput() }

    public mutating func merge(_ other: ParticipantOutput) {
        plans += other.plans
        recordsToPersist += other.recordsToPersist
        replies += other.replies
        inquiries += other.inquiries
    }
}

/// The participant side of 2PC, for any participant's logic: strict two-phase locking with
/// wait-die, durable prepare before YES, idempotent decisions, epoch fencing, tombstones for
/// rollbacks of txns it never prepared, and the routing of each vote and ack to whoever asked.
/// Both the `DTCParticipant` library and dtc-sim drive this one machine.
///
/// Memory stays bounded: the machine keeps the txns in progress, lock state and a cache of
/// `finishedTxnsCachedMax` finished txns. An older finished txn is looked up in the durable
/// ledger through the `ledger` function the shell passes with each message.
public struct ParticipantMachine: Sendable {
    public struct Counters: Equatable, Sendable {
        public var committed: UInt64 = 0
        public var aborted: UInt64 = 0
        public var refused: UInt64 = 0
        public var staleEpochRefusals: UInt64 = 0
        public var conflictingDecisions: UInt64 = 0
        /// Attempts rolled back so that the coordinator could prepare the txn again.
        public var attemptsRolledBack: UInt64 = 0
        /// Txns that waited for a lock, and the longest wait (ticks) until the grant or the NO.
        public var lockWaits: UInt64 = 0
        public var lockWaitLongestMs: UInt64 = 0
        public var ledgerLookups: UInt64 = 0
    }

    /// A txn in progress. Its vote and ack routes wait here until the answer is ready.
    private enum Phase: Sendable {
        case waitingForLocks(PrepareMessage, keys: [String], deadline: UInt64)
        case reading(PrepareMessage, keys: [String])
        /// A ROLLBACK came while the prepared record was being made durable.
        case persistingPrepared(PreparedTxn, rollbackRequested: DecisionMessage?)
        case prepared(PreparedTxn, since: UInt64)
        /// `rolledBackAttempt`: the decision is the rollback of that attempt, not the txn's end.
        case applying(Outcome, PreparedTxn?, rolledBackAttempt: Attempt?)
    }

    private struct ActiveTxn: Sendable {
        var phase: Phase
        /// The highest epoch seen for the txn; decisions from lower ones are refused.
        var epoch: Epoch
        var attempt: Attempt
        var voteRoutes: [ReplyRoute] = []
        var ackRoutes: [ReplyRoute] = []
    }

    private struct FinishedTxn: Sendable {
        /// `nil` reason: committed.
        var abortReason: AbortReason?
        var epoch: Epoch
        /// The attempt committed or refused; for a rollback, the last attempt it covers
        /// (`Attempt.max`: the txn's final ABORT).
        var attempt: Attempt
        var outcome: Outcome { abortReason == nil ? .commit : .abort }
        /// A later attempt may still be prepared here.
        var allowsLaterAttempt: Bool { outcome == .abort && attempt != .max }
    }

    public let limits: Limits
    /// Ticks after which a prepared txn asks its coordinator for the outcome.
    public let inquiryAfter: UInt64
    public private(set) var counters = Counters()
    public private(set) var locks = LockTable()
    /// A deliberate bug, for the simulator's mutant tests only.
    package var mutant: Mutant?
    private var active: [TxnID: ActiveTxn] = [:]
    private var finished: [TxnID: FinishedTxn] = [:]
    private var finishedOrder = Deque<TxnID>()
    /// Txns that may need `tick`: waiting for locks or prepared. Entries whose txn moved on
    /// are dropped by the next tick, so `tick` never scans the finished txns.
    private var watched: Set<TxnID> = []

    public init(limits: Limits = .standard, inquiryAfter: UInt64 = 3_000) {
        self.limits = limits
        self.inquiryAfter = inquiryAfter
    }

    public var preparedCount: Int {
        active.values.reduce(0) { count, txn in
            if case .prepared = txn.phase { return count + 1 }
            return count
        }
    }

    public var activeCount: Int { active.count }
    public var cachedFinishedCount: Int { finished.count }

    /// `nil` for a txn neither in progress nor in the cache; otherwise a short state name.
    public func stateName(of txnID: TxnID) -> String? {
        if let txn = active[txnID] { return Self.name(of: txn.phase) }
        return finished[txnID].map { $0.outcome == .commit ? "committed" : "aborted" }
    }

    // MARK: - Events

    /// PREPARE with the keys the participant's logic says the branch locks (or its refusal):
    /// takes the locks (or waits, or dies), then asks the shell to plan. A known txn answers its
    /// recorded vote.
    public mutating func prepare(
        _ message: PrepareMessage, keys: Result<[String], PlanRefusal>, replyTo route: ReplyRoute, now: UInt64,
        ledger: (TxnID) -> LedgerEntry?
    ) -> ParticipantOutput {
        let id = message.txnID
        let attempt = message.attempt
        if var txn = active[id] {
            // A PREPARE from a newer leader raises the epoch below which decisions are refused.
            txn.epoch = max(txn.epoch, message.sender.epoch)
            active[id] = txn
            guard attempt == txn.attempt else {
                // An earlier attempt's late PREPARE, or the next attempt's before this one's
                // rollback: the coordinator counts neither.
                let text = attempt < txn.attempt ? "attempt \(attempt) superseded by attempt \(txn.attempt)" : "attempt \(txn.attempt) is still held here"
                return reply(route, .vote(VoteReply(txnID: id, vote: .no(reason: AbortReason(.contention, text)), attempt: attempt)))
            }
            return repeatedVote(id, route)
        }
        if var done = finishedTxn(id, ledger), !(attempt > done.attempt && done.allowsLaterAttempt && message.sender.epoch >= done.epoch) {
            // A newer leader's PREPARE raises the fence for finished txns too.
            if message.sender.epoch > done.epoch {
                done.epoch = message.sender.epoch
                finished[id] = done
            }
            return reply(route, .vote(VoteReply(txnID: id, vote: Self.recordedVote(done, attempt: attempt), attempt: attempt)))
        }
        let lockKeys: [String]
        switch Self.checked(keys, limits: limits) {
        case .failure(let refusal):
            return refuse(id, epoch: message.sender.epoch, attempt: attempt, AbortReason(.refused, refusal.reason), routes: [route])
        case .success(let checked):
            lockKeys = checked
        }
        var output = ParticipantOutput()
        switch locks.acquire(lockKeys, for: id, stamp: message.stamp) {
        case .granted:
            active[id] = ActiveTxn(phase: .reading(message, keys: lockKeys), epoch: message.sender.epoch, attempt: attempt, voteRoutes: [route])
            output.plans.append(PlanRequest(txnID: id, branch: message.branch, keys: lockKeys))
        case .waiting:
            counters.lockWaits += 1
            let deadline = now + limits.lockWaitTimeout
            active[id] = ActiveTxn(
                phase: .waitingForLocks(message, keys: lockKeys, deadline: deadline), epoch: message.sender.epoch, attempt: attempt, voteRoutes: [route])
            watched.insert(id)
        case .died(let holder):
            output = refuse(id, epoch: message.sender.epoch, attempt: attempt, AbortReason(.contention, "wait-die: younger than lock holder \(holder)"), routes: [route])
        }
        return output
    }

    /// What a PREPARE of `attempt` is told about a finished txn: its recorded vote for that
    /// attempt, NO for any other.
    private static func recordedVote(_ done: FinishedTxn, attempt: Attempt) -> Vote {
        switch done.abortReason {
        case nil where attempt == done.attempt: .yes
        case nil: .no(reason: AbortReason(.refused, "attempt \(attempt) superseded: attempt \(done.attempt) committed"))
        case let reason? where attempt == done.attempt: .no(reason: reason)
        case let reason? where done.attempt == .max || attempt > done.attempt: .no(reason: reason)
        case _: .no(reason: AbortReason(.refused, "attempt \(attempt) superseded by attempt \(done.attempt)"))
        }
    }

    /// The participant's logic planned the branch against committed state: persist the
    /// prepared writes (then vote YES) or vote NO. Writes outside the locked keys are refused:
    /// they would break two-phase locking.
    public mutating func planned(_ txnID: TxnID, _ plan: Result<[Write], PlanRefusal>, now: UInt64) -> ParticipantOutput {
        guard let txn = active[txnID], case .reading(let message, let keys) = txn.phase else { return ParticipantOutput() }
        let writes: [Write]
        switch plan {
        case .failure(let refusal):
            return refuseActive(txnID, AbortReason(.refused, refusal.reason), now: now)
        case .success(let planned):
            writes = planned
        }
        if let stray = writes.first(where: { !keys.contains($0.key) }) {
            return refuseActive(txnID, AbortReason(.refused, "participant error: writes key '\(stray.key)' that the branch does not lock"), now: now)
        }
        let prepared = PreparedTxn(
            txnID: txnID, stamp: message.stamp, attempt: message.attempt, sender: message.sender, kind: message.branch.kind, keys: keys, writes: writes,
            participants: message.participants)
        active[txnID]!.phase = .persistingPrepared(prepared, rollbackRequested: nil)
        var output = ParticipantOutput()
        output.recordsToPersist = [.prepared(prepared)]
        if mutant == .yesBeforeDurable {
            output.replies = Self.routes(&active[txnID]!.voteRoutes, .vote(VoteReply(txnID: txnID, vote: .yes, attempt: message.attempt)))
        }
        return output
    }

    /// COMMIT or ROLLBACK. Idempotent; refused when it comes from an epoch lower than one this
    /// participant has seen for the txn, or when it contradicts the decision already applied.
    public mutating func decide(
        _ message: DecisionMessage, replyTo route: ReplyRoute?, now: UInt64, ledger: (TxnID) -> LedgerEntry?
    ) -> ParticipantOutput {
        let id = message.txnID
        let epoch = message.sender.epoch
        guard var txn = active[id] else {
            return decideInactive(message, route, ledger)
        }
        if epoch < txn.epoch && mutant != .ignoreEpochs {
            counters.staleEpochRefusals += 1
            return reply(route, .ack(AckReply(txnID: id, accepted: false, reason: "stale epoch \(epoch) < \(txn.epoch)", rolledBackAttempt: message.rolledBackAttempt)))
        }
        if let rolledBack = message.rolledBackAttempt, rolledBack < txn.attempt, mutant != .rollbackAnyAttempt {
            // The rollback of an earlier attempt: it never touches this one. Acknowledging it
            // fences older leaders all the same (a restart may have lost a PREPARE's raise).
            active[id]!.epoch = max(txn.epoch, epoch)
            return reply(route, .ack(AckReply(txnID: id, accepted: true, reason: "", rolledBackAttempt: rolledBack)))
        }
        let seen = txn.epoch
        txn.epoch = epoch
        active[id] = txn
        switch (txn.phase, message.outcome) {
        case (.prepared(let prepared, _), let outcome):
            waitForAck(id, route)
            return startApplying(id, outcome, prepared, epoch: epoch, seen: seen, rolledBackAttempt: message.rolledBackAttempt)
        case (.applying(let applying, _, _), let outcome) where applying == outcome:
            waitForAck(id, route)
            return ParticipantOutput()
        case (.persistingPrepared(let prepared, _), .abort):
            waitForAck(id, route)
            active[id]!.phase = .persistingPrepared(prepared, rollbackRequested: message)
            return ParticipantOutput()
        case (.waitingForLocks, .abort), (.reading, .abort):
            waitForAck(id, route)
            locks.withdraw(id)
            var output = releaseLocks(of: id, now: now)
            let no = VoteReply(txnID: id, vote: .no(reason: AbortReason(.refused, "rolled back before it was prepared")), attempt: txn.attempt)
            output.replies += Self.routes(&active[id]!.voteRoutes, .vote(no))
            output.merge(startApplying(id, .abort, nil, epoch: epoch, seen: seen, rolledBackAttempt: message.rolledBackAttempt))
            return output
        case (.applying, _), (.waitingForLocks, .commit), (.reading, .commit), (.persistingPrepared, .commit):
            counters.conflictingDecisions += 1
            let reason = "conflicting decision \(message.outcome.rawValue) for a txn in state \(Self.name(of: txn.phase))"
            return reply(route, .ack(AckReply(txnID: id, accepted: false, reason: reason)))
        }
    }

    private mutating func waitForAck(_ id: TxnID, _ route: ReplyRoute?) {
        if let route, !active[id]!.ackRoutes.contains(route) { active[id]!.ackRoutes.append(route) }
    }

    /// Records the shell persisted are durable: YES votes and acks go out, locks are released.
    public mutating func recordsDurable(_ records: [ParticipantRecord], now: UInt64) -> ParticipantOutput {
        var output = ParticipantOutput()
        for record in records {
            switch record {
            case .prepared(let prepared): output.merge(preparedDurable(prepared.txnID, now: now))
            case .committed(let id, _, _, _, _, _, _), .aborted(let id, _, _, _, _): output.merge(decisionDurable(id, now: now))
            }
        }
        return output
    }

    /// Lock waits past their timeout vote NO; prepared txns held past `inquiryAfter` are
    /// reported for the termination protocol (and reported again every `inquiryAfter`).
    public mutating func tick(now: UInt64) -> ParticipantOutput {
        var output = ParticipantOutput()
        for id in watched.sorted() {
            guard let txn = active[id] else {
                watched.remove(id)
                continue
            }
            switch txn.phase {
            case .waitingForLocks(_, _, let deadline) where now >= deadline:
                noteLockWait(since: deadline - limits.lockWaitTimeout, now: now)
                locks.withdraw(id)
                watched.remove(id)
                output.merge(refuse(id, epoch: txn.epoch, attempt: txn.attempt, AbortReason(.contention, "lock wait timeout"), routes: txn.voteRoutes))
            case .prepared(let prepared, let since) where now >= since + inquiryAfter:
                active[id]!.phase = .prepared(prepared, since: now)
                output.inquiries.append(prepared)
            case .waitingForLocks, .prepared:
                continue
            case .reading, .persistingPrepared, .applying:
                watched.remove(id)
            }
        }
        return output
    }

    /// After a restart: prepared txns re-take their locks before the participant serves.
    /// Finished txns are not loaded: the ledger answers for them.
    public mutating func recover(prepared: [PreparedTxn], now: UInt64) {
        precondition(active.isEmpty && finished.isEmpty, "recover must run before any other event")
        for txn in prepared {
            if mutant != .skipRelockOnRecovery {
                let acquisition = locks.acquire(txn.keys, for: txn.txnID, stamp: txn.stamp)
                precondition(acquisition == .granted, "prepared txns \(txn.txnID) conflict on recovery: \(acquisition)")
            }
            active[txn.txnID] = ActiveTxn(phase: .prepared(txn, since: now), epoch: txn.sender.epoch, attempt: txn.attempt)
            watched.insert(txn.txnID)
        }
    }

    // MARK: - Helpers

    /// What a repeated PREPARE of a rolled-back txn is told.
    private static let rolledBack = AbortReason(.refused, "rolled back")

    private static func name(of phase: Phase) -> String {
        switch phase {
        case .waitingForLocks: "waiting"
        case .reading: "reading"
        case .persistingPrepared: "preparing"
        case .prepared: "prepared"
        case .applying(let outcome, _, _): outcome == .commit ? "committing" : "rolling-back"
        }
    }

    /// A user's logic that names no keys, or too many, is refused: without locks there is no
    /// isolation, and every bound is explicit.
    private static func checked(_ keys: Result<[String], PlanRefusal>, limits: Limits) -> Result<[String], PlanRefusal> {
        guard case .success(let list) = keys else { return keys }
        let unique = Array(Set(list)).sorted()
        guard !unique.isEmpty else { return .failure("participant error: the branch locks no keys") }
        guard unique.count <= limits.keysPerBranchMax else {
            return .failure("participant error: the branch locks \(unique.count) keys, over the limit of \(limits.keysPerBranchMax)")
        }
        return .success(unique)
    }

    /// A finished txn from the cache, or from the ledger (then cached again).
    private mutating func finishedTxn(_ id: TxnID, _ ledger: (TxnID) -> LedgerEntry?) -> FinishedTxn? {
        if let done = finished[id] { return done }
        counters.ledgerLookups += 1
        guard let entry = ledger(id) else { return nil }
        let done = FinishedTxn(abortReason: entry.outcome == .commit ? nil : Self.rolledBack, epoch: entry.epoch, attempt: entry.attempt)
        remember(id, done)
        return done
    }

    private mutating func remember(_ id: TxnID, _ done: FinishedTxn) {
        if finished.updateValue(done, forKey: id) == nil { finishedOrder.append(id) }
        while finished.count > limits.finishedTxnsCachedMax, let oldest = finishedOrder.popFirst() {
            finished[oldest] = nil
        }
    }

    /// A decision for a txn that is not in progress: finished (cache or ledger) or unknown.
    private mutating func decideInactive(_ message: DecisionMessage, _ route: ReplyRoute?, _ ledger: (TxnID) -> LedgerEntry?) -> ParticipantOutput {
        let id = message.txnID
        let epoch = message.sender.epoch
        guard let done = finishedTxn(id, ledger) else {
            guard message.outcome == .abort else {
                return reply(route, .ack(AckReply(txnID: id, accepted: false, reason: "commit of a txn this participant never prepared")))
            }
            return entomb(message, route, seen: .zero)
        }
        if epoch < done.epoch && mutant != .ignoreEpochs {
            counters.staleEpochRefusals += 1
            return reply(route, .ack(AckReply(txnID: id, accepted: false, reason: "stale epoch \(epoch) < \(done.epoch)", rolledBackAttempt: message.rolledBackAttempt)))
        }
        if let rolledBack = message.rolledBackAttempt {
            // The rollback of one attempt: done already if this participant finished that
            // attempt or a later one; else a tombstone for it, so its late PREPARE is refused.
            guard done.allowsLaterAttempt, rolledBack > done.attempt else {
                if epoch > done.epoch { finished[id]!.epoch = epoch }
                return reply(route, .ack(AckReply(txnID: id, accepted: true, reason: "", rolledBackAttempt: rolledBack)))
            }
            return entomb(message, route, seen: done.epoch)
        }
        if done.outcome == message.outcome {
            // A final ABORT after the rollback of an attempt: recorded, so that no later
            // attempt's PREPARE is taken.
            if done.allowsLaterAttempt { return entomb(message, route, seen: done.epoch) }
            // Acknowledging a newer leader's decision fences the older leaders' from now on.
            if epoch > done.epoch { finished[id]!.epoch = epoch }
            if mutant == .applyDuplicateCommit && done.outcome == .commit {
                active[id] = ActiveTxn(phase: .applying(.commit, nil, rolledBackAttempt: nil), epoch: epoch, attempt: done.attempt, ackRoutes: route.map { [$0] } ?? [])
                return startApplying(id, .commit, nil, epoch: epoch, seen: done.epoch, rolledBackAttempt: nil)
            }
            return reply(route, .ack(AckReply(txnID: id, accepted: true, reason: "")))
        }
        counters.conflictingDecisions += 1
        let state = done.outcome == .commit ? "committed" : "aborted"
        return reply(route, .ack(AckReply(txnID: id, accepted: false, reason: "conflicting decision \(message.outcome.rawValue) for a txn in state \(state)")))
    }

    /// An ABORT (final, or the rollback of an attempt) of a txn with nothing to roll back here:
    /// recorded durably, so that a PREPARE it covers, arriving late, is answered NO.
    private mutating func entomb(_ message: DecisionMessage, _ route: ReplyRoute?, seen: Epoch) -> ParticipantOutput {
        let id = message.txnID
        let attempt = message.rolledBackAttempt ?? .max
        active[id] = ActiveTxn(
            phase: .applying(.abort, nil, rolledBackAttempt: message.rolledBackAttempt), epoch: message.sender.epoch, attempt: attempt,
            ackRoutes: route.map { [$0] } ?? [])
        return startApplying(id, .abort, nil, epoch: message.sender.epoch, seen: seen, rolledBackAttempt: message.rolledBackAttempt)
    }

    private mutating func repeatedVote(_ id: TxnID, _ route: ReplyRoute) -> ParticipantOutput {
        let attempt = active[id]!.attempt
        switch active[id]!.phase {
        case .waitingForLocks, .reading, .persistingPrepared:
            // Answered when the first PREPARE's vote is ready, once per route.
            if !active[id]!.voteRoutes.contains(route) { active[id]!.voteRoutes.append(route) }
            return ParticipantOutput()
        case .prepared, .applying(.commit, _, _):
            return reply(route, .vote(VoteReply(txnID: id, vote: .yes, attempt: attempt)))
        case .applying(.abort, _, _):
            return reply(route, .vote(VoteReply(txnID: id, vote: .no(reason: Self.rolledBack), attempt: attempt)))
        }
    }

    /// The prepared record is durable: vote YES (and run a rollback that arrived meanwhile).
    private mutating func preparedDurable(_ txnID: TxnID, now: UInt64) -> ParticipantOutput {
        guard let txn = active[txnID], case .persistingPrepared(let prepared, let rollback) = txn.phase else {
            preconditionFailure("preparedDurable for \(txnID) in state \(stateName(of: txnID) ?? "unknown")")
        }
        active[txnID]!.phase = .prepared(prepared, since: now)
        watched.insert(txnID)
        var output = ParticipantOutput()
        output.replies = Self.routes(&active[txnID]!.voteRoutes, .vote(VoteReply(txnID: txnID, vote: .yes, attempt: prepared.attempt)))
        if let rollback {
            output.merge(startApplying(txnID, .abort, prepared, epoch: rollback.sender.epoch, seen: txn.epoch, rolledBackAttempt: rollback.rolledBackAttempt))
        }
        return output
    }

    /// The decision is durable: release the locks (waking waiters), ack, and keep the outcome
    /// in the cache.
    private mutating func decisionDurable(_ txnID: TxnID, now: UInt64) -> ParticipantOutput {
        guard let txn = active[txnID], case .applying(let outcome, _, let rolledBackAttempt) = txn.phase else {
            preconditionFailure("decisionDurable for \(txnID) in state \(stateName(of: txnID) ?? "unknown")")
        }
        if outcome == .commit { counters.committed += 1 } else if rolledBackAttempt == nil { counters.aborted += 1 } else { counters.attemptsRolledBack += 1 }
        var output = releaseLocks(of: txnID, now: now)
        var ackRoutes = txn.ackRoutes
        output.replies += Self.routes(&ackRoutes, .ack(AckReply(txnID: txnID, accepted: true, reason: "", rolledBackAttempt: rolledBackAttempt)))
        active[txnID] = nil
        remember(txnID, FinishedTxn(abortReason: outcome == .commit ? nil : Self.rolledBack, epoch: txn.epoch, attempt: txn.attempt))
        return output
    }

    /// Votes NO for a txn that holds no locks (any more) and remembers the refusal. The NO is
    /// kept in the cache only: an evicted refusal lets a very late repeated PREPARE be planned
    /// again, which its inquiry then resolves.
    /// A refusal for contention allows the next attempt; any other is the txn's end here (the
    /// coordinator retries only after contention, and a later attempt is told this NO).
    private mutating func refuse(_ id: TxnID, epoch: Epoch, attempt: Attempt, _ reason: AbortReason, routes waiting: [ReplyRoute]) -> ParticipantOutput {
        counters.refused += 1
        var routes = waiting
        if let txn = active.removeValue(forKey: id) { routes = txn.voteRoutes }
        remember(id, FinishedTxn(abortReason: reason, epoch: epoch, attempt: reason.cause == .contention ? attempt : .max))
        var output = ParticipantOutput()
        output.replies = routes.map { RoutedReply(route: $0, reply: .vote(VoteReply(txnID: id, vote: .no(reason: reason), attempt: attempt))) }
        return output
    }

    /// Refuses a txn whose locks are held (it was planning): releases them first.
    private mutating func refuseActive(_ id: TxnID, _ reason: AbortReason, now: UInt64) -> ParticipantOutput {
        let epoch = active[id]!.epoch
        let attempt = active[id]!.attempt
        var output = releaseLocks(of: id, now: now)
        output.merge(refuse(id, epoch: epoch, attempt: attempt, reason, routes: []))
        return output
    }

    /// `seen` is the highest epoch known for the txn before this decision (`.zero` if none).
    /// The record names the attempt committed, the attempt rolled back, or `Attempt.max` for
    /// the txn's final ABORT.
    private mutating func startApplying(
        _ id: TxnID, _ outcome: Outcome, _ prepared: PreparedTxn?, epoch: Epoch, seen: Epoch, rolledBackAttempt: Attempt?
    ) -> ParticipantOutput {
        let attempt = outcome == .commit ? active[id]!.attempt : rolledBackAttempt ?? .max
        active[id]!.phase = .applying(outcome, prepared, rolledBackAttempt: rolledBackAttempt)
        active[id]!.epoch = epoch
        active[id]!.attempt = attempt
        var output = ParticipantOutput()
        let participants = prepared?.participants ?? []
        output.recordsToPersist = [
            outcome == .commit
                ? .committed(
                    txnID: id, attempt: attempt, writes: prepared?.writes ?? [], epoch: epoch, seenEpoch: seen, participants: participants,
                    keys: prepared?.keys ?? [])
                : .aborted(txnID: id, attempt: attempt, epoch: epoch, seenEpoch: seen, participants: participants)
        ]
        return output
    }

    private func reply(_ route: ReplyRoute?, _ reply: ParticipantReply) -> ParticipantOutput {
        var output = ParticipantOutput()
        if let route { output.replies = [RoutedReply(route: route, reply: reply)] }
        return output
    }

    /// The reply for every waiting route, which are then cleared.
    /// Static on purpose: a method of `self` given `&self.active[id]!.voteRoutes` makes Swift
    /// copy `self` for the call, and then the write copies the whole `active` dictionary.
    private static func routes(_ waiting: inout [ReplyRoute], _ reply: ParticipantReply) -> [RoutedReply] {
        defer { waiting = [] }
        return waiting.map { RoutedReply(route: $0, reply: reply) }
    }

    private mutating func noteLockWait(since: UInt64, now: UInt64) {
        counters.lockWaitLongestMs = max(counters.lockWaitLongestMs, now - min(since, now))
    }

    /// Releases `txnID`'s locks; waiters that now hold theirs are sent to plan, waiters that
    /// died on retry vote NO.
    private mutating func releaseLocks(of txnID: TxnID, now: UInt64) -> ParticipantOutput {
        let (granted, died) = locks.release(txnID)
        var output = ParticipantOutput()
        for id in granted {
            guard case .waitingForLocks(let message, let keys, let deadline) = active[id]?.phase else { continue }
            noteLockWait(since: deadline - limits.lockWaitTimeout, now: now)
            active[id]!.phase = .reading(message, keys: keys)
            output.plans.append(PlanRequest(txnID: id, branch: message.branch, keys: keys))
        }
        for (id, holder) in died {
            let reason = AbortReason(.contention, "wait-die: younger than lock holder \(holder)")
            output.merge(refuse(id, epoch: active[id]?.epoch ?? .zero, attempt: active[id]?.attempt ?? 0, reason, routes: []))
        }
        return output
    }
}
