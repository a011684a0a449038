import Testing

@testable import DTCCore

/// Same-stamp retries: a NO for contention rolls the attempt back at every participant and
/// prepares the txn again as the next attempt, with its original start stamp.
@Suite struct CoordinatorAttemptTests {
    static let waitDie = AbortReason(.contention, "wait-die: younger than lock holder t0")

    /// Submits t1 and has the inventory refuse attempt 0 for contention.
    static func refusedOnce(_ c: inout Coordinator) throws -> (stamp: StartStamp, rollback: CoordinatorOutput) {
        let stamp = try startStamp(in: try c.submit("t1", now: 0))
        _ = c.voteReceived(.yes, attempt: 0, txn: TxnID("t1"), from: RM.orders, now: 1)
        let rollback = c.voteReceived(.no(reason: waitDie), attempt: 0, txn: TxnID("t1"), from: RM.inventory, now: 2)
        return (stamp, rollback)
    }

    static func rollbacks(_ attempt: Attempt, to rms: [String] = allRMs) -> [Envelope] {
        rms.map { .decision(rm: $0, DecisionMessage(txnID: TxnID("t1"), outcome: .abort, sender: n1Sender, rolledBackAttempt: attempt)) }
    }

    @Test func aContentionNoRollsTheAttemptBackEverywhereWithoutARecordOrAReply() throws {
        var c = Coordinator.fixture()
        let (_, out) = try Self.refusedOnce(&c)
        #expect(out.recordsToAppend.isEmpty && !out.mustSync, "an attempt that never committed needs no record (presumed abort)")
        #expect(out.replies.isEmpty, "the client waits for the txn's final answer")
        #expect(out.messagesNow == Self.rollbacks(0))
        #expect(c.status(of: "t1") == .preparing)
        #expect(c.counters.retries == 1)
    }

    @Test func theNextAttemptStartsOnceEveryParticipantAcknowledgedWithTheSameStamp() throws {
        var c = Coordinator.fixture()
        let (stamp, _) = try Self.refusedOnce(&c)
        #expect(c.ackReceived(txn: TxnID("t1"), from: RM.inventory, rolledBackAttempt: 0, now: 50).isEmpty)
        #expect(c.ackReceived(txn: TxnID("t1"), from: RM.orders, rolledBackAttempt: 0, now: 50).isEmpty)
        #expect(c.ackReceived(txn: TxnID("t1"), from: RM.accounts, rolledBackAttempt: 5, now: 50).isEmpty, "an ack of another attempt counts for nothing")
        #expect(c.ackReceived(txn: TxnID("t1"), from: RM.accounts, now: 50).isEmpty, "nor does an ack of a decision")
        let next = c.ackReceived(txn: TxnID("t1"), from: RM.accounts, rolledBackAttempt: 0, now: 50)
        let expected: [Envelope] = order.map {
            .prepare(rm: $0.rm, PrepareMessage(txnID: TxnID("t1"), stamp: stamp, attempt: 1, sender: n1Sender, branch: $0, participants: allRMs))
        }
        #expect(next.messagesNow == expected)
        #expect(next.recordsToAppend.isEmpty)
        #expect(c.attempt(of: TxnID("t1")) == 1)

        // Votes of attempt 0 arriving late count for nothing; attempt 1's decide.
        #expect(c.voteReceived(.yes, attempt: 0, txn: TxnID("t1"), from: RM.accounts, now: 51).isEmpty)
        var decided = CoordinatorOutput()
        for rm in allRMs { decided = c.voteReceived(.yes, attempt: 1, txn: TxnID("t1"), from: rm, now: 52) }
        #expect(decided.replies == [ClientReply(txnID: TxnID("t1"), status: .committed, attempts: 2)], "the client learns how many attempts it took")
    }

