import DequeModule

/// What the shell must do after one step of the coordinator, in this order: append the records
/// (and fsync them if `mustSync`), then send `messagesAfterAppend` and `replies`. The shell
/// releases those only once every record appended so far is durable, so a COMMIT never reaches
/// an RM or a client before its record is on disk. `messagesNow` depend on nothing unsynced.
public struct CoordinatorOutput: Equatable, Sendable {
    public var recordsToAppend: [PartitionRecord] = []
    public var mustSync = false
    public var messagesAfterAppend: [Envelope] = []
    public var messagesNow: [Envelope] = []
    public var replies: [ClientReply] = []

    public init() {}

    public var isEmpty: Bool { self == CoordinatorOutput() }

    public mutating func merge(_ other: CoordinatorOutput) {
        recordsToAppend += other.recordsToAppend
        mustSync = mustSync || other.mustSync
        messagesAfterAppend += other.messagesAfterAppend
        messagesNow += other.messagesNow
        replies += other.replies
    }
}

/// One branch as the coordinator sees it (for `GetTxn`).
public enum BranchProgress: Hashable, Sendable {
    case awaitingVote
    case votedYes
    case votedNo(reason: AbortReason)
    case awaitingAck(Outcome)
    case acknowledged(Outcome)
}

public struct TxnSnapshot: Hashable, Sendable {
    public var txnID: TxnID
    public var partition: UInt32
    public var status: TxnStatus
    public var stamp: StartStamp
    /// The attempt in progress (or the last one, for a finished txn).
    public var attempt: Attempt
    public var epoch: Epoch
    public var branches: [(summary: BranchSummary, progress: BranchProgress)]

    public static func == (lhs: TxnSnapshot, rhs: TxnSnapshot) -> Bool {
        lhs.txnID == rhs.txnID && lhs.status == rhs.status && lhs.branches.map(\.summary) == rhs.branches.map(\.summary)
            && lhs.branches.map(\.progress) == rhs.branches.map(\.progress)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(txnID) }
}

/// What `GetTxn` shows of a branch: whom it goes to, its kind and its payload's size, never
/// the payload itself.
public struct BranchSummary: Hashable, Sendable {
    public var rm: String
    public var kind: String
    public var payloadBytes: Int

    public init(_ branch: Branch) {
        rm = branch.rm
        kind = branch.kind
        payloadBytes = branch.payload.count
    }
}

public enum SubmitResult: Equatable, Sendable {
    case accepted(CoordinatorOutput)
    /// `inFlightTxnsMax` reached: the client should back off and retry with the same txnID.
    case overloaded(inFlight: Int)
    /// The txn ID is known with other branches: a client reused an ID for a different txn.
    case idTaken(txnID: TxnID)
}

/// The coordinator of the partitions one node leads: 2PC with presumed abort.
/// Event in, actions out; time arrives as a tick count in milliseconds.
public struct Coordinator: Sendable {
    public let node: String
    public let nodeIndex: NodeIndex
    public let limits: Limits
    public private(set) var epochs: [UInt32: Epoch]
    public private(set) var counters = Counters()
    /// A deliberate bug, for the simulator's mutant tests only.
    package var mutant: Mutant?

    private var active: [TxnID: ActiveTxn] = [:]
    private var finished: [TxnID: FinishedTxn] = [:]
    private var finishedOrder = Deque<TxnID>()
    /// Tombstones (ABORTs of txns a partition never started) per txn: they never end, so
    /// `activeRecords` carries them, and a takeover appends them again, like any decision
    /// whose quorum may be pending.
    private var tombstones: [TxnID: UInt32] = [:]
    private var lastStampLocal: UInt64 = 0

    public struct Counters: Equatable, Sendable {
        public var committed: UInt64 = 0
        public var aborted: UInt64 = 0
        public var recovered: UInt64 = 0
        /// Attempts rolled back to prepare the txn again (contention).
        public var retries: UInt64 = 0
    }

    private struct ActiveTxn: Sendable {
        var partition: UInt32
        var stamp: StartStamp
        var branches: [Branch]
        var digest: UInt64
        var phase: Phase
        var attempt: Attempt = 0
        /// When it was submitted (or adopted): no further attempt starts `retryWindow` later.
        var since: UInt64
    }

