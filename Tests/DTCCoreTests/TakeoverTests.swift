import Testing

@testable import DTCCore

/// Failover, as transcripts: a partition's rows (what a quorum of its replica group returned)
/// go into `takeOver`, and what comes out must keep every decision (DESIGN.md, "Failover").
@Suite struct TakeoverTests {
    // MARK: - TxnRow

    @Test func applyingStartDecisionAndEndBuildsTheRow() {
        var row = TxnRow(txnID: TxnID("t1"))
        row.apply(startRecord("t1", stamp: 77).record)
        #expect(row.branches == order && row.stamp == 77)
        #expect(row.decision == nil && !row.isEnded)

        row.apply(decisionRecord("t1", .commit, epoch: epoch1).record)
        #expect(row.decision == TxnRow.Decided(outcome: .commit, reason: .none, epoch: epoch1))
        #expect(!row.isEnded)

        row.apply(endRecord("t1").record)
        #expect(row.isEnded)
        #expect(row.branches == order && row.stamp == 77)
        #expect(row.records == [startRecord("t1", stamp: 77).record, decisionRecord("t1", .commit).record, endRecord("t1").record])
    }

    @Test func aSecondStartDoesNotReplaceTheFirstOnesBranchesOrStamp() {
        var row = TxnRow(txnID: TxnID("t1"))
        row.apply(startRecord("t1", stamp: 77).record)
        row.apply(startRecord("t1", stamp: 99, branches: [.accounts], epoch: epoch2).record)
        #expect(row.branches == order && row.stamp == 77)
    }

    @Test func aDecisionAtAHigherEpochReplacesALowerOneAndNeverTheOtherWayRound() {
        var row = TxnRow(txnID: TxnID("t1"))
        row.apply(decisionRecord("t1", .commit, epoch: epoch1).record)
        row.apply(decisionRecord("t1", .abort, reason: AbortReason(.leaderChanged, "leader changed"), epoch: epoch2).record)
        #expect(row.decision == TxnRow.Decided(outcome: .abort, reason: AbortReason(.leaderChanged, "leader changed"), epoch: epoch2))

        var other = TxnRow(txnID: TxnID("t1"))
        other.apply(decisionRecord("t1", .abort, reason: AbortReason(.leaderChanged, "leader changed"), epoch: epoch2).record)
        other.apply(decisionRecord("t1", .commit, epoch: epoch1).record)
        #expect(other.decision == TxnRow.Decided(outcome: .abort, reason: AbortReason(.leaderChanged, "leader changed"), epoch: epoch2))

        // The same holds when the lower decision arrives by merge.
        var lower = TxnRow(txnID: TxnID("t1"))
        lower.apply(decisionRecord("t1", .commit, epoch: epoch1).record)
        other.merge(lower)
        #expect(other.decision?.epoch == epoch2 && other.decision?.outcome == .abort)
        lower.merge(other)
        #expect(lower.decision?.epoch == epoch2 && lower.decision?.outcome == .abort)
    }

    @Test func mergingARowWithBranchesOnlyAndARowWithADecisionOnlyGivesBoth() {
        var started = TxnRow(txnID: TxnID("t1"))
        started.apply(startRecord("t1", stamp: 77).record)
        var decided = TxnRow(txnID: TxnID("t1"))
        decided.apply(decisionRecord("t1", .commit).record)

        var a = started
        a.merge(decided)
        var b = decided
        b.merge(started)
        for merged in [a, b] {
            #expect(merged.branches == order && merged.stamp == 77)
            #expect(merged.decision == TxnRow.Decided(outcome: .commit, reason: .none, epoch: epoch1))
            #expect(!merged.isEnded)
        }
        #expect(a == b, "merge is symmetric here")
    }

