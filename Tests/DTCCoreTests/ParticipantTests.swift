import Foundation
import Testing

@testable import DTCCore

/// The RM side of 2PC, as transcripts: locks, durable prepare before YES, exactly-once decisions.
@Suite struct ParticipantTests {
    let t1 = TxnID("t1")

    // MARK: - Prepare

    @Test func yesIsVotedOnlyAfterThePreparedRecordIsDurable() throws {
        var rm = ParticipantMachine()
        let message = prepareMessage("t1", stamp: 10)
        let asked = rm.prepare(message, now: 0)
        #expect(asked.reads == [t1: try stockLogic.keys(for: message.branch).sorted()])
        #expect(asked.votes.isEmpty && asked.recordsToPersist.isEmpty)
        #expect(rm.locks.holder(of: "stock/apple") == t1)

        let writes = try stockLogic.planned(message.branch, committed: appleStock).get()
        let planned = rm.planned(t1, .success(writes), now: 1)
        let prepared = PreparedTxn(txnID: t1, stamp: 10, sender: message.sender, kind: "reserve", keys: ["resv/o1", "stock/apple"], writes: writes, participants: [RM.inventory, RM.accounts])
        #expect(planned.recordsToPersist == [.prepared(prepared)])
        #expect(planned.votes.isEmpty, "no YES before the prepared record is durable")
        #expect(rm.prepare(message, now: 1).votes.isEmpty, "a repeated PREPARE does not vote early either")

        let durable = rm.preparedDurable(t1, now: 2)
        #expect(durable.votes == [VoteReply(txnID: t1, vote: .yes)])
        #expect(rm.prepare(message, now: 3).votes == [VoteReply(txnID: t1, vote: .yes)], "a known txn answers its recorded vote")
        #expect(rm.preparedCount == 1)
    }

    @Test func aFailedPlanVotesNoWithTheReasonAndReleasesTheLocks() {
        var rm = ParticipantMachine()
        _ = rm.prepare(prepareMessage("t1", stamp: 10), now: 0)
        let out = rm.planned(t1, .failure("insufficient stock for apple: 1 < 2"), now: 1)
        #expect(out.votes == [VoteReply(txnID: t1, vote: .no(reason: .refused("insufficient stock for apple: 1 < 2")))])
        #expect(out.recordsToPersist.isEmpty)
        #expect(rm.locks.lockCount == 0)
        #expect(rm.stateName(of: t1) == "aborted")
    }

    // MARK: - Decisions