    private enum Phase: Sendable {
        case preparing(votes: [String: Vote], deadline: UInt64)
        /// The attempt is being rolled back at every participant; the next starts once all
        /// acknowledged and `resumeAt` has passed. `reason` is the NO that caused it.
        case retrying(reason: AbortReason, pendingAcks: Set<String>, nextResend: UInt64, resendDelay: UInt64, resumeAt: UInt64)
        case deciding(outcome: Outcome, reason: AbortReason, pendingAcks: Set<String>, nextRetry: UInt64, retryDelay: UInt64)
    }

    private struct FinishedTxn: Sendable {
        var partition: UInt32
        var outcome: Outcome
        var reason: AbortReason
        var stamp: StartStamp
        var branches: [BranchSummary]
        /// `branchesDigest` of the txn's branches; nil for a tombstone (no branches known).
        var digest: UInt64?
        /// Attempts made; 0 where not known (adopted in a takeover, a tombstone).
        var attempts: Attempt = 0
    }

    /// `epochs` are the partitions this node leads and the epoch it holds for each.
    public init(node: String, nodeIndex: NodeIndex, epochs: [UInt32: Epoch], limits: Limits = .standard) {
        precondition(nodeIndex.rawValue < 16, "node index \(nodeIndex.rawValue) does not fit the start stamp's 4 bits")
        self.node = node
        self.nodeIndex = nodeIndex
        self.epochs = epochs
        self.limits = limits
    }

    public var inFlightCount: Int { active.count }

    public func inFlightCount(partition: UInt32) -> Int {
        active.values.reduce(0) { $0 + ($1.partition == partition ? 1 : 0) }
    }

    public func leads(_ partition: UInt32) -> Bool { epochs[partition] != nil }

    /// Whether `txnID` is preparing and has no vote from `rm` yet.
    public func isAwaitingVote(_ txnID: TxnID, from rm: String) -> Bool {
        guard let txn = active[txnID], case .preparing(let votes, _) = txn.phase else { return false }
        return votes[rm] == nil
    }

    /// The attempt `txnID` is in, if it is in flight here.
    public func attempt(of txnID: TxnID) -> Attempt? { active[txnID]?.attempt }

    // MARK: - Events

    /// A client submits `txnID`. A known txn answers its current state (idempotent submit).
    public mutating func submit(_ txnID: TxnID, branches: [Branch], partition: UInt32, now: UInt64) -> SubmitResult {
        precondition(leads(partition), "submit of \(txnID) to partition \(partition), which \(node) does not lead")
        let digest = branchesDigest(branches)
        switch knowledge(of: txnID) {
        case .unknown:
            break
        case .undecided, .decided:
            if let recorded = recordedDigest(txnID), recorded != digest { return .idTaken(txnID: txnID) }
            var output = CoordinatorOutput()
            if case .decided(let reply) = knowledge(of: txnID) { output.replies = [reply] }
            return .accepted(output)
        }
        guard active.count < limits.inFlightTxnsMax else { return .overloaded(inFlight: active.count) }
        let stamp = nextStamp(now: now)
        let epoch = epochs[partition]!
        active[txnID] = ActiveTxn(
            partition: partition, stamp: stamp, branches: branches, digest: digest,
            phase: .preparing(votes: [:], deadline: now + limits.prepareTimeout), since: now)
        var output = CoordinatorOutput()
        output.recordsToAppend = [
            PartitionRecord(partition: partition, record: .start(txnID: txnID, epoch: epoch, stamp: stamp, branches: branches))
        ]
        output.messagesNow = prepareMessages(txnID, active[txnID]!)
        return .accepted(output)
    }

    /// An RM's vote for `attempt` (votes of other attempts are stale and ignored). A NO (or an
    /// unreachable RM, reported as NO) aborts the txn, unless it is contention and the retry
    /// budget allows another attempt.
    public mutating func voteReceived(_ vote: Vote, attempt: Attempt = 0, txn txnID: TxnID, from rm: String, now: UInt64) -> CoordinatorOutput {
        guard var txn = active[txnID], case .preparing(var votes, let deadline) = txn.phase, attempt == txn.attempt,
            txn.branches.contains(where: { $0.rm == rm }), votes[rm] == nil
        else { return CoordinatorOutput() }
        votes[rm] = vote
        txn.phase = .preparing(votes: votes, deadline: deadline)
        active[txnID] = txn
        if case .no(let reason) = vote {
            // An unreachable participant is reported as a NO by the shell; it never voted.
            let text = reason.cause == .unavailable ? reason.text : "\(rm) voted NO: \(reason.text)"
            let cause = AbortReason(reason.cause, text)
            if reason.cause == .contention {
                if mayRetry(txn, now: now) { return rollBackAttempt(txnID, because: cause, now: now) }
                return decide(txnID, .abort, reason: gaveUp(txn, cause), now: now)
            }
            return decide(txnID, .abort, reason: cause, now: now)
        }
        if votes.count == txn.branches.count {
            return decide(txnID, .commit, reason: .none, now: now)
        }
        return CoordinatorOutput()
    }