    @Test func endIsStickyUnderApplyAndMerge() {
        var ended = TxnRow(txnID: TxnID("t1"))
        ended.apply(endRecord("t1").record)
        ended.apply(startRecord("t1", stamp: 77).record)
        ended.apply(decisionRecord("t1", .commit, epoch: epoch2).record)
        #expect(ended.isEnded)

        ended.merge(TxnRow(txnID: TxnID("t1")))
        #expect(ended.isEnded, "a member that never saw END does not undo it")

        var fresh = TxnRow(txnID: TxnID("t1"))
        fresh.merge(ended)
        #expect(fresh.isEnded)
    }

    @Test(arguments: [
        TxnRow(txnID: TxnID("empty")),
        row("started", stamp: 0xDEAD_BEEF_0001, branches: order),
        row("committed", stamp: 5, branches: [.inventory, .accounts], decision: (.commit, "", Epoch(counter: 7, node: 3))),
        row("aborted", stamp: 6, branches: order, decision: (.abort, "orders voted NO: dup ✓", epoch2), ended: true),
        row("tombstone", decision: (.abort, "unknown to the coordinator (presumed abort)", epoch1)),
    ])
    func aRowSurvivesEncodeAndDecodeUnchanged(_ original: TxnRow) throws {
        let decoded = try TxnRow(decoding: original.encoded())
        #expect(decoded == original)
        // The END flag can be read without decoding (a follower skips ENDs it holds).
        #expect(TxnRow.isEnded(encoded: original.encoded()) == original.isEnded)
    }

    @Test func aDecisionOrEndAppliedToAnEncodedRowIsByteForByteWhatDecodingWouldGive() throws {
        let rows = [
            TxnRow(txnID: TxnID("empty")),
            row("started", stamp: 0xDEAD_BEEF_0001, branches: order),
            row("committed", stamp: 5, branches: [.inventory, .accounts], decision: (.commit, "", Epoch(counter: 7, node: 3))),
            row("aborted", stamp: 6, branches: order, decision: (.abort, "orders voted NO: dup ✓", epoch2), ended: true),
            row("tombstone", decision: (.abort, "unknown to the coordinator (presumed abort)", epoch1)),
        ]
        var fast = 0
        for original in rows {
            let records: [LogRecord] = [
                .decision(txnID: original.txnID, outcome: .commit, reason: AbortReason(.leaderChanged, ""), epoch: epoch2),
                .decision(txnID: original.txnID, outcome: .abort, reason: .refused("stock ✓ short"), epoch: epoch1),
                .end(txnID: original.txnID),
            ]
            for record in records {
                guard let applied = TxnRow.applying(record, toEncoded: original.encoded()) else { continue }
                // A row that holds its END is left as it is: a catch-up repeats decisions and ENDs.
                guard !original.isEnded else {
                    #expect(applied == original.encoded(), "\(original.txnID) + \(record)")
                    continue
                }
                var slow = original
                slow.apply(record)
                #expect(applied == slow.encoded(), "\(original.txnID) + \(record)")
                fast += 1
            }
        }
        // The common path takes the shortcut: a decision on a started row, an END on any row.
        #expect(TxnRow.applying(rows[2].records[1], toEncoded: rows[1].encoded()) != nil)
        #expect(fast >= rows.count + 2)
        #expect(TxnRow.applying(.start(txnID: TxnID("started"), epoch: epoch1, stamp: 1, branches: order), toEncoded: rows[1].encoded()) == nil)
        // A row that does not parse takes the slow path, which reports it.
        #expect(TxnRow.applying(rows[2].records[1], toEncoded: Array(rows[1].encoded().dropLast(3))) == nil)
    }

    @Test func aTruncatedRowIsAnErrorNotAGuess() {
        let bytes = row("t1", stamp: 5, branches: order, decision: (.commit, "", epoch1), ended: true).encoded()
        #expect(throws: RecordDecodingError.self) { try TxnRow(decoding: Array(bytes.dropLast())) }
    }