    @Test func commitIsAppliedExactlyOnce() throws {
        var rm = ParticipantMachine()
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10))

        let commit = rm.decide(decisionMessage("t1", .commit), now: 5)
        #expect(commit.recordsToPersist == [.committed(txnID: t1, attempt: 0, writes: prepared.writes, epoch: epoch1, seenEpoch: epoch1, participants: [RM.inventory, RM.accounts], keys: ["resv/o1", "stock/apple"])])
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
        var rm = ParticipantMachine()
        let rollback = rm.decide(decisionMessage("t1", .abort), now: 0)
        #expect(rollback.recordsToPersist == [.aborted(txnID: t1, attempt: .max, epoch: epoch1, seenEpoch: .zero, participants: [])])
        #expect(rollback.acks.isEmpty)
        #expect(rm.decisionDurable(t1, now: 1).acks == [AckReply(txnID: t1, accepted: true, reason: "")])

        let late = rm.prepare(prepareMessage("t1", stamp: 10), now: 2)
        #expect(late.votes.count == 1 && late.votes.first?.vote.noReason != nil)
        #expect(late.reads.isEmpty && late.recordsToPersist.isEmpty)
        #expect(rm.locks.lockCount == 0, "a hanging branch would hold these locks forever")
    }

    @Test func aRollbackWhileThePreparedRecordIsBeingWrittenRunsOnceItIsDurable() throws {
        var rm = ParticipantMachine()
        _ = rm.prepare(prepareMessage("t1", stamp: 10), now: 0)
        _ = rm.planned(t1, stockLogic.planned(prepareMessage("t1", stamp: 10).branch, committed: appleStock), now: 1)
        #expect(rm.decide(decisionMessage("t1", .abort), now: 2) == ParticipantOutput())

        let durable = rm.preparedDurable(t1, now: 3)
        #expect(durable.recordsToPersist == [.aborted(txnID: t1, attempt: .max, epoch: epoch1, seenEpoch: epoch1, participants: [RM.inventory, RM.accounts])])
        #expect(rm.decisionDurable(t1, now: 4).acks == [AckReply(txnID: t1, accepted: true, reason: "")])
        #expect(rm.locks.lockCount == 0)
    }

    @Test func aDecisionFromAStaleEpochIsRefusedAndCounted() throws {
        var rm = ParticipantMachine()
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
        var rm = ParticipantMachine()
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
        var rm = ParticipantMachine()
        let epoch3 = Epoch(counter: 3, node: 1)
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10, epoch: epoch1))
        let takeover = rm.decide(decisionMessage("t1", .commit, epoch: epoch3), now: 5)
        #expect(takeover.recordsToPersist == [.committed(txnID: t1, attempt: 0, writes: prepared.writes, epoch: epoch3, seenEpoch: epoch1, participants: prepared.participants, keys: prepared.keys)])
    }

    @Test func anRMThatIgnoresEpochsLeavesTheStaleDecisionVisibleInItsLedger() throws {
        var rm = ParticipantMachine()
        rm.mutant = .ignoreEpochs
        let epoch2 = Epoch(counter: 2, node: 2)
        let prepared = try rm.prepared(prepareMessage("t1", stamp: 10, epoch: epoch2))
        let stale = rm.decide(decisionMessage("t1", .commit, epoch: epoch1), now: 5)
        #expect(stale.recordsToPersist == [.committed(txnID: t1, attempt: 0, writes: prepared.writes, epoch: epoch1, seenEpoch: epoch2, participants: prepared.participants, keys: prepared.keys)])
        #expect(LedgerEntry(outcome: .commit, epoch: epoch1, seenEpoch: epoch2).isFromStaleEpoch)
    }

    @Test func aLedgerEntryRoundTripsAndGarbageIsRefused() throws {
        let abort = LedgerEntry(outcome: .abort, epoch: Epoch(counter: 7, node: 3), seenEpoch: epoch1, applications: 2, sequence: 9)
        #expect(try LedgerEntry(decoding: abort.encoded()) == abort)
        let entry = LedgerEntry(
            outcome: .commit, attempt: 2, epoch: Epoch(counter: 7, node: 3), seenEpoch: epoch1, participants: ["inventory", "accounts"],
            sequence: 0x0102_0304_0506_0708, keys: ["stock/apple", "resv/o1"])
        let bytes = entry.encoded()
        #expect(try LedgerEntry(decoding: bytes) == entry)
        for length in 0..<bytes.count {
            #expect(throws: RecordDecodingError.self, "prefix of \(length) bytes") { try LedgerEntry(decoding: Array(bytes.prefix(length))) }
        }
        var keyCount = bytes
        keyCount[bytes.count - 4 - 11 - 4 - 7 - 4 + 3] = 3  // the key count's low byte: three keys, two present
        #expect(throws: RecordDecodingError.truncated(at: bytes.count)) { try LedgerEntry(decoding: keyCount) }
        #expect(throws: RecordDecodingError.trailingBytes(at: bytes.count)) { try LedgerEntry(decoding: bytes + [0]) }
        #expect(throws: RecordDecodingError.unsupportedVersion(found: 1, expected: LedgerEntry.formatVersion)) {
            try LedgerEntry(decoding: [1] + Array(bytes.dropFirst()))
        }
        var badOutcome = bytes
        badOutcome[1] = 9
        #expect(throws: RecordDecodingError.badTag(9, at: 1)) { try LedgerEntry(decoding: badOutcome) }
    }

    /// The two examples of docs/participant-protocol.md ("Ledger"), byte for byte: the document
    /// is what other participants implement.
    @Test func theLedgerExamplesOfTheProtocolDocumentAreWhatTheCodecWrites() throws {
        let commit = LedgerEntry(
            outcome: .commit, attempt: 0, epoch: Epoch(counter: 3, node: 1), seenEpoch: Epoch(counter: 3, node: 1),
            participants: ["tickets", "accounts"], sequence: 42, keys: ["booking/b1", "event/concert"])
        let tombstone = LedgerEntry(outcome: .abort, epoch: Epoch(counter: 5, node: 2), sequence: 43)
        let examples = [
            "03 01 00000000 0000000000000003 00000001 0000000000000003 00000001 00000001 00000002 00000007 7469636b657473 00000008 6163636f756e7473 000000000000002a 00000002 0000000a 626f6f6b696e672f6231 0000000d 6576656e742f636f6e63657274",
            "03 02 ffffffff 0000000000000005 00000002 0000000000000000 00000000 00000001 00000000 000000000000002b 00000000",
        ]
        let hex = { (bytes: [UInt8]) in bytes.map { String(format: "%02x", $0) }.joined() }
        #expect(hex(commit.encoded()) == examples[0].filter { $0 != " " })
        #expect(hex(tombstone.encoded()) == examples[1].filter { $0 != " " })
        let repository = PurityTests.coreSources.deletingLastPathComponent().deletingLastPathComponent()
        let document = try String(contentsOf: repository.appendingPathComponent("docs/participant-protocol.md"), encoding: .utf8)
        for example in examples { #expect(document.contains(example), "the document shows \(example.prefix(20))…") }
    }

    @Test func aRollbackAfterACommitIsRefusedAndCounted() throws {
        var rm = ParticipantMachine()
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
        var rm = ParticipantMachine()
        _ = try rm.prepared(prepareMessage("young", stamp: 20, orderID: "o-young"))
        let old = prepareMessage("old", stamp: 10, orderID: "o-old")

        let waiting = rm.prepare(old, now: 1)
        #expect(waiting == ParticipantOutput(), "waits: no read, no vote")
        #expect(rm.stateName(of: TxnID("old")) == "waiting")
        #expect(rm.locks.blocker(of: TxnID("old")) == TxnID("young"))

        _ = rm.decide(decisionMessage("young", .commit), now: 2)
        #expect(rm.stateName(of: TxnID("old")) == "waiting", "the holder's locks stay until its commit is durable")
        let durable = rm.decisionDurable(TxnID("young"), now: 3)
        #expect(durable.reads == [TxnID("old"): try stockLogic.keys(for: old.branch).sorted()])
        #expect(rm.locks.holder(of: "stock/apple") == TxnID("old"))
        #expect(rm.counters.lockWaits == 1 && rm.counters.lockWaitLongestMs == 2, "waited from 1 to the grant at 3")
    }

    @Test func aYoungerRequesterVotesNoAtOnce() throws {
        var rm = ParticipantMachine()
        _ = try rm.prepared(prepareMessage("old", stamp: 10, orderID: "o-old"))
        let out = rm.prepare(prepareMessage("young", stamp: 20, orderID: "o-young"), now: 1)
        #expect(out.reads.isEmpty)
        #expect(out.votes.map(\.txnID) == [TxnID("young")])
        #expect(out.votes.first?.vote.noReason?.contains("wait-die") == true)
        #expect(rm.locks.holder(of: "stock/apple") == TxnID("old"))
    }

    @Test func aLockWaitPastItsTimeoutVotesNo() throws {
        var rm = ParticipantMachine()
        _ = try rm.prepared(prepareMessage("young", stamp: 20, orderID: "o-young"))
        _ = rm.prepare(prepareMessage("old", stamp: 10, orderID: "o-old"), now: 100)

        #expect(rm.tick(now: 100 + rm.limits.lockWaitTimeout - 1).votes.isEmpty)
        let out = rm.tick(now: 100 + rm.limits.lockWaitTimeout)
        #expect(out.votes == [VoteReply(txnID: TxnID("old"), vote: .no(reason: AbortReason(.contention, "lock wait timeout")))])
        #expect(rm.locks.waiterCount == 0)
        #expect(rm.counters.lockWaits == 1 && rm.counters.lockWaitLongestMs == rm.limits.lockWaitTimeout, "the wait is counted, and how long it was")

        // When the holder finishes, the timed-out txn is not woken up to read.
        _ = rm.decide(decisionMessage("young", .abort), now: 700)
        #expect(rm.decisionDurable(TxnID("young"), now: 701).reads.isEmpty)
    }

    // MARK: - Restart and termination

    @Test func recoveryRetakesLocksAndAnswersFinishedTxnsFromTheLedger() throws {
        var before = ParticipantMachine()
        let prepared = try before.prepared(prepareMessage("t1", stamp: 10))

        var rm = ParticipantMachine()
        rm.recover(prepared: [prepared], now: 0)
        #expect(rm.locks.holder(of: "stock/apple") == t1)

        let younger = rm.prepare(prepareMessage("t2", stamp: 20, orderID: "o2"), now: 1)
        #expect(younger.votes.first?.vote.noReason?.contains("wait-die") == true)

        let ledger = [TxnID("t0"): LedgerEntry(outcome: .commit, epoch: epoch1)]
        let repeated = rm.decide(decisionMessage("t0", .commit), now: 2, ledger: ledger)
        #expect(repeated.acks == [AckReply(txnID: TxnID("t0"), accepted: true, reason: "")])
        #expect(repeated.recordsToPersist.isEmpty, "a finished txn is not applied twice")

        #expect(rm.decide(decisionMessage("t1", .commit), now: 3).recordsToPersist
            == [.committed(txnID: t1, attempt: 0, writes: prepared.writes, epoch: epoch1, seenEpoch: epoch1, participants: prepared.participants, keys: prepared.keys)])
    }

    @Test func aTxnPreparedTooLongAsksForItsOutcomeEveryInquiryPeriod() throws {
        var rm = ParticipantMachine(inquiryAfter: 3_000)
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
        var rm = ParticipantMachine(inquiryAfter: 10)
        var generator = SplitMix64(seed: 7)
        let ids = (0..<40).map { "t\($0)" }.shuffled(using: &generator)
        for (index, id) in ids.enumerated() {
            let message = prepareMessage(id, stamp: StartStamp(index), orderID: "o-\(id)", sku: "sku-\(id)")
            _ = try rm.prepared(message, committed: ["stock/sku-\(id)": stock(5)])
        }
        let reported = rm.tick(now: 10).inquiries.map(\.txnID)
        #expect(reported == ids.map(TxnID.init).sorted())
    }

    // MARK: - Finished txns, bounded memory and the participant's own mistakes

    @Test func aNewerLeadersPrepareFencesAFinishedTxnToo() {
        // Found by dtc-sim seed 507: a NO-voted txn kept the epoch of its first PREPARE, so a
        // ROLLBACK from a fenced leader was acknowledged after a newer leader had asked.
        var rm = ParticipantMachine()
        _ = rm.prepare(prepareMessage("t1", stamp: 10), now: 0)
        #expect(rm.planned(t1, .failure("no"), now: 1).votes.first?.vote.noReason == "no")
        let epoch2 = Epoch(counter: 2, node: 2)
        #expect(rm.prepare(prepareMessage("t1", stamp: 10, epoch: epoch2), now: 2).votes.first?.vote.noReason == "no")
        let stale = rm.decide(decisionMessage("t1", .abort, epoch: epoch1), now: 3)
        #expect(stale.acks.map(\.accepted) == [false])
        #expect(rm.counters.staleEpochRefusals == 1)
        #expect(rm.decide(decisionMessage("t1", .abort, epoch: epoch2), now: 4).acks.map(\.accepted) == [true])
    }

    @Test func acknowledgingANewerLeadersDecisionFencesTheOlderLeadersRepeats() throws {
        // Found by dtc-sim seed 75 (and 15): a finished txn acknowledged the newer leader's
        // COMMIT but kept its old epoch, so a late repeat from the fenced leader was accepted.
        var rm = ParticipantMachine()
        _ = try rm.prepared(prepareMessage("t1", stamp: 10))
        _ = rm.decide(decisionMessage("t1", .commit), now: 1)
        _ = rm.decisionDurable(t1, now: 2)
        let epoch2 = Epoch(counter: 2, node: 3)
        #expect(rm.decide(decisionMessage("t1", .commit, epoch: epoch2), now: 3).acks.map(\.accepted) == [true])
        let late = rm.decide(decisionMessage("t1", .commit, epoch: epoch1), now: 4)
        #expect(late.acks.map(\.accepted) == [false])
        #expect(late.acks.first?.reason.contains("stale epoch") == true)
    }

    @Test func finishedTxnsBeyondTheCacheAreAnsweredFromTheLedgerNotForgotten() throws {
        var limits = Limits()
        limits.finishedTxnsCachedMax = 2
        var rm = ParticipantMachine(limits: limits)
        var ledger: [TxnID: LedgerEntry] = [:]
        for index in 0..<5 {
            let id = TxnID("t\(index)")
            _ = try rm.prepared(prepareMessage(id.rawValue, stamp: StartStamp(index), orderID: "o\(index)"), committed: appleStock)
            _ = rm.decide(decisionMessage(id.rawValue, .commit), now: 1)
            _ = rm.decisionDurable(id, now: 2)
            ledger[id] = LedgerEntry(outcome: .commit, epoch: epoch1)
        }
        #expect(rm.cachedFinishedCount == 2, "memory holds the cache, not every txn")
        #expect(rm.stateName(of: TxnID("t0")) == nil)

        let repeated = rm.decide(decisionMessage("t0", .commit), now: 3, ledger: ledger)
        #expect(repeated.acks == [AckReply(txnID: TxnID("t0"), accepted: true, reason: "")])
        #expect(repeated.recordsToPersist.isEmpty, "a commit found in the ledger is not applied again")
        #expect(rm.counters.ledgerLookups > 0)
        let late = rm.prepare(prepareMessage("t0", stamp: 0), now: 4, ledger: ledger)
        #expect(late.votes == [VoteReply(txnID: TxnID("t0"), vote: .yes)] && late.plans.isEmpty)
        let contradiction = rm.decide(decisionMessage("t1", .abort), now: 5, ledger: ledger)
        #expect(contradiction.acks.map(\.accepted) == [false] && contradiction.recordsToPersist.isEmpty)
    }

    @Test func logicThatLocksNoKeysOrWritesOutsideItsLocksVotesNoAndHoldsNothing() {
        var rm = ParticipantMachine()
        let none = rm.prepare(prepareMessage("t1", stamp: 1), keys: .success([]), replyTo: coordinatorRoute, now: 0) { _ in nil }
        #expect(none.votes.first?.vote.noReason?.contains("locks no keys") == true)
        let undecodable = rm.prepare(prepareMessage("t2", stamp: 2), keys: .failure("cannot decode"), replyTo: coordinatorRoute, now: 0) { _ in nil }
        #expect(undecodable.votes.first?.vote.noReason == "cannot decode")

        _ = rm.prepare(prepareMessage("t3", stamp: 3), now: 0)
        let stray = rm.planned(TxnID("t3"), .success([Write(key: "stock/pear", value: [1])]), now: 1)
        #expect(stray.votes.first?.vote.noReason?.contains("writes key 'stock/pear'") == true)
        #expect(stray.recordsToPersist.isEmpty)
        #expect(rm.locks.lockCount == 0 && rm.activeCount == 0)
    }

    @Test func eachVoteGoesToTheStreamsThatAskedOnceEach() throws {
        var rm = ParticipantMachine()
        let message = prepareMessage("t1", stamp: 10)
        let first = rm.prepare(message, keys: stockLogic.lockKeys(for: message.branch), replyTo: 7, now: 0) { _ in nil }
        _ = rm.prepare(message, keys: stockLogic.lockKeys(for: message.branch), replyTo: 8, now: 0) { _ in nil }
        _ = rm.prepare(message, keys: stockLogic.lockKeys(for: message.branch), replyTo: 7, now: 0) { _ in nil }
        _ = rm.planned(t1, stockLogic.planned(first.plans[0].branch, committed: appleStock), now: 1)
        let durable = rm.preparedDurable(t1, now: 2)
        #expect(durable.replies.map(\.route) == [7, 8])
    }
}