    /// An RM acknowledged the decision, or (`rolledBackAttempt` set) the rollback of an
    /// attempt. When all have acknowledged the decision, END is appended (lazily) and the txn
    /// moves to the finished set, kept for deduplication; when all have acknowledged the
    /// rollback, the next attempt starts (once its backoff has passed).
    public mutating func ackReceived(txn txnID: TxnID, from rm: String, rolledBackAttempt: Attempt? = nil, now: UInt64 = 0) -> CoordinatorOutput {
        if let rolledBackAttempt { return rollbackAcknowledged(txnID, attempt: rolledBackAttempt, from: rm, now: now) }
        guard var txn = active[txnID],
            case .deciding(let outcome, let reason, var pending, let nextRetry, let delay) = txn.phase,
            pending.remove(rm) != nil
        else { return CoordinatorOutput() }
        guard pending.isEmpty else {
            txn.phase = .deciding(outcome: outcome, reason: reason, pendingAcks: pending, nextRetry: nextRetry, retryDelay: delay)
            active[txnID] = txn
            return CoordinatorOutput()
        }
        active[txnID] = nil
        remember(txnID, FinishedTxn(
            partition: txn.partition, outcome: outcome, reason: reason, stamp: txn.stamp, branches: txn.branches.map(BranchSummary.init),
            digest: txn.digest, attempts: txn.attempt + 1))
        var output = CoordinatorOutput()
        output.recordsToAppend = [PartitionRecord(partition: txn.partition, record: .end(txnID: txnID))]
        return output
    }

    /// Time passes: votes that did not come in time count as NO; unacknowledged decisions are
    /// sent again with capped exponential backoff.
    public mutating func tick(now: UInt64) -> CoordinatorOutput {
        var output = CoordinatorOutput()
        for (txnID, txn) in active.sorted(by: { $0.key < $1.key }) {
            switch txn.phase {
            case .preparing(let votes, let deadline):
                guard now >= deadline else { continue }
                let missing = txn.branches.map(\.rm).filter { votes[$0] == nil }
                output.merge(decide(txnID, .abort, reason: AbortReason(.timeout, "prepare timeout: no vote from \(missing.joined(separator: ", "))"), now: now))
            case .retrying(let reason, let pending, let nextResend, let delay, let resumeAt):
                if pending.isEmpty {
                    guard now >= resumeAt else { continue }
                    output.merge(startNextAttempt(txnID, now: now))
                } else if now >= txn.since + limits.retryWindow {
                    // A participant that does not acknowledge the rollback holds the txn up:
                    // give up, and let the ABORT be resent until it is acknowledged.
                    output.merge(decide(txnID, .abort, reason: gaveUp(txn, reason), now: now))
                } else if now >= nextResend {
                    let nextDelay = min(delay * 2, limits.decisionRetryMax)
                    active[txnID]!.phase = .retrying(reason: reason, pendingAcks: pending, nextResend: now + nextDelay, resendDelay: nextDelay, resumeAt: resumeAt)
                    output.messagesNow += rollbackMessages(txnID, txn, to: pending)
                }
            case .deciding(let outcome, let reason, let pending, let nextRetry, let delay):
                guard now >= nextRetry else { continue }
                let nextDelay = min(delay * 2, limits.decisionRetryMax)
                var updated = txn
                updated.phase = .deciding(outcome: outcome, reason: reason, pendingAcks: pending, nextRetry: now + nextDelay, retryDelay: nextDelay)
                active[txnID] = updated
                output.messagesAfterAppend += decisionMessages(txnID, updated, outcome, to: pending)
            }
        }
        return output
    }

