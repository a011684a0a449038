/// A txn an RM holds prepared: its writes are durable and its locks held until the decision.
public struct PreparedTxn: Hashable, Sendable {
    public var txnID: TxnID
    public var stamp: StartStamp
    public var sender: Sender
    public var op: Operation
    public var writes: [Write]

    public init(txnID: TxnID, stamp: StartStamp, sender: Sender, op: Operation, writes: [Write]) {
        self.txnID = txnID
        self.stamp = stamp
        self.sender = sender
        self.op = op
        self.writes = writes
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(txnID.rawValue); writer.write(stamp)
        writer.write(sender.partition); writer.write(sender.epoch); writer.write(sender.node)
        writer.write(op)
        writer.write(UInt32(writes.count))
        for write in writes {
            writer.write(write.key)
            let value = write.value.encoded()
            writer.write(UInt32(value.count))
            for byte in value { writer.write(byte) }
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        txnID = TxnID(try reader.readString())
        stamp = try reader.readUInt64()
        sender = Sender(partition: try reader.readUInt32(), epoch: try reader.readEpoch(), node: try reader.readString())
        op = try reader.readOperation()
        writes = []
        for _ in 0..<(try reader.readUInt32()) {
            let key = try reader.readString()
            var value: [UInt8] = []
            for _ in 0..<(try reader.readUInt32()) { value.append(try reader.readByte()) }
            writes.append(Write(key: key, value: try StateValue(decoding: value)))
        }
    }
}

/// What an RM makes durable. Votes YES and acks follow only from `preparedDurable` and
/// `decisionDurable`, so nothing is promised before its record is on disk. A decision carries
/// its epoch and `seenEpoch`, the highest epoch the RM had seen for the txn before it: the
/// ledger keeps both, so a checker can prove from disk that no decision from a stale epoch
/// was applied (fencing at the participant, DESIGN.md "Failover").
public enum ParticipantRecord: Hashable, Sendable {
    case prepared(PreparedTxn)
    case committed(txnID: TxnID, writes: [Write], epoch: Epoch, seenEpoch: Epoch)
    case aborted(txnID: TxnID, epoch: Epoch, seenEpoch: Epoch)
}

public struct VoteReply: Hashable, Sendable {
    public var txnID: TxnID
    public var vote: Vote

    public init(txnID: TxnID, vote: Vote) {
        self.txnID = txnID
        self.vote = vote
    }
}

public struct AckReply: Hashable, Sendable {
    public var txnID: TxnID
    /// False when the RM refused the decision; `reason` says why.
    public var accepted: Bool
    public var reason: String

    public init(txnID: TxnID, accepted: Bool, reason: String) {
        self.txnID = txnID
        self.accepted = accepted
        self.reason = reason
    }
}

public struct ParticipantOutput: Equatable, Sendable {
    /// Txns whose locks are now held: the shell reads these keys at committed state and
    /// calls `planned`.
    public var reads: [TxnID: [String]] = [:]
    public var recordsToPersist: [ParticipantRecord] = []
    /// Votes and acks that depend on nothing unsynced; send at once.
    public var votes: [VoteReply] = []
    public var acks: [AckReply] = []
    /// Prepared txns held too long: ask the partition's leader for the outcome.
    public var inquiries: [PreparedTxn] = []

    public init() {}

    public mutating func merge(_ other: ParticipantOutput) {
        reads.merge(other.reads) { $1 }
        recordsToPersist += other.recordsToPersist
        votes += other.votes
        acks += other.acks
        inquiries += other.inquiries
    }
}

/// The participant side of 2PC for one RM: strict two-phase locking with wait-die, durable
/// prepare before YES, idempotent decisions, epoch fencing, and tombstones for rollbacks of
/// txns it never prepared.
public struct Participant: Sendable {
    public struct Counters: Equatable, Sendable {
        public var committed: UInt64 = 0
        public var aborted: UInt64 = 0
        public var staleEpochRefusals: UInt64 = 0
        public var conflictingDecisions: UInt64 = 0
    }

    private enum State: Sendable {
        case waitingForLocks(PrepareMessage, deadline: UInt64)
        case reading(PrepareMessage)
        case persistingPrepared(PreparedTxn, rollbackRequested: Epoch?)
        case prepared(PreparedTxn, since: UInt64)
        case applying(Outcome, PreparedTxn?)
        case committed
        case aborted(reason: String)
    }