    @Test func mergeRowsMergesEachTxnAcrossMembersAndSortsByTxnID() {
        // Member A has every START (START is replicated lazily), member B the decisions and END.
        let memberA = [row("t3", stamp: 3, branches: order), row("t1", stamp: 1, branches: order), row("t2", stamp: 2, branches: [.accounts])]
        let memberB = [
            row("t2", decision: (.commit, "", epoch1), ended: true),
            row("t1", decision: (.abort, "accounts voted NO: broke", epoch1)),
            row("t0", decision: (.abort, "unknown to the coordinator (presumed abort)", epoch1)),
        ]
        let merged = mergeRows(memberA + memberB)
        #expect(merged.map(\.txnID.rawValue) == ["t0", "t1", "t2", "t3"])
        #expect(merged == [
            row("t0", decision: (.abort, "unknown to the coordinator (presumed abort)", epoch1)),
            row("t1", stamp: 1, branches: order, decision: (.abort, "accounts voted NO: broke", epoch1)),
            row("t2", stamp: 2, branches: [.accounts], decision: (.commit, "", epoch1), ended: true),
            row("t3", stamp: 3, branches: order),
        ])
        #expect(mergeRows(memberB + memberA) == merged, "the order members answer in does not matter")
    }

    // MARK: - takeOver

    @Test func takeoverReappendsADecidedCommitAtTheNewEpochAndResendsItOnlyAfterTheAppend() {
        var n2 = Coordinator.standby()
        let out = n2.takeOver(partition: 0, epoch: epoch2, rows: [row("t1", stamp: 77, branches: order, decision: (.commit, "", epoch1))], now: 9_000)
        #expect(out.recordsToAppend == [startRecord("t1", stamp: 77, epoch: epoch2), decisionRecord("t1", .commit, epoch: epoch2)])
        #expect(out.mustSync)
        #expect(out.messagesNow.isEmpty, "no COMMIT before the new epoch's quorum holds it")
        #expect(out.messagesAfterAppend == decisions("t1", .commit, sender: n2Sender))
        #expect(n2.status(of: "t1") == .committed)
        #expect(n2.counters.recovered == 1)
    }

    @Test func takeoverAbortsAStartedTxnWithoutDecisionBecauseTheLeaderChanged() throws {
        var n2 = Coordinator.standby()
        let out = n2.takeOver(partition: 0, epoch: epoch2, rows: [row("t2", stamp: 78, branches: order)], now: 9_000)
        let decided = try #require(out.recordsToAppend.last)
        guard case .decision(_, .abort, let reason, let epoch) = decided.record else {
            Issue.record("expected an ABORT decision, got \(decided)")
            return
        }
        #expect(epoch == epoch2)
        #expect(reason == AbortReason(.leaderChanged, "leader changed before deciding"))
        #expect(out.recordsToAppend == [startRecord("t2", stamp: 78, epoch: epoch2), decisionRecord("t2", .abort, reason: reason, epoch: epoch2)])
        #expect(out.mustSync)
        #expect((out.messagesNow + out.messagesAfterAppend) == decisions("t2", .abort, sender: n2Sender))
        #expect(n2.status(of: "t2") == .aborted(reason: reason))
    }

    @Test func takeoverOfAnEndedTxnAppendsItsDecisionAndEndAgainAndDeduplicatesItsTxnID() throws {
        var n2 = Coordinator.standby()
        let ended = row("t3", stamp: 79, branches: order, decision: (.commit, "", epoch1), ended: true)
        let out = n2.takeOver(partition: 0, epoch: epoch2, rows: [ended], now: 9_000)
        // A member may have missed the END: it gets it at this epoch, so that its row of t3 is
        // trimmed with everyone else's, never left behind to mislead a later takeover.
        #expect(out.recordsToAppend == [decisionRecord("t3", .commit, epoch: epoch2), endRecord("t3")])
        #expect(out.messagesNow.isEmpty && out.messagesAfterAppend.isEmpty && out.replies.isEmpty)
        #expect(n2.inFlightCount == 0)
        #expect(n2.endedRecords([TxnID("t3"), TxnID("unknown")], partition: 0) == [decisionRecord("t3", .commit, epoch: epoch2).record, endRecord("t3").record])

        let again = try n2.submit("t3", now: 9_001)
        #expect(again.replies == [reply("t3", .committed, attempts: 0)])
        #expect(again.recordsToAppend.isEmpty && again.messagesNow.isEmpty && again.messagesAfterAppend.isEmpty)
        #expect(n2.inFlightCount == 0, "a retried txnID is not run a second time")
    }

    @Test func takeoverOfATxnEveryPromiserHoldsEndedAppendsNothingAndStillDeduplicatesIt() throws {
        var n2 = Coordinator.standby()
        let ended = row("t3", stamp: 79, branches: order, decision: (.commit, "", epoch1), ended: true)
        let out = n2.takeOver(partition: 0, epoch: epoch2, rows: [ended], settledEnds: [TxnID("t3")], now: 9_000)
        #expect(out.recordsToAppend.isEmpty && out.messagesNow.isEmpty && out.messagesAfterAppend.isEmpty && out.replies.isEmpty)
        // A catch-up still carries its END, for a member that did not promise the epoch.
        #expect(n2.endedRecords([TxnID("t3")], partition: 0) == [decisionRecord("t3", .commit, epoch: epoch2).record, endRecord("t3").record])

        let again = try n2.submit("t3", now: 9_001)
        #expect(again.replies == [reply("t3", .committed, attempts: 0)])
        #expect(n2.inFlightCount == 0, "a retried txnID is not run a second time")
    }

    @Test func takeoverRemembersATombstoneAsAbortedAndAppendsItAgainAtItsEpoch() throws {
        var n2 = Coordinator.standby()
        let reason = AbortReason.refused("unknown to the coordinator (presumed abort)")
        let out = n2.takeOver(partition: 0, epoch: epoch2, rows: [row("ghost", decision: (.abort, reason.text, epoch1))], now: 9_000)
        // The old epoch's quorum may not hold it: this epoch's quorum must, or a later
        // takeover could miss it and find an unmade COMMIT of the same txnID instead.
        #expect(out.recordsToAppend == [decisionRecord("ghost", .abort, reason: reason, epoch: epoch2)])
        #expect(out.mustSync && out.messagesNow.isEmpty && out.messagesAfterAppend.isEmpty && out.replies.isEmpty)
        #expect(n2.activeRecords(partition: 0) == [decisionRecord("ghost", .abort, reason: reason, epoch: epoch2).record])
        #expect(n2.inFlightCount == 0)
        #expect(n2.status(of: "ghost") == .aborted(reason: reason))
        // A late submit of the same txnID, or an RM's inquiry, hears ABORTED, never a fresh run.
        #expect(try n2.submit("ghost", now: 9_001).replies == [reply("ghost", .aborted(reason: reason), attempts: 0)])
        #expect(n2.resolve(TxnID("ghost"), partition: 0) == answer("ghost", .aborted(reason: reason), attempts: 0))
    }

    @Test func afterTakeoverTheNodeLeadsAtTheNewEpochAndAcksEndTheRedrivenTxn() {
        var n2 = Coordinator.standby()
        #expect(!n2.leads(0))
        _ = n2.takeOver(partition: 0, epoch: epoch2, rows: [row("t1", stamp: 77, branches: order, decision: (.commit, "", epoch1))], now: 9_000)
        #expect(n2.leads(0))
        #expect(n2.epochs[0] == epoch2)

        #expect(n2.ackReceived(txn: TxnID("t1"), from: RM.inventory).isEmpty)
        #expect(n2.ackReceived(txn: TxnID("t1"), from: RM.orders).isEmpty)
        let last = n2.ackReceived(txn: TxnID("t1"), from: RM.accounts)
        #expect(last.recordsToAppend == [endRecord("t1")])
        #expect(!last.mustSync, "END is lazy")
        #expect(n2.inFlightCount == 0)
        #expect(n2.status(of: "t1") == .committed)
    }

    @Test func unackedRedrivenDecisionsAreResentWithTheNewEpoch() {
        var n2 = Coordinator.standby()
        _ = n2.takeOver(partition: 0, epoch: epoch2, rows: [row("t1", stamp: 77, branches: order, decision: (.commit, "", epoch1))], now: 9_000)
        _ = n2.ackReceived(txn: TxnID("t1"), from: RM.orders)
        #expect(n2.tick(now: 9_000 + n2.limits.decisionRetryInitial - 1).isEmpty)
        let resent = n2.tick(now: 9_000 + n2.limits.decisionRetryInitial)
        #expect(resent.messagesAfterAppend == decisions("t1", .commit, to: [RM.inventory, RM.accounts], sender: n2Sender))
        #expect(resent.recordsToAppend.isEmpty)
    }

    // MARK: - stepDown

    @Test func stepDownForgetsExactlyThatPartitionsInFlightTxnsAndLeavesTheOthersRunning() throws {
        var c = Coordinator(node: "n1", nodeIndex: 1, epochs: [0: epoch1, 1: epoch1])
        _ = try c.submit("p0-b", now: 0)
        _ = try c.submit("p0-a", now: 0)
        _ = c.allVoteYes("p0-a", now: 1)  // decided, awaiting acks
        _ = try accepted(c.submit(TxnID("p1-x"), branches: order, partition: 1, now: 0))
        _ = try accepted(c.submit(TxnID("p1-y"), branches: [.inventory], partition: 1, now: 0))

        #expect(c.stepDown(partition: 0) == [TxnID("p0-a"), TxnID("p0-b")])
        #expect(!c.leads(0))
        #expect(c.leads(1) && c.epochs[1] == epoch1)
        try #require(c.inFlightCount(partition: 0) == 0, "p0's txns are gone")
        #expect(c.inFlightCount(partition: 1) == 2)
        #expect(c.status(of: "p0-b") == nil)

        // The other partition still runs: its votes decide, its timers fire.
        let p1Sender = Sender(partition: 1, epoch: epoch1, node: "n1")
        let committed = c.voteReceived(.yes, txn: TxnID("p1-y"), from: RM.inventory, now: 2)
        #expect(committed.recordsToAppend == [PartitionRecord(partition: 1, record: decisionRecord("p1-y", .commit).record)])
        #expect(committed.messagesAfterAppend == decisions("p1-y", .commit, to: [RM.inventory], sender: p1Sender))

        // Late news for a dropped txn changes nothing, and no timer of partition 0 fires.
        #expect(c.voteReceived(.yes, txn: TxnID("p0-b"), from: RM.inventory, now: 3).isEmpty)
        #expect(c.ackReceived(txn: TxnID("p0-a"), from: RM.inventory).isEmpty)
        let later = c.tick(now: 100_000)
        let touched = Set((later.messagesNow + later.messagesAfterAppend).map(\.txnID) + later.recordsToAppend.map(\.record.txnID))
        #expect(touched == [TxnID("p1-x"), TxnID("p1-y")], "p1-x times out and p1-y is resent; partition 0 is silent")
        #expect(later.recordsToAppend.allSatisfy { $0.partition == 1 })
    }

    @Test func stepDownForgetsThePartitionsFinishedTxnsSoOnlyAQuorumsRowsCanAnswerForThemLater() {
        var c = Coordinator.fixture()
        _ = c.resolve(TxnID("ghost"), partition: 0)
        #expect(c.status(of: "ghost") == .aborted(reason: AbortReason(.unknownTxn, "unknown to the coordinator (presumed abort)")))
        _ = c.stepDown(partition: 0)
        #expect(c.snapshot(of: TxnID("ghost")) == nil, "the tombstone may never have reached a quorum")
    }

    @Test func stepDownOfAPartitionNotLedDropsNothing() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t1")
        #expect(c.stepDown(partition: 5) == [])
        #expect(c.leads(0) && c.inFlightCount == 1)
    }

    // MARK: - activeRecords

    @Test func activeRecordsListStartAndDecisionOfExactlyThePartitionsInFlightTxnsAtTheCurrentEpoch() throws {
        var c = Coordinator(node: "n1", nodeIndex: 1, epochs: [0: epoch1, 1: epoch1])
        let sb = try startStamp(in: try c.submit("b", now: 0))
        let sa = try startStamp(in: try c.submit("a", now: 0))
        _ = try c.submit("d", [.inventory], now: 0)
        _ = try accepted(c.submit(TxnID("other"), branches: order, partition: 1, now: 0))
        _ = c.allVoteYes("a", now: 1)
        _ = c.voteReceived(.yes, txn: TxnID("d"), from: RM.inventory, now: 1)
        _ = c.allAck("d", [RM.inventory])  // ended: no longer in flight

        #expect(c.activeRecords(partition: 0) == [
            startRecord("a", stamp: sa).record,
            decisionRecord("a", .commit).record,
            startRecord("b", stamp: sb).record,
        ])
        #expect(c.activeRecords(partition: 1).map(\.txnID) == [TxnID("other")])
        #expect(c.activeRecords(partition: 7).isEmpty)

        // A follower that rebuilds rows from them and takes over would re-drive the same decision.
        var rows: [TxnID: TxnRow] = [:]
        for record in c.activeRecords(partition: 0) { rows[record.txnID, default: TxnRow(txnID: record.txnID)].apply(record) }
        #expect(rows[TxnID("a")]?.decision?.outcome == .commit)
        #expect(rows[TxnID("b")]?.decision == nil)
    }

    @Test func activeRecordsAfterTakeoverCarryTheNewEpoch() throws {
        var n2 = Coordinator.standby()
        _ = n2.takeOver(
            partition: 0, epoch: epoch2,
            rows: [row("t1", stamp: 77, branches: order, decision: (.commit, "", epoch1)), row("t2", stamp: 78, branches: order)],
            now: 9_000)
        let records = n2.activeRecords(partition: 0)
        try #require(records.count == 4, "\(records)")
        #expect(records[0] == startRecord("t1", stamp: 77, epoch: epoch2).record)
        #expect(records[1] == decisionRecord("t1", .commit, epoch: epoch2).record)
        #expect(records[2] == startRecord("t2", stamp: 78, epoch: epoch2).record)
        guard case .decision(_, .abort, _, let epoch) = records[3] else {
            Issue.record("expected t2's ABORT, got \(records[3])")
            return
        }
        #expect(epoch == epoch2)
    }

    // MARK: - A decision never changes across takeover

    @Test func aCommitMadeAtOneEpochIsRedrivenNotAbortedByTheNextLeader() throws {
        // n1 leads at epoch1; its followers store what it appends.
        var n1 = CoordinatorNode()
        let committedStamp = try startStamp(in: n1.apply(try n1.coordinator.submit("t1", now: 0)))
        n1.apply(n1.coordinator.allVoteYes("t1", now: 1))
        _ = n1.coordinator.ackReceived(txn: TxnID("t1"), from: RM.orders)  // n1 crashes before END
        let startedStamp = try startStamp(in: n1.apply(try n1.coordinator.submit("t2", now: 2)))
        _ = n1.coordinator.voteReceived(.yes, txn: TxnID("t2"), from: RM.inventory, now: 3)

        // Follower A got everything; follower B (START is lazy) only the forced decision.
        let followerA = rows(from: n1.log)
        let followerB = rows(from: n1.log.filter { if case .decision = $0.record { true } else { false } })
        let merged = mergeRows(followerA + followerB)

        var n2 = Coordinator.standby()
        let epochN2 = epoch1.next(for: 2)
        let sender = Sender(partition: 0, epoch: epochN2, node: "n2")
        let out = n2.takeOver(partition: 0, epoch: epochN2, rows: merged, now: 9_000)

        #expect(out.messagesAfterAppend == decisions("t1", .commit, sender: sender) + decisions("t2", .abort, sender: sender))
        let abortedReason = try #require(out.replies.first { $0.txnID == TxnID("t2") }?.abortReason)
        #expect(out.messagesNow.isEmpty)
        #expect(out.recordsToAppend == [
            startRecord("t1", stamp: committedStamp, epoch: epochN2),
            decisionRecord("t1", .commit, epoch: epochN2),
            startRecord("t2", stamp: startedStamp, epoch: epochN2),
            decisionRecord("t2", .abort, reason: abortedReason, epoch: epochN2),
        ])
        #expect(out.replies.allSatisfy { $0.txnID != TxnID("t1") || $0.status == .committed })
        #expect(n2.status(of: "t1") == .committed)

        // Nothing later turns t1 into an abort: late NO votes, deadlines, inquiries, retries.
        #expect(n2.voteReceived(.no(reason: .refused("late")), txn: TxnID("t1"), from: RM.inventory, now: 9_001).isEmpty)
        let tick = n2.tick(now: 9_000 + n2.limits.prepareTimeout)
        #expect(tick.recordsToAppend.isEmpty)
        #expect(tick.messagesAfterAppend.filter { $0.txnID == TxnID("t1") } == decisions("t1", .commit, sender: sender))
        #expect(n2.resolve(TxnID("t1"), partition: 0) == answer("t1", .committed))
        #expect(try n2.submit("t1", now: 9_002).replies == [reply("t1", .committed)])

        // And a third leader, taking over from n2's log, still sees COMMIT with n2's epoch winning.
        let n2Rows = rows(from: out.recordsToAppend)
        var n3 = Coordinator(node: "n3", nodeIndex: 3, epochs: [:])
        let epochN3 = epochN2.next(for: 3)
        let third = n3.takeOver(partition: 0, epoch: epochN3, rows: mergeRows(followerA + n2Rows), now: 20_000)
        #expect(third.messagesAfterAppend == decisions("t1", .commit, sender: Sender(partition: 0, epoch: epochN3, node: "n3"))
            + decisions("t2", .abort, sender: Sender(partition: 0, epoch: epochN3, node: "n3")))
        #expect(third.messagesNow.isEmpty)
    }
}