    /// An RM asks for the outcome of a txn it holds prepared (termination protocol). A txn this
    /// partition never heard of is aborted first (a durable tombstone), then answered.
    /// Returns nil while the txn is still preparing: the RM asks again later.
    public mutating func resolve(_ txnID: TxnID, partition: UInt32) -> CoordinatorOutput? {
        precondition(leads(partition), "resolve of \(txnID) in partition \(partition), which \(node) does not lead")
        switch knowledge(of: txnID) {
        case .unknown:
            break
        case .undecided:
            return nil
        case .decided(let reply):
            var output = CoordinatorOutput()
            output.replies = [reply]
            return output
        }
        counters.aborted += 1
        let reason = AbortReason(.unknownTxn, "unknown to the coordinator (presumed abort)")
        var output = entomb(txnID, partition: partition, reason: reason)
        output.replies = [ClientReply(txnID: txnID, status: .aborted(reason: reason))]
        return output
    }

    /// Records an ABORT for a txn without START at the current epoch.
    private mutating func entomb(_ txnID: TxnID, partition: UInt32, reason: AbortReason) -> CoordinatorOutput {
        remember(txnID, FinishedTxn(partition: partition, outcome: .abort, reason: reason, stamp: 0, branches: [], digest: nil))
        tombstones[txnID] = partition
        var output = CoordinatorOutput()
        output.recordsToAppend = [
            PartitionRecord(partition: partition, record: .decision(txnID: txnID, outcome: .abort, reason: reason, epoch: epochs[partition]!))
        ]
        output.mustSync = true
        return output
    }

    /// This node becomes the partition's leader at `epoch`, with the rows merged from a quorum
    /// of its replica group. Every decision is appended again at the new epoch (so this
    /// epoch's quorum holds it) and driven to the RMs; every started txn without a decision is
    /// aborted. Only then may the partition serve (DESIGN.md, "Failover").
    ///
    /// `settledEnds` are txns whose END every member that promised the epoch holds: they are
    /// remembered, not appended again (the caller sees that a member that did not promise
    /// gets their END before they are trimmed). Any other ENDed txn's decision and END are
    /// appended at this epoch.
    public mutating func takeOver(partition: UInt32, epoch: Epoch, rows: [TxnRow], settledEnds: Set<TxnID> = [], now: UInt64) -> CoordinatorOutput {
        precondition(!leads(partition), "\(node) takes over partition \(partition), which it already leads")
        epochs[partition] = epoch
        var output = CoordinatorOutput()
        for row in rows.sorted(by: { $0.txnID < $1.txnID }) {
            output.merge(adopt(row, partition: partition, settled: settledEnds.contains(row.txnID), now: now))
        }
        return output
    }

    /// A higher epoch leads the partition now: forget its in-flight txns (the new leader
    /// finishes them) and return their IDs so the shell can tell their waiting clients.
    public mutating func stepDown(partition: UInt32) -> [TxnID] {
        guard epochs.removeValue(forKey: partition) != nil else { return [] }
        let dropped = active.filter { $0.value.partition == partition }.map(\.key).sorted()
        for txnID in dropped { active[txnID] = nil }
        tombstones = tombstones.filter { $0.value != partition }
        // What this node remembers of the partition's finished txns may not be on any quorum
        // (a tombstone appended just before the fence): a later takeover learns them again
        // from the members' rows, never from this memory.
        finished = finished.filter { $0.value.partition != partition }
        finishedOrder = Deque(finishedOrder.filter { finished[$0] != nil })
        return dropped
    }

    // MARK: - Queries

    public func snapshot(of txnID: TxnID) -> TxnSnapshot? {
        if let txn = active[txnID] {
            return TxnSnapshot(
                txnID: txnID, partition: txn.partition, status: status(of: txn), stamp: txn.stamp, attempt: txn.attempt,
                epoch: epochs[txn.partition] ?? .zero, branches: txn.branches.map { (BranchSummary($0), progress(of: $0.rm, in: txn)) })
        }
        if let done = finished[txnID] {
            return TxnSnapshot(
                txnID: txnID, partition: done.partition, status: status(done.outcome, done.reason), stamp: done.stamp, attempt: 0,
                epoch: epochs[done.partition] ?? .zero, branches: done.branches.map { ($0, .acknowledged(done.outcome)) })
        }
        return nil
    }