    private struct Txn: Sendable {
        var state: State
        /// The highest epoch this RM has seen for the txn; lower ones are refused.
        var epoch: Epoch
    }

    public let limits: Limits
    /// Ticks after which a prepared txn asks its coordinator for the outcome.
    public let inquiryAfter: UInt64
    public private(set) var counters = Counters()
    public private(set) var locks = LockTable()
    /// A deliberate bug, for the simulator's mutant tests only.
    package var mutant: Mutant?
    private var txns: [TxnID: Txn] = [:]
    /// Txns that may need `tick`: waiting for locks or prepared. Entries whose txn moved on
    /// are dropped by the next tick, so `tick` never scans the finished txns.
    private var watched: Set<TxnID> = []

    public init(limits: Limits = .standard, inquiryAfter: UInt64 = 3_000) {
        self.limits = limits
        self.inquiryAfter = inquiryAfter
    }

    public var preparedCount: Int {
        txns.values.reduce(0) { count, txn in
            if case .prepared = txn.state { return count + 1 }
            return count
        }
    }

    /// `nil` for an unknown txn; otherwise a short state name (for status and tests).
    public func stateName(of txnID: TxnID) -> String? {
        guard let txn = txns[txnID] else { return nil }
        switch txn.state {
        case .waitingForLocks: return "waiting"
        case .reading: return "reading"
        case .persistingPrepared: return "preparing"
        case .prepared: return "prepared"
        case .applying(let outcome, _): return outcome == .commit ? "committing" : "rolling-back"
        case .committed: return "committed"
        case .aborted: return "aborted"
        }
    }

    /// The operation of a txn whose locks are held and whose committed values the shell reads.
    public func operation(of txnID: TxnID) -> Operation? {
        guard case .reading(let message) = txns[txnID]?.state else { return nil }
        return message.branch.op
    }

    // MARK: - Events

    /// PREPARE: takes the op's locks (or waits, or dies), then asks the shell to read. A known
    /// txn answers its recorded vote.
    public mutating func prepare(_ message: PrepareMessage, now: UInt64) -> ParticipantOutput {
        let id = message.txnID
        if let txn = txns[id] {
            // A PREPARE from a newer leader raises the epoch below which decisions are refused.
            if message.sender.epoch > txn.epoch { txns[id]!.epoch = message.sender.epoch }
            return repeatedVote(id, txn)
        }
        var output = ParticipantOutput()
        let keys = ServiceLogic.keys(of: message.branch.op)
        switch locks.acquire(keys, for: id, stamp: message.stamp) {
        case .granted:
            txns[id] = Txn(state: .reading(message), epoch: message.sender.epoch)
            output.reads[id] = keys
        case .waiting:
            txns[id] = Txn(state: .waitingForLocks(message, deadline: now + limits.lockWaitTimeout), epoch: message.sender.epoch)
            watched.insert(id)
        case .died(let holder):
            output.votes.append(refuse(id, epoch: message.sender.epoch, "wait-die: younger than lock holder \(holder)"))
        }
        return output
    }

    /// The shell read the committed values: persist the prepared writes (then vote YES) or vote NO.
    public mutating func planned(_ txnID: TxnID, _ plan: Result<[Write], PlanRefusal>, now: UInt64) -> ParticipantOutput {
        guard let txn = txns[txnID], case .reading(let message) = txn.state else { return ParticipantOutput() }
        switch plan {
        case .failure(let refusal):
            var output = releaseLocks(of: txnID, now: now)
            output.votes.append(refuse(txnID, epoch: txn.epoch, refusal.reason))
            return output
        case .success(let writes):
            let prepared = PreparedTxn(txnID: txnID, stamp: message.stamp, sender: message.sender, op: message.branch.op, writes: writes)
            txns[txnID]!.state = .persistingPrepared(prepared, rollbackRequested: nil)
            var output = ParticipantOutput()
            output.recordsToPersist = [.prepared(prepared)]
            if mutant == .yesBeforeDurable { output.votes.append(VoteReply(txnID: txnID, vote: .yes)) }
            return output
        }
    }