    @Test func theBackoffHoldsTheNextAttemptUntilATickAfterIt() throws {
        var limits = Limits.standard
        limits.retryBackoffInitial = 40
        limits.retryBackoffMax = 40
        var c = Coordinator.fixture(limits: limits)
        _ = try Self.refusedOnce(&c)
        for rm in allRMs { #expect(c.ackReceived(txn: TxnID("t1"), from: rm, rolledBackAttempt: 0, now: 3).isEmpty) }
        #expect(c.tick(now: 3 + 19).isEmpty, "the backoff is at least half its base")
        #expect(c.tick(now: 3 + 41).messagesNow.count == 3)
    }

    @Test func anUnacknowledgedRollbackIsResentAndTheTxnGivesUpAfterTheWindow() throws {
        var c = Coordinator.fixture()
        _ = try Self.refusedOnce(&c)
        _ = c.ackReceived(txn: TxnID("t1"), from: RM.inventory, rolledBackAttempt: 0, now: 3)
        let resent = c.tick(now: 2 + c.limits.decisionRetryInitial)
        #expect(resent.messagesNow == Self.rollbacks(0, to: [RM.orders, RM.accounts]))
        let gaveUp = c.tick(now: c.limits.retryWindow)
        let reason = try #require(gaveUp.replies.first?.abortReason)
        #expect(reason.cause == .contention && reason.text.contains("inventory voted NO: wait-die"))
        #expect(gaveUp.messagesAfterAppend == decisions("t1", .abort), "the final ABORT covers every attempt")
    }

    @Test func theTxnGivesUpAfterAttemptsMaxNamingTheCount() throws {
        var limits = Limits.standard
        limits.attemptsMax = 3
        var c = Coordinator.fixture(limits: limits)
        _ = try c.submit("t1", now: 0)
        var last = CoordinatorOutput()
        for attempt: Attempt in 0..<3 {
            last = c.voteReceived(.no(reason: Self.waitDie), attempt: attempt, txn: TxnID("t1"), from: RM.inventory, now: 10)
            for rm in allRMs { _ = c.ackReceived(txn: TxnID("t1"), from: rm, rolledBackAttempt: attempt, now: 10_000 /* past any backoff */) }
        }
        let reason = try #require(last.replies.first?.abortReason)
        #expect(reason == AbortReason(.contention, "gave up after 3 attempts: inventory voted NO: wait-die: younger than lock holder t0"))
        #expect(c.counters.retries == 2)
    }

    @Test func aBusinessNoIsNeverRetried() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t1", now: 0)
        let out = c.voteReceived(.no(reason: .refused("insufficient stock")), attempt: 0, txn: TxnID("t1"), from: RM.inventory, now: 1)
        #expect(out.replies.first?.abortReason?.cause == .refused)
        #expect(c.counters.retries == 0)
    }
}

/// The participant's side: attempts of one txn, their rollbacks, and late messages of each.
@Suite struct ParticipantAttemptTests {
    let t1 = TxnID("t1")

    func attempt(_ number: Attempt, epoch: Epoch = epoch1) -> PrepareMessage {
        var message = prepareMessage("t1", stamp: 10, epoch: epoch)
        message.attempt = number
        return message
    }

    func rollback(_ number: Attempt, epoch: Epoch = epoch1) -> DecisionMessage {
        DecisionMessage(txnID: t1, outcome: .abort, sender: Sender(partition: 0, epoch: epoch, node: "n1"), rolledBackAttempt: number)
    }

    /// Prepares attempt 0, rolls it back durably, and returns the machine.
    func rolledBackOnce() throws -> ParticipantMachine {
        var rm = ParticipantMachine()
        _ = try rm.prepared(attempt(0))
        let out = rm.decide(rollback(0), now: 5)
        #expect(out.recordsToPersist == [.aborted(txnID: t1, attempt: 0, epoch: epoch1, seenEpoch: epoch1, participants: [RM.inventory, RM.accounts])])
        let durable = rm.recordsDurable(out.recordsToPersist, now: 6)
        #expect(durable.acks == [AckReply(txnID: t1, accepted: true, reason: "", rolledBackAttempt: 0)])
        #expect(rm.locks.lockCount == 0)
        return rm
    }