    /// The decision and END of finished txns, at the current epoch: what a catch-up carries for
    /// the txns whose END may not be on every member yet.
    public func endedRecords(_ txnIDs: [TxnID], partition: UInt32) -> [LogRecord] {
        let epoch = epochs[partition] ?? .zero
        return txnIDs.flatMap { txnID -> [LogRecord] in
            guard let done = finished[txnID], done.partition == partition else { return [] }
            return [.decision(txnID: txnID, outcome: done.outcome, reason: done.reason, epoch: epoch), .end(txnID: txnID)]
        }
    }

    /// The records that rebuild every in-flight txn and every tombstone of `partition`: what
    /// a follower that (re)connects needs so that its acknowledgements cover every record
    /// whose quorum may be pending. (A txn ends only after its decision is on a quorum.)
    public func activeRecords(partition: UInt32) -> [LogRecord] {
        let epoch = epochs[partition] ?? .zero
        let inFlight = active.filter { $0.value.partition == partition }.sorted { $0.key < $1.key }.flatMap { txnID, txn in
            var records: [LogRecord] = [.start(txnID: txnID, epoch: epoch, stamp: txn.stamp, branches: txn.branches)]
            if case .deciding(let outcome, let reason, _, _, _) = txn.phase {
                records.append(.decision(txnID: txnID, outcome: outcome, reason: reason, epoch: epoch))
            }
            return records
        }
        let entombed = tombstones.filter { $0.value == partition }.keys.sorted().map { txnID in
            LogRecord.decision(txnID: txnID, outcome: .abort, reason: finished[txnID]?.reason ?? AbortReason(.unknownTxn, ""), epoch: epoch)
        }
        return inFlight + entombed
    }

    // MARK: - Helpers

    /// What this coordinator knows of a txn.
    private enum Knowledge {
        case unknown
        /// Known and still preparing: nothing to say yet.
        case undecided
        case decided(ClientReply)
    }

    private func knowledge(of txnID: TxnID) -> Knowledge {
        if let txn = active[txnID] {
            let current = status(of: txn)
            return current == .preparing ? .undecided : .decided(ClientReply(txnID: txnID, status: current, attempts: txn.attempt + 1))
        }
        if let done = finished[txnID] {
            return .decided(ClientReply(txnID: txnID, status: status(done.outcome, done.reason), attempts: done.attempts))
        }
        return .unknown
    }

    private func recordedDigest(_ txnID: TxnID) -> UInt64? {
        active[txnID]?.digest ?? finished[txnID]?.digest
    }

    private func status(of txn: ActiveTxn) -> TxnStatus {
        switch txn.phase {
        case .preparing, .retrying: .preparing
        case .deciding(let outcome, let reason, _, _, _): status(outcome, reason)
        }
    }

    private func status(_ outcome: Outcome, _ reason: AbortReason) -> TxnStatus {
        outcome == .commit ? .committed : .aborted(reason: reason)
    }

    private func progress(of rm: String, in txn: ActiveTxn) -> BranchProgress {
        switch txn.phase {
        case .preparing(let votes, _):
            switch votes[rm] {
            case nil: .awaitingVote
            case .yes: .votedYes
            case .no(let reason): .votedNo(reason: reason)
            }
        case .retrying(let reason, let pending, _, _, _):
            pending.contains(rm) ? .votedNo(reason: reason) : .awaitingVote
        case .deciding(let outcome, _, let pending, _, _):
            pending.contains(rm) ? .awaitingAck(outcome) : .acknowledged(outcome)
        }
    }

    /// The decision record is forced; COMMITs go out only after it is durable. ROLLBACKs could go
    /// at once (presumed abort), but the client hears ABORTED only after the record is durable.
    private mutating func decide(_ txnID: TxnID, _ outcome: Outcome, reason: AbortReason, now: UInt64) -> CoordinatorOutput {
        var txn = active[txnID]!
        let rms = Set(txn.branches.map(\.rm))
        txn.phase = .deciding(
            outcome: outcome, reason: reason, pendingAcks: rms,
            nextRetry: now + limits.decisionRetryInitial, retryDelay: limits.decisionRetryInitial)
        active[txnID] = txn
        if outcome == .commit { counters.committed += 1 } else { counters.aborted += 1 }
        var output = CoordinatorOutput()
        output.recordsToAppend = [
            PartitionRecord(partition: txn.partition, record: .decision(txnID: txnID, outcome: outcome, reason: reason, epoch: epochs[txn.partition]!))
        ]
        output.mustSync = true
        let messages = decisionMessages(txnID, txn, outcome, to: rms)
        // ROLLBACKs wait for the quorum too, though presumed abort would allow them at once: so a
        // txn ends (and leaves `activeRecords`) only once its decision is on a quorum, and a
        // follower's catch-up, which carries the in-flight txns, covers every decision whose
        // quorum is still pending.
        if outcome == .commit && mutant == .commitBeforeDurable { output.messagesNow = messages } else { output.messagesAfterAppend = messages }
        output.replies = [ClientReply(txnID: txnID, status: status(outcome, reason), attempts: txn.attempt + 1)]
        return output
    }

