import Testing

@testable import DTCCore

/// The RM side of 2PC, as transcripts: locks, durable prepare before YES, exactly-once decisions.
@Suite struct ParticipantTests {
    let t1 = TxnID("t1")

    // MARK: - Prepare

    @Test func yesIsVotedOnlyAfterThePreparedRecordIsDurable() throws {
        var rm = Participant()
        let message = prepareMessage("t1", stamp: 10)
        let asked = rm.prepare(message, now: 0)
        #expect(asked.reads == [t1: ServiceLogic.keys(of: message.branch.op)])
        #expect(asked.votes.isEmpty && asked.recordsToPersist.isEmpty)
        #expect(rm.locks.holder(of: StateKey.stock("apple")) == t1)

        let writes = try ServiceLogic.plan(message.branch.op, committed: appleStock).get()
        let planned = rm.planned(t1, .success(writes), now: 1)
        let prepared = PreparedTxn(txnID: t1, stamp: 10, sender: message.sender, op: message.branch.op, writes: writes)
        #expect(planned.recordsToPersist == [.prepared(prepared)])
        #expect(planned.votes.isEmpty, "no YES before the prepared record is durable")
        #expect(rm.prepare(message, now: 1).votes.isEmpty, "a repeated PREPARE does not vote early either")

        let durable = rm.preparedDurable(t1, now: 2)
        #expect(durable.votes == [VoteReply(txnID: t1, vote: .yes)])
        #expect(rm.prepare(message, now: 3).votes == [VoteReply(txnID: t1, vote: .yes)], "a known txn answers its recorded vote")
        #expect(rm.preparedCount == 1)
    }

    @Test func aFailedPlanVotesNoWithTheReasonAndReleasesTheLocks() {
        var rm = Participant()
        _ = rm.prepare(prepareMessage("t1", stamp: 10), now: 0)
        let out = rm.planned(t1, .failure("insufficient stock for apple: 1 < 2"), now: 1)
        #expect(out.votes == [VoteReply(txnID: t1, vote: .no(reason: "insufficient stock for apple: 1 < 2"))])
        #expect(out.recordsToPersist.isEmpty)
        #expect(rm.locks.lockCount == 0)
        #expect(rm.stateName(of: t1) == "aborted")
    }

    // MARK: - Decisions