    @Test func theNextAttemptIsPlannedAfreshAndCommitsOnce() throws {
        var rm = try rolledBackOnce()
        let asked = rm.prepare(attempt(1), now: 7)
        #expect(asked.plans.map(\.txnID) == [t1], "a rollback of attempt 0 leaves attempt 1 free to prepare")
        let plan = stockLogic.planned(asked.plans[0].branch, committed: appleStock)
        guard case .prepared(let prepared) = try #require(rm.planned(t1, plan, now: 8).recordsToPersist.first) else {
            Issue.record("expected a prepared record")
            return
        }
        #expect(prepared.attempt == 1 && prepared.stamp == 10)
        #expect(rm.recordsDurable([.prepared(prepared)], now: 9).votes == [VoteReply(txnID: t1, vote: .yes, attempt: 1)])
        let commit = rm.decide(decisionMessage("t1", .commit), now: 10)
        #expect(commit.recordsToPersist.count == 1)
        guard case .committed(_, let committedAttempt, _, _, _, _, let keys) = try #require(commit.recordsToPersist.first) else {
            Issue.record("expected a commit record")
            return
        }
        #expect(committedAttempt == 1)
        #expect(keys == prepared.keys, "the commit record carries the keys the attempt locked, for the ledger")
    }

    @Test func aLatePrepareOfTheRolledBackAttemptIsRefused() throws {
        var rm = try rolledBackOnce()
        let late = rm.prepare(attempt(0), now: 7)
        #expect(late.plans.isEmpty && late.recordsToPersist.isEmpty)
        #expect(late.votes.map(\.attempt) == [0])
        #expect(late.votes.first.map { $0.vote != .yes } == true)
    }

    @Test func aLateRollbackOfAnEarlierAttemptLeavesTheLaterOneAlone() throws {
        var rm = try rolledBackOnce()
        _ = try rm.prepared(attempt(1), now: 7)
        let late = rm.decide(rollback(0), now: 8)
        #expect(late.recordsToPersist.isEmpty)
        #expect(late.acks == [AckReply(txnID: t1, accepted: true, reason: "", rolledBackAttempt: 0)])
        #expect(rm.preparedCount == 1 && rm.locks.lockCount == 2)
    }

    @Test func aPrepareOfALaterAttemptWhileOneIsHeldIsRefusedForContention() throws {
        var rm = ParticipantMachine()
        _ = try rm.prepared(attempt(0))
        let out = rm.prepare(attempt(1), now: 3)
        #expect(out.votes == [VoteReply(txnID: t1, vote: .no(reason: AbortReason(.contention, "attempt 0 is still held here")), attempt: 1)])
        #expect(rm.preparedCount == 1)
    }

    @Test func aRollbackOfAnAttemptNeverSeenIsRecordedSoItsLatePrepareIsRefused() {
        var rm = ParticipantMachine()
        let out = rm.decide(rollback(2), now: 1)
        #expect(out.recordsToPersist == [.aborted(txnID: t1, attempt: 2, epoch: epoch1, seenEpoch: .zero, participants: [])])
        _ = rm.recordsDurable(out.recordsToPersist, now: 2)
        #expect(rm.prepare(attempt(2), now: 3).plans.isEmpty)
        #expect(rm.prepare(attempt(3), now: 4).plans.map(\.txnID) == [t1], "the next attempt may still prepare")
    }

    @Test func theFinalAbortAfterARollbackIsRecordedSoNoLaterAttemptPrepares() throws {
        var rm = try rolledBackOnce()
        let out = rm.decide(decisionMessage("t1", .abort), now: 7)
        #expect(out.recordsToPersist == [.aborted(txnID: t1, attempt: .max, epoch: epoch1, seenEpoch: epoch1, participants: [])])
        _ = rm.recordsDurable(out.recordsToPersist, now: 8)
        #expect(rm.prepare(attempt(1), now: 9).plans.isEmpty)
    }

    /// dtc-sim seed 1630: a restart lost the raise of a newer leader's PREPARE; the newer
    /// leader's rollback of its own earlier attempt was acknowledged, then the old leader's
    /// rollback of the attempt held was applied.
    @Test func acknowledgingANewerLeadersRollbackOfAnEarlierAttemptFencesTheOlderLeader() throws {
        let epoch2 = Epoch(counter: 2, node: 2)
        var rm = ParticipantMachine()
        let held = PreparedTxn(txnID: t1, stamp: 10, attempt: 3, sender: n1Sender, kind: "reserve", keys: ["stock/apple"], writes: [], participants: [RM.inventory])
        rm.recover(prepared: [held], now: 0)
        #expect(rm.decide(rollback(0, epoch: epoch2), now: 1).acks.map(\.accepted) == [true])
        let stale = rm.decide(rollback(3), now: 2)
        #expect(stale.recordsToPersist.isEmpty && stale.acks.map(\.accepted) == [false])
        #expect(rm.preparedCount == 1)
    }

    @Test func aStaleLeadersRollbackIsRefusedAfterANewerEpochWasSeen() throws {
        var rm = ParticipantMachine()
        let epoch2 = Epoch(counter: 2, node: 2)
        _ = try rm.prepared(attempt(1))
        _ = rm.prepare(attempt(0, epoch: epoch2), now: 2)  // a new leader's first attempt
        let stale = rm.decide(rollback(1), now: 3)
        #expect(stale.recordsToPersist.isEmpty)
        #expect(stale.acks.map(\.accepted) == [false])
    }
}

@Suite struct AttemptFormatTests {
    @Test func entriesAndPreparedTxnsOfTheFormerFormatReadAsTheFirstAttemptOrAFinalAbort() throws {
        // Version 2 layouts, written by hand: no attempt field.
        var commit = ByteWriter()
        commit.write(UInt8(2)); commit.write(UInt8(1)); commit.write(epoch1); commit.write(Epoch.zero); commit.write(UInt32(1)); commit.write(strings: ["a"])
        #expect(try LedgerEntry(decoding: commit.bytes) == LedgerEntry(outcome: .commit, attempt: 0, epoch: epoch1, participants: ["a"]))
        var abort = ByteWriter()
        abort.write(UInt8(2)); abort.write(UInt8(2)); abort.write(epoch1); abort.write(Epoch.zero); abort.write(UInt32(1)); abort.write(strings: [])
        #expect(try LedgerEntry(decoding: abort.bytes).attempt == .max)

        let current = PreparedTxn(txnID: TxnID("t1"), stamp: 7, attempt: 3, sender: n1Sender, kind: "k", keys: ["a"], writes: [], participants: ["x"])
        #expect(try PreparedTxn(decoding: current.encoded()) == current)
        var old = current.encoded()
        old[0] = 2
        let stampEnd = 1 + 4 + 2 + 8  // version, "t1" (length + bytes), stamp
        old.removeSubrange(stampEnd..<stampEnd + 4)
        var expected = current
        expected.attempt = 0
        #expect(try PreparedTxn(decoding: old) == expected)
    }
}