    // MARK: - Retries of attempts refused for contention

    private func mayRetry(_ txn: ActiveTxn, now: UInt64) -> Bool {
        txn.attempt + 1 < limits.attemptsMax && now < txn.since + limits.retryWindow
    }

    /// The reason a txn refused for contention in its last attempt aborts with.
    private func gaveUp(_ txn: ActiveTxn, _ reason: AbortReason) -> AbortReason {
        guard txn.attempt > 0 else { return reason }
        return AbortReason(.contention, "gave up after \(txn.attempt + 1) attempts: \(reason.text)")
    }

    /// Rolls the current attempt back at every participant (no record: an attempt that never
    /// committed is aborted, presumed abort); the next starts when all acknowledged.
    private mutating func rollBackAttempt(_ txnID: TxnID, because reason: AbortReason, now: UInt64) -> CoordinatorOutput {
        var txn = active[txnID]!
        let rms = Set(txn.branches.map(\.rm))
        txn.phase = .retrying(
            reason: reason, pendingAcks: rms, nextResend: now + limits.decisionRetryInitial, resendDelay: limits.decisionRetryInitial,
            resumeAt: now + backoff(txn))
        active[txnID] = txn
        counters.retries += 1
        var output = CoordinatorOutput()
        output.messagesNow = rollbackMessages(txnID, txn, to: rms)
        return output
    }

    /// Exponential in the attempt, with a spread drawn from the txn's stamp so that txns that
    /// collided do not retry in step (no randomness in the core).
    private func backoff(_ txn: ActiveTxn) -> UInt64 {
        let base = min(limits.retryBackoffInitial << min(UInt64(txn.attempt), 20), limits.retryBackoffMax)
        let spread = (txn.stamp &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(txn.attempt)) >> 33
        return base / 2 + spread % (base / 2 + 1)
    }

    private mutating func rollbackAcknowledged(_ txnID: TxnID, attempt: Attempt, from rm: String, now: UInt64) -> CoordinatorOutput {
        guard let txn = active[txnID], attempt == txn.attempt,
            case .retrying(let reason, var pending, let nextResend, let delay, let resumeAt) = txn.phase, pending.remove(rm) != nil
        else { return CoordinatorOutput() }
        active[txnID]!.phase = .retrying(reason: reason, pendingAcks: pending, nextResend: nextResend, resendDelay: delay, resumeAt: resumeAt)
        guard pending.isEmpty, now >= resumeAt else { return CoordinatorOutput() }
        return startNextAttempt(txnID, now: now)
    }

    /// Every participant has rolled the last attempt back: PREPARE again, same start stamp.
    private mutating func startNextAttempt(_ txnID: TxnID, now: UInt64) -> CoordinatorOutput {
        var txn = active[txnID]!
        if mutant != .retryReusesAttempt { txn.attempt += 1 }
        if mutant == .retryWithFreshStamp { txn.stamp = nextStamp(now: now) }
        txn.phase = .preparing(votes: [:], deadline: now + limits.prepareTimeout)
        active[txnID] = txn
        var output = CoordinatorOutput()
        output.messagesNow = prepareMessages(txnID, txn)
        return output
    }

    private func prepareMessages(_ txnID: TxnID, _ txn: ActiveTxn) -> [Envelope] {
        let sender = Sender(partition: txn.partition, epoch: epochs[txn.partition]!, node: node)
        let participants = txn.branches.map(\.rm)
        return txn.branches.map {
            .prepare(rm: $0.rm, PrepareMessage(txnID: txnID, stamp: txn.stamp, attempt: txn.attempt, sender: sender, branch: $0, participants: participants))
        }
    }