    @Test func commitIsAppliedExactlyOnce() throws {
        var rm = Participant()
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10))

        let commit = rm.decide(decisionMessage("t1", .commit), now: 5)
        #expect(commit.recordsToPersist == [.committed(txnID: t1, writes: prepared.writes, epoch: epoch1, seenEpoch: epoch1)])
        #expect(commit.acks.isEmpty, "no ack before the commit is durable")
        #expect(rm.decide(decisionMessage("t1", .commit), now: 6) == ParticipantOutput(), "a repeat while applying waits")
        #expect(rm.locks.lockCount == 2, "locks are held until the commit is durable")

        let durable = rm.decisionDurable(t1, now: 7)
        #expect(durable.acks == [AckReply(txnID: t1, accepted: true, reason: "")])
        #expect(rm.locks.lockCount == 0)

        let repeated = rm.decide(decisionMessage("t1", .commit), now: 8)
        #expect(repeated.acks == [AckReply(txnID: t1, accepted: true, reason: "")])
        #expect(repeated.recordsToPersist.isEmpty)
        #expect(rm.counters.committed == 1)
    }

    @Test func aRollbackOfAnUnknownTxnLeavesATombstoneThatRefusesALatePrepare() {
        var rm = Participant()
        let rollback = rm.decide(decisionMessage("t1", .abort), now: 0)
        #expect(rollback.recordsToPersist == [.aborted(txnID: t1, epoch: epoch1, seenEpoch: .zero)])
        #expect(rollback.acks.isEmpty)
        #expect(rm.decisionDurable(t1, now: 1).acks == [AckReply(txnID: t1, accepted: true, reason: "")])

        let late = rm.prepare(prepareMessage("t1", stamp: 10), now: 2)
        #expect(late.votes.count == 1 && late.votes.first?.vote.noReason != nil)
        #expect(late.reads.isEmpty && late.recordsToPersist.isEmpty)
        #expect(rm.locks.lockCount == 0, "a hanging branch would hold these locks forever")
    }

    @Test func aRollbackWhileThePreparedRecordIsBeingWrittenRunsOnceItIsDurable() throws {
        var rm = Participant()
        _ = rm.prepare(prepareMessage("t1", stamp: 10), now: 0)
        _ = rm.planned(t1, ServiceLogic.plan(prepareMessage("t1", stamp: 10).branch.op, committed: appleStock), now: 1)
        #expect(rm.decide(decisionMessage("t1", .abort), now: 2) == ParticipantOutput())

        let durable = rm.preparedDurable(t1, now: 3)
        #expect(durable.recordsToPersist == [.aborted(txnID: t1, epoch: epoch1, seenEpoch: epoch1)])
        #expect(rm.decisionDurable(t1, now: 4).acks == [AckReply(txnID: t1, accepted: true, reason: "")])
        #expect(rm.locks.lockCount == 0)
    }

    @Test func aDecisionFromAStaleEpochIsRefusedAndCounted() throws {
        var rm = Participant()
        let epoch2 = Epoch(counter: 2, node: 2)
        _ = try rm.prepared(prepareMessage("t1", stamp: 10, epoch: epoch2))

        let stale = rm.decide(decisionMessage("t1", .abort, epoch: epoch1), now: 5)
        #expect(stale.acks.map(\.accepted) == [false])
        #expect(stale.acks.first?.reason.contains("stale epoch") == true)
        #expect(stale.recordsToPersist.isEmpty)
        #expect(rm.counters.staleEpochRefusals == 1)
        #expect(rm.stateName(of: t1) == "prepared")

        let current = rm.decide(decisionMessage("t1", .commit, epoch: epoch2), now: 6)
        #expect(current.recordsToPersist.count == 1)
    }

    @Test func aRepeatedPrepareFromANewerLeaderFencesDecisionsFromOlderOnes() throws {
        var rm = Participant()
        _ = try rm.prepared(prepareMessage("t1", stamp: 10, epoch: epoch1))
        let epoch2 = Epoch(counter: 2, node: 2)
        let again = rm.prepare(prepareMessage("t1", stamp: 10, epoch: epoch2), now: 3)
        #expect(again.votes == [VoteReply(txnID: t1, vote: .yes)])

        let stale = rm.decide(decisionMessage("t1", .commit, epoch: epoch1), now: 5)
        #expect(stale.acks.map(\.accepted) == [false])
        #expect(stale.recordsToPersist.isEmpty)
        #expect(rm.decide(decisionMessage("t1", .commit, epoch: epoch2), now: 6).recordsToPersist.count == 1)
    }

    @Test func theLedgerRecordOfADecisionNamesTheHighestEpochSeenBeforeIt() throws {
        var rm = Participant()
        let epoch3 = Epoch(counter: 3, node: 1)
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10, epoch: epoch1))
        let takeover = rm.decide(decisionMessage("t1", .commit, epoch: epoch3), now: 5)
        #expect(takeover.recordsToPersist == [.committed(txnID: t1, writes: prepared.writes, epoch: epoch3, seenEpoch: epoch1)])
    }

    @Test func anRMThatIgnoresEpochsLeavesTheStaleDecisionVisibleInItsLedger() throws {
        var rm = Participant()
        rm.mutant = .ignoreEpochs
        let epoch2 = Epoch(counter: 2, node: 2)
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10, epoch: epoch2))
        let stale = rm.decide(decisionMessage("t1", .commit, epoch: epoch1), now: 5)
        #expect(stale.recordsToPersist == [.committed(txnID: t1, writes: prepared.writes, epoch: epoch1, seenEpoch: epoch2)])
        #expect(LedgerEntry(outcome: .commit, epoch: epoch1, seenEpoch: epoch2).isFromStaleEpoch)
    }

    @Test func aLedgerEntryRoundTripsAndGarbageIsRefused() throws {
        let entry = LedgerEntry(outcome: .abort, epoch: Epoch(counter: 7, node: 3), seenEpoch: epoch1, applications: 2)
        let bytes = entry.encoded()
        #expect(try LedgerEntry(decoding: bytes) == entry)
        for length in 0..<bytes.count {
            #expect(throws: RecordDecodingError.self, "prefix of \(length) bytes") { try LedgerEntry(decoding: Array(bytes.prefix(length))) }
        }
        #expect(throws: RecordDecodingError.trailingBytes(at: bytes.count)) { try LedgerEntry(decoding: bytes + [0]) }
        #expect(throws: RecordDecodingError.badTag(1, at: 0)) { try LedgerEntry(decoding: [1] + Array(bytes.dropFirst())) }
        var badOutcome = bytes
        badOutcome[1] = 9
        #expect(throws: RecordDecodingError.badTag(9, at: 1)) { try LedgerEntry(decoding: badOutcome) }
    }

    @Test func aRollbackAfterACommitIsRefusedAndCounted() throws {
        var rm = Participant()
        _ = try rm.prepared(prepareMessage("t1", stamp: 10))
        _ = rm.decide(decisionMessage("t1", .commit), now: 1)
        _ = rm.decisionDurable(t1, now: 2)

        let conflicting = rm.decide(decisionMessage("t1", .abort), now: 3)
        #expect(conflicting.acks.map(\.accepted) == [false])
        #expect(conflicting.recordsToPersist.isEmpty)
        #expect(rm.counters.conflictingDecisions == 1)
        #expect(rm.stateName(of: t1) == "committed")
    }

    // MARK: - Wait-die

    @Test func anOlderTxnWaitsForAYoungerHolderAndReadsOnceTheHolderCommitted() throws {
        var rm = Participant()
        _ = try rm.prepared(prepareMessage("young", stamp: 20, orderID: "o-young"))
        let old = prepareMessage("old", stamp: 10, orderID: "o-old")

        let waiting = rm.prepare(old, now: 1)
        #expect(waiting == ParticipantOutput(), "waits: no read, no vote")
        #expect(rm.stateName(of: TxnID("old")) == "waiting")
        #expect(rm.locks.blocker(of: TxnID("old")) == TxnID("young"))

        _ = rm.decide(decisionMessage("young", .commit), now: 2)
        #expect(rm.stateName(of: TxnID("old")) == "waiting", "the holder's locks stay until its commit is durable")
        let durable = rm.decisionDurable(TxnID("young"), now: 3)
        #expect(durable.reads == [TxnID("old"): ServiceLogic.keys(of: old.branch.op)])
        #expect(rm.locks.holder(of: StateKey.stock("apple")) == TxnID("old"))
    }

    @Test func aYoungerRequesterVotesNoAtOnce() throws {
        var rm = Participant()
        _ = try rm.prepared(prepareMessage("old", stamp: 10, orderID: "o-old"))
        let out = rm.prepare(prepareMessage("young", stamp: 20, orderID: "o-young"), now: 1)
        #expect(out.reads.isEmpty)
        #expect(out.votes.map(\.txnID) == [TxnID("young")])
        #expect(out.votes.first?.vote.noReason?.contains("wait-die") == true)
        #expect(rm.locks.holder(of: StateKey.stock("apple")) == TxnID("old"))
    }

    @Test func aLockWaitPastItsTimeoutVotesNo() throws {
        var rm = Participant()
        _ = try rm.prepared(prepareMessage("young", stamp: 20, orderID: "o-young"))
        _ = rm.prepare(prepareMessage("old", stamp: 10, orderID: "o-old"), now: 100)

        #expect(rm.tick(now: 100 + rm.limits.lockWaitTimeout - 1).votes.isEmpty)
        let out = rm.tick(now: 100 + rm.limits.lockWaitTimeout)
        #expect(out.votes == [VoteReply(txnID: TxnID("old"), vote: .no(reason: "lock wait timeout"))])
        #expect(rm.locks.waiterCount == 0)

        // When the holder finishes, the timed-out txn is not woken up to read.
        _ = rm.decide(decisionMessage("young", .abort), now: 700)
        #expect(rm.decisionDurable(TxnID("young"), now: 701).reads.isEmpty)
    }

    // MARK: - Restart and termination

    @Test func recoveryRetakesLocksAndRemembersFinishedTxns() throws {
        var before = Participant()
        let prepared = try before.prepared(prepareMessage("t1", stamp: 10))

        var rm = Participant()
        rm.recover(prepared: [prepared], finished: [(TxnID("t0"), .commit)], now: 0)
        #expect(rm.locks.holder(of: StateKey.stock("apple")) == t1)

        let younger = rm.prepare(prepareMessage("t2", stamp: 20, orderID: "o2"), now: 1)
        #expect(younger.votes.first?.vote.noReason?.contains("wait-die") == true)

        let repeated = rm.decide(decisionMessage("t0", .commit), now: 2)
        #expect(repeated.acks == [AckReply(txnID: TxnID("t0"), accepted: true, reason: "")])
        #expect(repeated.recordsToPersist.isEmpty, "a finished txn is not applied twice")

        #expect(rm.decide(decisionMessage("t1", .commit), now: 3).recordsToPersist
            == [.committed(txnID: t1, writes: prepared.writes, epoch: epoch1, seenEpoch: epoch1)])
    }

    @Test func aTxnPreparedTooLongAsksForItsOutcomeEveryInquiryPeriod() throws {
        var rm = Participant(inquiryAfter: 3_000)
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10), now: 1_000)

        #expect(rm.tick(now: 3_999).inquiries.isEmpty)
        #expect(rm.tick(now: 4_000).inquiries == [prepared])
        #expect(rm.tick(now: 4_001).inquiries.isEmpty, "asked again only after another period")
        #expect(rm.tick(now: 7_000).inquiries == [prepared])

        _ = rm.decide(decisionMessage("t1", .commit), now: 7_001)
        _ = rm.decisionDurable(t1, now: 7_002)
        #expect(rm.tick(now: 20_000).inquiries.isEmpty)
    }

    @Test func tickReportsInTxnIDOrderSoASeedReplaysTheSameWay() throws {
        var rm = Participant(inquiryAfter: 10)
        var generator = SplitMix64(seed: 7)
        let ids = (0..<40).map { "t\($0)" }.shuffled(using: &generator)
        for (index, id) in ids.enumerated() {
            let message = prepareMessage(id, stamp: StartStamp(index), orderID: "o-\(id)", sku: "sku-\(id)")
            _ = try rm.prepared(message, committed: [StateKey.stock("sku-\(id)"): .count(5)])
        }
        let reported = rm.tick(now: 10).inquiries.map(\.txnID)
        #expect(reported == ids.map(TxnID.init).sorted())
    }
}