// MARK: - Helpers

/// The epoch n2 takes partition 0 over with, and how its messages are signed.
let epoch2 = Epoch(counter: 2, node: 2)
let n2Sender = Sender(partition: 0, epoch: epoch2, node: "n2")

extension Coordinator {
    /// n2, a member of partition 0's replica group that leads nothing yet.
    static func standby() -> Coordinator { Coordinator(node: "n2", nodeIndex: 2, epochs: [:]) }
}

extension Envelope {
    var txnID: TxnID {
        switch self {
        case .prepare(_, let message): message.txnID
        case .decision(_, let message): message.txnID
        }
    }
}

func row(
    _ id: String, stamp: StartStamp = 0, branches: [Branch] = [], decision: (Outcome, String, Epoch)? = nil, ended: Bool = false
) -> TxnRow {
    var row = TxnRow(txnID: TxnID(id))
    row.stamp = stamp
    row.branches = branches
    row.decision = decision.map { TxnRow.Decided(outcome: $0.0, reason: $0.1.isEmpty ? .none : .refused($0.1), epoch: $0.2) }
    row.isEnded = ended
    return row
}

/// The rows a follower holds after storing `records` (partition 0), sorted by txnID.
func rows(from records: [PartitionRecord]) -> [TxnRow] {
    var rows: [TxnID: TxnRow] = [:]
    for entry in records { rows[entry.record.txnID, default: TxnRow(txnID: entry.record.txnID)].apply(entry.record) }
    return rows.values.sorted { $0.txnID < $1.txnID }
}

func accepted(_ result: SubmitResult, sourceLocation: SourceLocation = #_sourceLocation) throws -> CoordinatorOutput {
    guard case .accepted(let output) = result else {
        Issue.record("submit was not accepted: \(result)", sourceLocation: sourceLocation)
        throw FixtureError.notAccepted
    }
    return output
}

/// What `resolve` returns when it answers `status` from memory: the reply, nothing to append.
func answer(_ id: String, _ status: TxnStatus, attempts: Attempt = 1) -> CoordinatorOutput {
    var output = CoordinatorOutput()
    output.replies = [reply(id, status, attempts: attempts)]
    return output
}