    /// The prepared record is durable: vote YES (and run a rollback that arrived meanwhile).
    public mutating func preparedDurable(_ txnID: TxnID, now: UInt64) -> ParticipantOutput {
        guard let txn = txns[txnID], case .persistingPrepared(let prepared, let rollback) = txn.state else {
            preconditionFailure("preparedDurable for \(txnID) in state \(stateName(of: txnID) ?? "unknown")")
        }
        txns[txnID]!.state = .prepared(prepared, since: now)
        watched.insert(txnID)
        var output = ParticipantOutput()
        output.votes.append(VoteReply(txnID: txnID, vote: .yes))
        if let rollback {
            output.merge(decide(DecisionMessage(txnID: txnID, outcome: .abort, sender: Sender(partition: prepared.sender.partition, epoch: rollback, node: prepared.sender.node)), now: now))
        }
        return output
    }

    /// COMMIT or ROLLBACK. Idempotent; refused when it comes from an epoch lower than one this
    /// RM has seen for the txn, or when it contradicts the decision already applied.
    public mutating func decide(_ message: DecisionMessage, now: UInt64) -> ParticipantOutput {
        let id = message.txnID
        let epoch = message.sender.epoch
        guard let txn = txns[id] else {
            return message.outcome == .abort ? startApplying(id, .abort, nil, epoch: epoch, seen: .zero) : ack(id, accepted: false, "commit of a txn this RM never prepared")
        }
        if epoch < txn.epoch && mutant != .ignoreEpochs {
            counters.staleEpochRefusals += 1
            return ack(id, accepted: false, "stale epoch \(epoch) < \(txn.epoch)")
        }
        txns[id]!.epoch = epoch
        switch (txn.state, message.outcome) {
        case (.prepared(let prepared, _), let outcome):
            return startApplying(id, outcome, prepared, epoch: epoch, seen: txn.epoch)
        case (.committed, .commit) where mutant == .applyDuplicateCommit:
            return startApplying(id, .commit, nil, epoch: epoch, seen: txn.epoch)
        case (.committed, .commit), (.aborted, .abort):
            return ack(id, accepted: true, "")
        case (.applying(let applying, _), let outcome) where applying == outcome:
            return ParticipantOutput()
        case (.persistingPrepared(let prepared, _), .abort):
            txns[id]!.state = .persistingPrepared(prepared, rollbackRequested: epoch)
            return ParticipantOutput()
        case (.waitingForLocks, .abort), (.reading, .abort):
            locks.withdraw(id)
            var output = releaseLocks(of: id, now: now)
            output.votes.append(VoteReply(txnID: id, vote: .no(reason: "rolled back before it was prepared")))
            output.merge(startApplying(id, .abort, nil, epoch: epoch, seen: txn.epoch))
            return output
        case (.committed, .abort), (.aborted, .commit), (.applying, _), (.waitingForLocks, .commit), (.reading, .commit), (.persistingPrepared, .commit):
            counters.conflictingDecisions += 1
            return ack(id, accepted: false, "conflicting decision \(message.outcome.rawValue) for a txn in state \(stateName(of: id)!)")
        }
    }

    /// The decision is durable: release the locks (waking waiters) and ack.
    public mutating func decisionDurable(_ txnID: TxnID, now: UInt64) -> ParticipantOutput {
        guard let txn = txns[txnID], case .applying(let outcome, _) = txn.state else {
            preconditionFailure("decisionDurable for \(txnID) in state \(stateName(of: txnID) ?? "unknown")")
        }
        if outcome == .commit { counters.committed += 1 } else { counters.aborted += 1 }
        txns[txnID]!.state = outcome == .commit ? .committed : .aborted(reason: "rolled back")
        var output = releaseLocks(of: txnID, now: now)
        output.acks.append(AckReply(txnID: txnID, accepted: true, reason: ""))
        return output
    }