/// The services' business rules, as pure functions.
@Suite struct ServiceLogicTests {
    @Test func aReservationTakesStockAndRecordsItself() {
        let plan = ServiceLogic.plan(.reserve(orderID: "o1", sku: "apple", qty: 3), committed: appleStock)
        #expect(plan == .success([
            Write(key: "stock/apple", value: .count(7)),
            Write(key: "resv/o1", value: .reservation(sku: "apple", qty: 3)),
        ]))
    }

    @Test func aDebitTakesMoneyAndRecordsItself() {
        let plan = ServiceLogic.plan(.debit(orderID: "o1", userID: "ada", amount: 300), committed: ["bal/ada": .count(1_000)])
        #expect(plan == .success([
            Write(key: "bal/ada", value: .count(700)),
            Write(key: "debit/o1", value: .debit(userID: "ada", amount: 300)),
        ]))
    }

    @Test func anOrderIsCreatedOnce() {
        let op = Operation.createOrder(orderID: "o1", userID: "ada", sku: "apple", qty: 2, amount: 300)
        #expect(ServiceLogic.plan(op, committed: [:]) == .success([
            Write(key: "order/o1", value: .order(userID: "ada", sku: "apple", qty: 2, amount: 300))
        ]))
        let existing: [String: StateValue] = ["order/o1": .order(userID: "bob", sku: "pear", qty: 1, amount: 1)]
        #expect(refusal(ServiceLogic.plan(op, committed: existing))?.contains("already exists") == true)
    }

    @Test func reservationsAreRefusedWithAReason() {
        let reserve = Operation.reserve(orderID: "o1", sku: "apple", qty: 11)
        #expect(refusal(ServiceLogic.plan(reserve, committed: appleStock))?.contains("insufficient stock") == true)
        #expect(refusal(ServiceLogic.plan(reserve, committed: [:]))?.contains("unknown sku apple") == true)
        let reserved = appleStock.merging(["resv/o1": .reservation(sku: "apple", qty: 1)]) { $1 }
        let again = Operation.reserve(orderID: "o1", sku: "apple", qty: 1)
        #expect(refusal(ServiceLogic.plan(again, committed: reserved))?.contains("already has a reservation") == true)
        // Exactly the stock on hand is enough.
        #expect(refusal(ServiceLogic.plan(.reserve(orderID: "o1", sku: "apple", qty: 10), committed: appleStock)) == nil)
    }

    @Test func debitsAreRefusedWithAReason() {
        let debit = Operation.debit(orderID: "o1", userID: "ada", amount: 500)
        #expect(refusal(ServiceLogic.plan(debit, committed: ["bal/ada": .count(499)]))?.contains("insufficient balance") == true)
        #expect(refusal(ServiceLogic.plan(debit, committed: [:]))?.contains("unknown user ada") == true)
        let debited: [String: StateValue] = ["bal/ada": .count(1_000), "debit/o1": .debit(userID: "ada", amount: 1)]
        #expect(refusal(ServiceLogic.plan(debit, committed: debited))?.contains("already debited") == true)
    }

    @Test func theLockedKeysAreTheKeysThePlanReadsAndWrites() {
        for branch in order {
            let keys = Set(ServiceLogic.keys(of: branch.op))
            let committed: [String: StateValue] = ["stock/apple": .count(10), "bal/ada": .count(1_000)]
            let writes = (try? ServiceLogic.plan(branch.op, committed: committed).get()) ?? []
            #expect(!writes.isEmpty)
            #expect(Set(writes.map(\.key)).isSubset(of: keys), "\(branch.op.name) writes outside its locks")
        }
    }

    private func refusal(_ plan: Result<[Write], PlanRefusal>) -> String? {
        if case .failure(let refusal) = plan { return refusal.reason }
        return nil
    }
}