    private func rollbackMessages(_ txnID: TxnID, _ txn: ActiveTxn, to rms: Set<String>) -> [Envelope] {
        let sender = Sender(partition: txn.partition, epoch: epochs[txn.partition]!, node: node)
        return txn.branches.map(\.rm).filter(rms.contains).map {
            .decision(rm: $0, DecisionMessage(txnID: txnID, outcome: .abort, sender: sender, rolledBackAttempt: txn.attempt))
        }
    }

    private func decisionMessages(_ txnID: TxnID, _ txn: ActiveTxn, _ outcome: Outcome, to rms: Set<String>) -> [Envelope] {
        let sender = Sender(partition: txn.partition, epoch: epochs[txn.partition]!, node: node)
        return txn.branches.map(\.rm).filter(rms.contains).map {
            .decision(rm: $0, DecisionMessage(txnID: txnID, outcome: outcome, sender: sender))
        }
    }

    /// Takes on one txn of a partition this node now leads, from its (merged) row.
    private mutating func adopt(_ row: TxnRow, partition: UInt32, settled: Bool, now: UInt64) -> CoordinatorOutput {
        let txnID = row.txnID
        if !row.isEnded, row.branches.isEmpty, let decision = row.decision {
            return entomb(txnID, partition: partition, reason: decision.reason)
        }
        if row.isEnded || row.branches.isEmpty {
            let outcome = row.decision?.outcome ?? .abort
            let digest = row.branches.isEmpty ? nil : branchesDigest(row.branches)
            remember(txnID, FinishedTxn(partition: partition, outcome: outcome, reason: row.decision?.reason ?? AbortReason(.leaderChanged, ""), stamp: row.stamp, branches: row.branches.map(BranchSummary.init), digest: digest))
            // An ENDed txn's decision and END go to this epoch's members again when one of them
            // may have missed them: its row must not outlive the others' (see `LogRecord.trim`).
            guard row.isEnded, let decision = row.decision, !settled else { return CoordinatorOutput() }
            var output = CoordinatorOutput()
            output.recordsToAppend = [
                PartitionRecord(partition: partition, record: .decision(txnID: txnID, outcome: decision.outcome, reason: decision.reason, epoch: epochs[partition]!)),
                PartitionRecord(partition: partition, record: .end(txnID: txnID)),
            ]
            return output
        }
        counters.recovered += 1
        let epoch = epochs[partition]!
        active[txnID] = ActiveTxn(
            partition: partition, stamp: row.stamp, branches: row.branches, digest: branchesDigest(row.branches),
            phase: .preparing(votes: [:], deadline: now), since: now)
        var output = CoordinatorOutput()
        output.recordsToAppend = [PartitionRecord(partition: partition, record: .start(txnID: txnID, epoch: epoch, stamp: row.stamp, branches: row.branches))]
        guard let decision = row.decision, mutant != .takeoverAbortsCommitted else {
            output.merge(decide(txnID, .abort, reason: AbortReason(.leaderChanged, "leader changed before deciding"), now: now))
            return output
        }
        let rms = Set(row.branches.map(\.rm))
        var txn = active[txnID]!
        txn.phase = .deciding(outcome: decision.outcome, reason: decision.reason, pendingAcks: rms, nextRetry: now + limits.decisionRetryInitial, retryDelay: limits.decisionRetryInitial)
        active[txnID] = txn
        output.recordsToAppend.append(PartitionRecord(partition: partition, record: .decision(txnID: txnID, outcome: decision.outcome, reason: decision.reason, epoch: epoch)))
        output.mustSync = true
        output.messagesAfterAppend = decisionMessages(txnID, txn, decision.outcome, to: rms)
        return output
    }

    private mutating func remember(_ txnID: TxnID, _ txn: FinishedTxn) {
        if finished.updateValue(txn, forKey: txnID) == nil { finishedOrder.append(txnID) }
        while finishedOrder.count > limits.finishedTxnsRetainedMax {
            let evicted = finishedOrder.removeFirst()
            finished[evicted] = nil
            tombstones[evicted] = nil
        }
    }

    /// Stamps increase strictly on each node and carry the node's index, so stamps from
    /// different nodes never tie: wait-die needs a total order.
    private mutating func nextStamp(now: UInt64) -> StartStamp {
        lastStampLocal = max(now << 12, lastStampLocal + 1)
        return lastStampLocal << 4 | UInt64(nodeIndex.rawValue)
    }
}