    /// Lock waits past their timeout vote NO; prepared txns held past `inquiryAfter` are
    /// reported for the termination protocol (and reported again every `inquiryAfter`).
    public mutating func tick(now: UInt64) -> ParticipantOutput {
        var output = ParticipantOutput()
        for id in watched.sorted() {
            guard let txn = txns[id] else { continue }
            switch txn.state {
            case .waitingForLocks(_, let deadline) where now >= deadline:
                locks.withdraw(id)
                watched.remove(id)
                output.votes.append(refuse(id, epoch: txn.epoch, "lock wait timeout"))
            case .prepared(let prepared, let since) where now >= since + inquiryAfter:
                txns[id]!.state = .prepared(prepared, since: now)
                output.inquiries.append(prepared)
            case .waitingForLocks, .prepared:
                continue
            case .reading, .persistingPrepared, .applying, .committed, .aborted:
                watched.remove(id)
            }
        }
        return output
    }

    /// After a restart: prepared txns re-take their locks before the RM serves; finished txns
    /// are remembered so repeated decisions are acknowledged without acting again.
    public mutating func recover(prepared: [PreparedTxn], finished: [(TxnID, Outcome)], now: UInt64) {
        precondition(txns.isEmpty, "recover must run before any other event")
        for (id, outcome) in finished {
            txns[id] = Txn(state: outcome == .commit ? .committed : .aborted(reason: "rolled back"), epoch: .zero)
        }
        for txn in prepared {
            let acquisition = locks.acquire(ServiceLogic.keys(of: txn.op), for: txn.txnID, stamp: txn.stamp)
            precondition(acquisition == .granted, "prepared txns \(txn.txnID) conflict on recovery: \(acquisition)")
            txns[txn.txnID] = Txn(state: .prepared(txn, since: now), epoch: txn.sender.epoch)
            watched.insert(txn.txnID)
        }
    }

    // MARK: - Helpers

    private func repeatedVote(_ id: TxnID, _ txn: Txn) -> ParticipantOutput {
        var output = ParticipantOutput()
        switch txn.state {
        case .waitingForLocks, .reading, .persistingPrepared, .applying(.commit, _):
            // Answered when the first PREPARE's vote is ready (or already YES while committing).
            if case .applying = txn.state { output.votes.append(VoteReply(txnID: id, vote: .yes)) }
        case .prepared, .committed:
            output.votes.append(VoteReply(txnID: id, vote: .yes))
        case .applying(.abort, _):
            output.votes.append(VoteReply(txnID: id, vote: .no(reason: "rolled back")))
        case .aborted(let reason):
            output.votes.append(VoteReply(txnID: id, vote: .no(reason: reason)))
        }
        return output
    }

    private mutating func refuse(_ id: TxnID, epoch: Epoch, _ reason: String) -> VoteReply {
        txns[id] = Txn(state: .aborted(reason: reason), epoch: epoch)
        return VoteReply(txnID: id, vote: .no(reason: reason))
    }

    /// `seen` is the highest epoch known for the txn before this decision (`.zero` if none).
    private mutating func startApplying(_ id: TxnID, _ outcome: Outcome, _ prepared: PreparedTxn?, epoch: Epoch, seen: Epoch) -> ParticipantOutput {
        txns[id] = Txn(state: .applying(outcome, prepared), epoch: epoch)
        var output = ParticipantOutput()
        output.recordsToPersist = [
            outcome == .commit
                ? .committed(txnID: id, writes: prepared?.writes ?? [], epoch: epoch, seenEpoch: seen)
                : .aborted(txnID: id, epoch: epoch, seenEpoch: seen)
        ]
        return output
    }

    private func ack(_ id: TxnID, accepted: Bool, _ reason: String) -> ParticipantOutput {
        var output = ParticipantOutput()
        output.acks.append(AckReply(txnID: id, accepted: accepted, reason: reason))
        return output
    }

    /// Releases `txnID`'s locks; waiters that now hold theirs are sent to read, waiters that
    /// died on retry vote NO.
    private mutating func releaseLocks(of txnID: TxnID, now: UInt64) -> ParticipantOutput {
        let (granted, died) = locks.release(txnID)
        var output = ParticipantOutput()
        for id in granted {
            guard case .waitingForLocks(let message, _) = txns[id]?.state else { continue }
            txns[id]!.state = .reading(message)
            output.reads[id] = ServiceLogic.keys(of: message.branch.op)
        }
        for (id, holder) in died {
            output.votes.append(refuse(id, epoch: txns[id]?.epoch ?? .zero, "wait-die: younger than lock holder \(holder)"))
        }
        return output
    }
}
