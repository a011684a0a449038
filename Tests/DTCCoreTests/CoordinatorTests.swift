import Testing

@testable import DTCCore

/// 2PC with presumed abort, as transcripts: one event in, the actions out.
@Suite struct CoordinatorTests {
    // MARK: - Phase 1

    @Test func submitAppendsStartLazilyAndPreparesEveryBranchWithoutReplying() throws {
        var c = Coordinator.fixture()
        let out = try c.submit("t1", now: 10)
        let stamp = try startStamp(in: out)
        #expect(out.recordsToAppend == [startRecord("t1", stamp: stamp)])
        #expect(!out.mustSync)
        #expect(out.messagesNow == prepares("t1", stamp: stamp))
        #expect(out.messagesAfterAppend.isEmpty)
        #expect(out.replies.isEmpty)
        #expect(c.status(of: "t1") == .preparing)
    }

    @Test func commitIsDurableBeforeAnyParticipantOrClientLearnsIt() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t7")
        #expect(c.voteReceived(.yes, txn: TxnID("t7"), from: RM.inventory, now: 1).isEmpty)
        #expect(c.voteReceived(.yes, txn: TxnID("t7"), from: RM.orders, now: 1).isEmpty)
        let out = c.voteReceived(.yes, txn: TxnID("t7"), from: RM.accounts, now: 2)
        #expect(out.recordsToAppend == [decisionRecord("t7", .commit)])
        #expect(out.mustSync)
        #expect(out.messagesNow.isEmpty)
        #expect(out.messagesAfterAppend == decisions("t7", .commit))
        #expect(out.replies == [reply("t7", .committed)])
        #expect(c.counters.committed == 1)
    }

    @Test func oneNoAbortsNamingTheRmAndItsReasonAndLaterVotesChangeNothing() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t2")
        _ = c.voteReceived(.yes, txn: TxnID("t2"), from: RM.inventory, now: 1)
        let out = c.voteReceived(.no(reason: .refused("insufficient balance for ada")), txn: TxnID("t2"), from: RM.accounts, now: 2)

        let reason = try #require(out.replies.first?.abortReason)
        #expect(out.recordsToAppend == [decisionRecord("t2", .abort, reason: reason)])
        #expect(out.mustSync)
        #expect(reason.cause == .refused)
        #expect(reason.text.contains(RM.accounts) && reason.text.contains("insufficient balance for ada"))
        #expect(out.replies.count == 1)
        // ROLLBACKs wait for the record like COMMITs, so the txn cannot end before its
        // decision is on a quorum; no COMMIT goes anywhere.
        #expect(out.messagesNow.isEmpty)
        #expect(out.messagesAfterAppend.sorted(by: { $0.rm < $1.rm }) == decisions("t2", .abort).sorted(by: { $0.rm < $1.rm }))

        #expect(c.voteReceived(.yes, txn: TxnID("t2"), from: RM.orders, now: 3).isEmpty)
        #expect(c.status(of: "t2") == .aborted(reason: reason))
    }

    @Test func aContentionNoAbortsWithTheContentionCauseForTheClientWhenRetriesAreOff() throws {
        var limits = Limits.standard
        limits.attemptsMax = 1
        var c = Coordinator.fixture(limits: limits)
        _ = try c.submit("t5")
        let out = c.voteReceived(.no(reason: AbortReason(.contention, "wait-die: younger than lock holder t1")), txn: TxnID("t5"), from: RM.inventory, now: 1)
        #expect(out.replies.first?.abortReason == AbortReason(.contention, "inventory voted NO: wait-die: younger than lock holder t1"))
    }

    @Test func aVoteThatDidNotComeByThePrepareDeadlineCountsAsNo() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t3", now: 1_000)
        _ = c.voteReceived(.yes, txn: TxnID("t3"), from: RM.inventory, now: 1_001)
        _ = c.voteReceived(.yes, txn: TxnID("t3"), from: RM.orders, now: 1_002)
        let deadline = 1_000 + c.limits.prepareTimeout

        #expect(c.tick(now: deadline - 1).isEmpty)
        let out = c.tick(now: deadline)
        let reason = try #require(out.replies.first?.abortReason)
        #expect(out.recordsToAppend == [decisionRecord("t3", .abort, reason: reason)])
        #expect(out.mustSync)
        #expect(reason.cause == .timeout)
        #expect(reason.text.contains("timeout") && reason.text.contains(RM.accounts))
        #expect(!reason.text.contains(RM.inventory) && !reason.text.contains(RM.orders))
        #expect(out.messagesNow + out.messagesAfterAppend == decisions("t3", .abort))
    }

    @Test func votesFromUnknownTxnsOrRMsOutsideTheTxnAreIgnored() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t4", [.inventory, .accounts])
        #expect(c.voteReceived(.yes, txn: TxnID("nope"), from: RM.inventory, now: 1).isEmpty)
        #expect(c.voteReceived(.no(reason: .refused("not mine")), txn: TxnID("t4"), from: RM.orders, now: 1).isEmpty)
        #expect(c.voteReceived(.yes, txn: TxnID("t4"), from: RM.inventory, now: 1).isEmpty)
        // A duplicate YES is not a second vote: one branch is still missing.
        #expect(c.voteReceived(.yes, txn: TxnID("t4"), from: RM.inventory, now: 1).isEmpty)
        #expect(c.status(of: "t4") == .preparing)
    }

    // MARK: - Phase 2

    @Test func endIsAppendedLazilyOnlyAfterEveryRmAcked() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t5")
        _ = c.allVoteYes("t5")
        #expect(c.ackReceived(txn: TxnID("t5"), from: RM.inventory).isEmpty)
        #expect(c.ackReceived(txn: TxnID("t5"), from: RM.inventory).isEmpty, "a duplicate ack counts once")
        #expect(c.ackReceived(txn: TxnID("t5"), from: RM.orders).isEmpty)
        let progress = try #require(c.snapshot(of: TxnID("t5"))).branches.map(\.progress)
        #expect(progress == [.acknowledged(.commit), .acknowledged(.commit), .awaitingAck(.commit)])

        let out = c.ackReceived(txn: TxnID("t5"), from: RM.accounts)
        #expect(out.recordsToAppend == [endRecord("t5")])
        #expect(!out.mustSync)
        #expect(out.messagesNow.isEmpty && out.messagesAfterAppend.isEmpty && out.replies.isEmpty)
        #expect(c.inFlightCount == 0)
        #expect(c.ackReceived(txn: TxnID("t5"), from: RM.accounts).isEmpty)
    }

    @Test func unackedDecisionsAreResentWithCappedExponentialBackoff() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t6")
        _ = c.allVoteYes("t6", now: 0)
        _ = c.ackReceived(txn: TxnID("t6"), from: RM.inventory)

        var resentAt: [UInt64] = []
        for now in UInt64(1)...8_000 {
            let out = c.tick(now: now)
            guard !out.isEmpty else { continue }
            resentAt.append(now)
            #expect(out.messagesAfterAppend == decisions("t6", .commit, to: [RM.orders, RM.accounts]), "at \(now)")
            #expect(out.recordsToAppend.isEmpty && out.messagesNow.isEmpty && out.replies.isEmpty)
        }
        let limits = c.limits
        #expect(resentAt.first == limits.decisionRetryInitial)
        let gaps = zip(resentAt.dropFirst(), resentAt).map { $0 - $1 }
        // 100 → 200 → 400 → 800 → 1600 → capped at 2000.
        #expect(gaps == [200, 400, 800, 1_600, 2_000, 2_000])
        #expect(gaps.allSatisfy { $0 <= limits.decisionRetryMax })

        _ = c.allAck("t6", [RM.orders, RM.accounts])
        #expect(c.tick(now: 100_000).isEmpty, "no retries once every RM acked")
    }

    // MARK: - Idempotent submit and limits

    @Test func submittingADecidedTxnAgainAnswersItsOutcomeWithNoNewRecords() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t8")
        _ = c.allVoteYes("t8")

        var again = try c.submit("t8", now: 5)
        #expect(again.replies == [reply("t8", .committed)])
        #expect(again.recordsToAppend.isEmpty && again.messagesNow.isEmpty && again.messagesAfterAppend.isEmpty)

        _ = c.allAck("t8")
        again = try c.submit("t8", now: 6)
        #expect(again.replies == [reply("t8", .committed)], "still known after END")
        #expect(again.recordsToAppend.isEmpty && again.messagesNow.isEmpty && again.messagesAfterAppend.isEmpty)
    }

    @Test func submittingAPreparingTxnAgainDoesNothing() throws {
        var c = Coordinator.fixture()
        let first = try c.submit("t9", now: 0)
        let again = try c.submit("t9", now: 1)
        #expect(again.isEmpty)
        #expect(c.inFlightCount == 1)
        // The first submit's stamp and deadline stand: the second one did not restart the txn.
        let stamp = try startStamp(in: first)
        #expect(c.snapshot(of: TxnID("t9"))?.stamp == stamp)
        #expect(!c.tick(now: c.limits.prepareTimeout).isEmpty)
    }

    @Test func submitAtTheInFlightLimitIsOverloadedNotQueued() throws {
        var limits = Limits()
        limits.inFlightTxnsMax = 2
        var c = Coordinator.fixture(limits: limits)
        _ = try c.submit("a")
        _ = try c.submit("b")
        #expect(c.submit(TxnID("c"), branches: order, partition: 0, now: 0) == .overloaded(inFlight: 2))
        #expect(c.snapshot(of: TxnID("c")) == nil)
        #expect(try c.submit("a").isEmpty, "a known txn is still answered at the limit")

        _ = c.voteReceived(.no(reason: .refused("no")), txn: TxnID("a"), from: RM.inventory, now: 1)
        _ = c.allAck("a")
        #expect(!(try c.submit("c").isEmpty), "a slot frees when a txn ends")
    }

    // MARK: - Crash and takeover of the node's own log

    @Test func aCommitMadeBeforeACrashStaysCommittedAfterIt() throws {
        var node = CoordinatorNode()
        node.apply(try node.coordinator.submit("t13", now: 0))
        node.apply(node.coordinator.allVoteYes("t13", now: 1))
        _ = node.coordinator.ackReceived(txn: TxnID("t13"), from: RM.inventory)

        let recovered = node.crashAndRecover(now: 10_000)
        let restarted = Sender(partition: 0, epoch: Epoch(counter: 2, node: 1), node: "n1")
        #expect(recovered.messagesAfterAppend == decisions("t13", .commit, sender: restarted))
        // Nothing after recovery can turn it into an abort: late votes, deadlines, RM inquiries.
        #expect(node.coordinator.voteReceived(.no(reason: .refused("late")), txn: TxnID("t13"), from: RM.orders, now: 10_001).isEmpty)
        node.apply(node.coordinator.tick(now: 10_000 + node.coordinator.limits.prepareTimeout))
        #expect(node.coordinator.resolve(TxnID("t13"), partition: 0)?.replies == [reply("t13", .committed)])
        #expect(try node.coordinator.submit("t13", now: 20_000).replies == [reply("t13", .committed)])
        let decided = node.log.compactMap { entry -> Outcome? in
            if case .decision(_, let outcome, _, _) = entry.record { return outcome }
            return nil
        }
        #expect(decided == [.commit, .commit], "the commit, and its re-append at the new epoch")

        node.apply(node.coordinator.allAck("t13"))
        let afterEnd = node.crashAndRecover(now: 30_000)
        #expect(afterEnd.messagesNow.isEmpty && afterEnd.messagesAfterAppend.isEmpty, "an ended txn has nothing left to send")
        #expect(afterEnd.recordsToAppend.map(\.record) == [.decision(txnID: TxnID("t13"), outcome: .commit, reason: .none, epoch: Epoch(counter: 3, node: 1)), .end(txnID: TxnID("t13"))])
        #expect(node.coordinator.status(of: "t13") == .committed)
    }

    // MARK: - Termination protocol

    @Test func resolvingAnUnknownTxnRecordsADurableAbortBeforeAnswering() throws {
        var node = CoordinatorNode()
        let resolved = node.coordinator.resolve(TxnID("ghost"), partition: 0)
        let out = try #require(resolved)
        node.apply(out)
        let reason = try #require(out.replies.first?.abortReason)
        #expect(out.recordsToAppend == [decisionRecord("ghost", .abort, reason: reason)])
        #expect(out.mustSync)
        #expect(out.replies.count == 1)

        // A client that submits the same txnID later is told it aborted; nothing is prepared.
        let late = try node.coordinator.submit("ghost", now: 1)
        #expect(late.replies == [reply("ghost", .aborted(reason: reason), attempts: 0)])
        #expect(late.recordsToAppend.isEmpty && late.messagesNow.isEmpty && late.messagesAfterAppend.isEmpty)

        // The tombstone survives a crash, and is appended again at the new epoch.
        let recovered = node.crashAndRecover(now: 2)
        #expect(recovered.recordsToAppend.map(\.record) == [.decision(txnID: TxnID("ghost"), outcome: .abort, reason: reason, epoch: Epoch(counter: 2, node: 1))])
        #expect(recovered.replies.isEmpty && recovered.messagesNow.isEmpty && recovered.messagesAfterAppend.isEmpty)
        #expect(try node.coordinator.submit("ghost", now: 3).replies == [reply("ghost", .aborted(reason: reason), attempts: 0)])
    }

    @Test func resolvingAPreparingTxnAnswersNothingYet() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t14")
        _ = c.voteReceived(.yes, txn: TxnID("t14"), from: RM.inventory, now: 1)
        #expect(c.resolve(TxnID("t14"), partition: 0) == nil)
        #expect(c.status(of: "t14") == .preparing)
    }

    @Test func resolvingADecidedTxnAnswersItsOutcomeWithNoRecord() throws {
        var c = Coordinator.fixture()
        _ = try c.submit("t15")
        _ = c.allVoteYes("t15")
        let resolved = c.resolve(TxnID("t15"), partition: 0)
        let out = try #require(resolved)
        #expect(out.replies == [reply("t15", .committed)])
        #expect(out.recordsToAppend.isEmpty)
    }

    // MARK: - Start stamps

    @Test func startStampsIncreaseStrictlyOnANodeAndDifferAcrossNodesAtTheSameTime() throws {
        var n1 = Coordinator.fixture(node: "n1", nodeIndex: 1)
        var n2 = Coordinator.fixture(node: "n2", nodeIndex: 2)
        // Same `now` several times, and a clock that steps back.
        let times: [UInt64] = [7, 7, 7, 8, 5, 5, 9]
        var stamps1: [StartStamp] = []
        var stamps2: [StartStamp] = []
        for (index, now) in times.enumerated() {
            stamps1.append(try startStamp(in: try n1.submit("a\(index)", now: now)))
            stamps2.append(try startStamp(in: try n2.submit("b\(index)", now: now)))
        }
        #expect(zip(stamps1, stamps1.dropFirst()).allSatisfy { $0 < $1 })
        #expect(zip(stamps2, stamps2.dropFirst()).allSatisfy { $0 < $1 })
        #expect(Set(stamps1 + stamps2).count == stamps1.count + stamps2.count)
        // A later clock gives an older-looking (smaller) stamp to the earlier txn: wait-die's order.
        var n3 = Coordinator.fixture(node: "n3", nodeIndex: 3)
        let early = try startStamp(in: try n3.submit("early", now: 100))
        let late = try startStamp(in: try n1.submit("late", now: 200))
        #expect(early < late)
    }

    // MARK: - Log records

    @Test(arguments: [
        LogRecord.start(txnID: TxnID("t-α"), epoch: Epoch(counter: 3, node: 2), stamp: 0xfeed_beef, branches: order),
        LogRecord.start(txnID: TxnID("t0"), epoch: .zero, stamp: 0, branches: []),
        LogRecord.decision(txnID: TxnID("t1"), outcome: .commit, reason: .none, epoch: Epoch(counter: .max, node: .max)),
        LogRecord.decision(txnID: TxnID("t2"), outcome: .abort, reason: AbortReason(.contention, "accounts voted NO: ünïcode"), epoch: epoch1),
        LogRecord.end(txnID: TxnID("t3")),
        LogRecord.trim(txnID: TxnID("t4")),
    ])
    func logRecordsRoundTripThroughTheirEncoding(_ record: LogRecord) throws {
        #expect(try LogRecord(decoding: record.encoded()) == record)
    }

    @Test func aTruncatedOrUnknownLogRecordIsAnErrorNotAGuess() {
        let bytes = LogRecord.start(txnID: TxnID("t1"), epoch: epoch1, stamp: 9, branches: order).encoded()
        for length in 0..<bytes.count {
            #expect(throws: RecordDecodingError.self, "prefix of \(length) bytes") {
                try LogRecord(decoding: Array(bytes.prefix(length)))
            }
        }
        #expect(throws: RecordDecodingError.badTag(9, at: 1)) { try LogRecord(decoding: [LogRecord.formatVersion, 9]) }
    }

    @Test func recordsAndRowsOfAnotherFormatVersionAreRefusedNotMisread() throws {
        let record = LogRecord.start(txnID: TxnID("t1"), epoch: epoch1, stamp: 9, branches: order).encoded()
        #expect(throws: RecordDecodingError.unsupportedVersion(found: 1, expected: LogRecord.formatVersion)) {
            try LogRecord(decoding: [1] + record.dropFirst())
        }
        var row = TxnRow(txnID: TxnID("t1"))
        row.apply(.start(txnID: TxnID("t1"), epoch: epoch1, stamp: 9, branches: order))
        #expect(try TxnRow(decoding: row.encoded()) == row)
        // A row of version 1 began with its txn ID's length: a 0 byte.
        #expect(throws: RecordDecodingError.unsupportedVersion(found: 0, expected: TxnRow.formatVersion)) {
            try TxnRow(decoding: [0, 0, 0, 2] + Array("t1".utf8))
        }
    }
}
