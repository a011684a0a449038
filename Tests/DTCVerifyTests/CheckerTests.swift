import DTCCore
import Testing

@testable import DTCVerify

/// The checker on hand-made histories and RM snapshots: a clean run reports nothing, and each
/// kind of violation, planted alone, is reported as that kind.
@Suite struct CheckerTests {
    @Test func aCleanRunHasNoViolations() {
        let report = Scenario.clean().verify()
        #expect(report.violations == 0, "\(report.lines)")
        #expect(report.findings.count == ViolationKind.allCases.count, "every invariant is checked and printed")
    }

    @Test func aTxnCommittedAtOneRMAndAbortedAtAnotherIsAnAtomicityViolation() {
        var run = Scenario.clean()
        run.snapshot.ledgers["accounts"]!["t1"] = LedgerEntry(outcome: .abort, epoch: e1, seenEpoch: e1)
        run.snapshot.balances["user-0"]! += 300
        run.snapshot.debits["t1"] = nil
        let report = run.verify()
        #expect(report.violatedKinds.contains(.atomicity))
        #expect(report.findings.first { $0.kind == .atomicity }!.problems == ["t1: accounts=abort inventory=commit orders=commit"])
    }

    @Test func aCommittedTxnMissingAtAParticipantItsLedgerNamesIsAnAtomicityViolation() {
        var run = Scenario.clean()
        run.snapshot.ledgers["tickets"]!["t9"] = LedgerEntry(outcome: .commit, epoch: e1, participants: ["tickets", "accounts"])
        let report = run.verify()
        #expect(report.findings.first { $0.kind == .atomicity }!.problems == ["t9: accounts=none tickets=commit"])
    }

    @Test func aTxnOfOtherParticipantsIsCheckedOnItsOwnParticipantsAndIsNoOrder() {
        var run = Scenario.clean()
        let participants = ["tickets", "accounts"]
        for rm in participants { run.snapshot.ledgers[rm]!["b1"] = LedgerEntry(outcome: .commit, epoch: e1, participants: participants) }
        run.snapshot.balances["user-0"]! -= 500
        run.snapshot.debits["b1"] = ("user-0", 500)
        let report = run.checkState()
        #expect(report.violations == 0, "\(report.findings.filter { !$0.problems.isEmpty })")
    }

    @Test func aTxnToldCommittedThatNoRMAppliedIsReported() {
        var run = Scenario.clean()
        run.history += [HistoryEvent.invoke("t5", attempt: 1, at: 100, order).jsonLine, HistoryEvent(kind: .ok, txn: "t5", attempt: 1, time: 101).jsonLine]
        #expect(run.verify().violatedKinds == [.toldCommittedNotApplied])
    }

    @Test func aTxnToldCommittedWhoseAppliedOrderDiffersIsReported() {
        var run = Scenario.clean()
        run.history[0] = HistoryEvent.invoke("t1", attempt: 1, at: 100, HistoryEvent.Order(user: "user-0", sku: "sku-0", qty: 2, amount: 999)).jsonLine
        #expect(run.verify().violatedKinds == [.toldCommittedNotApplied])
    }

    @Test func aTxnToldAbortedThatWasAppliedIsReported() {
        var run = Scenario.clean()
        run.history[5] = HistoryEvent(kind: .fail, txn: "t1", attempt: 2, time: 101.5, reason: "inventory voted NO").jsonLine
        #expect(run.verify().violatedKinds == [.toldAbortedButApplied])
    }

    @Test func twoAttemptsToldDifferentOutcomesAreReported() {
        var run = Scenario.clean()
        run.history += [
            HistoryEvent.invoke("t2", attempt: 2, at: 120, order).jsonLine,
            HistoryEvent(kind: .ok, txn: "t2", attempt: 2, time: 121).jsonLine,
        ]
        #expect(run.verify().violatedKinds == [.toldContradiction, .toldCommittedNotApplied])
    }

    @Test func aDecisionAppliedTwiceIsReported() {
        var run = Scenario.clean()
        run.snapshot.ledgers["inventory"]!["t1"]!.applications = 2
        #expect(run.verify().violatedKinds == [.appliedTwice])
    }

    @Test func anEffectAppliedTwiceBreaksConservation() {
        var run = Scenario.clean()
        run.snapshot.balances["user-0"]! -= 300
        #expect(run.verify().violatedKinds == [.moneyNotConserved])
    }

    @Test func anRMLeftPreparedIsReported() {
        var run = Scenario.clean()
        run.snapshot.prepared["orders"] = ["t3"]
        #expect(run.verify().violatedKinds == [.leftPrepared])
        var notQuiet = Scenario.clean()
        notQuiet.quiet = false
        #expect(notQuiet.verify().violatedKinds == [.leftPrepared])
    }

    @Test func stockThatIsNotConservedIsReported() {
        var run = Scenario.clean()
        run.snapshot.stock["sku-1"]! -= 1
        let report = run.verify()
        #expect(report.violatedKinds == [.stockNotConserved])
        #expect(report.findings.first { $0.kind == .stockNotConserved }!.problems == ["sku-1: stock 8 + reserved 1 != 10"])
    }

    @Test func moneyThatIsNotConservedIsReported() {
        var run = Scenario.clean()
        run.snapshot.balances["user-1"]! += 5
        #expect(run.verify().violatedKinds == [.moneyNotConserved])
    }

    @Test func anOrderWithoutItsReservationOrDebitIsReported() {
        var run = Scenario.clean()
        run.snapshot.reservations["t1"] = nil
        run.snapshot.stock["sku-0"]! += 2
        #expect(run.verify().violatedKinds == [.orderIncomplete])
        var debitless = Scenario.clean()
        debitless.snapshot.orders["t1"]!.amount = 299
        debitless.snapshot.debits["t1"]!.amount = 299
        debitless.snapshot.balances["user-0"]! += 1
        debitless.history[0] = HistoryEvent.invoke("t1", attempt: 1, at: 100, HistoryEvent.Order(user: "user-0", sku: "sku-0", qty: 2, amount: 299)).jsonLine
        #expect(debitless.verify().violations == 0, "a consistent variation is clean: \(debitless.verify().lines)")
        debitless.snapshot.debits["t1"] = nil
        debitless.snapshot.balances["user-0"]! += 299
        #expect(debitless.verify().violatedKinds == [.orderIncomplete, .moneyNotConserved])
    }

    @Test func aDecisionAppliedFromAStaleEpochIsReported() {
        var run = Scenario.clean()
        run.snapshot.ledgers["orders"]!["t2"] = LedgerEntry(outcome: .abort, epoch: e1, seenEpoch: Epoch(counter: 2, node: 3))
        let report = run.verify()
        #expect(report.violatedKinds == [.staleEpoch])
        #expect(report.findings.first { $0.kind == .staleEpoch }!.problems == ["orders: t2 abort at epoch 1.1 after it had seen epoch 2.3"])
    }

    @Test func aCycleAcrossTwoParticipantsIsASerializabilityViolationNamingBothTxns() {
        // T1 held a before T2 at inventory; T2 held b before T1 at accounts: no serial order fits.
        let snapshot = ledgers([
            "inventory": [("T1", 1, ["a"]), ("T2", 2, ["a"])],
            "accounts": [("T2", 1, ["b"]), ("T1", 2, ["b"])],
        ])
        let report = Checker.checkState(snapshot, initial: nil, quiet: true)
        #expect(report.violatedKinds == [.notSerializable], "\(report.lines)")
        let finding = report.findings.first { $0.kind == .notSerializable }!
        #expect(finding.problems == ["cycle of 2 txns: T1 → T2 (inventory: a) → T1 (accounts: b)"])
        #expect(finding.counts == "2 committed txns, 2 edges, a cycle")
        #expect(report.lines.contains("       e.g. cycle of 2 txns: T1 → T2 (inventory: a) → T1 (accounts: b)"))
    }

    @Test func committedTxnsOrderedAlikeOnEveryKeyAreSerializable() {
        // a: T1, T2, T3; b: T1, T3 (T1 → T3); c: T2, T3 (T2 → T3 again); d: T3, T4.
        let snapshot = ledgers([
            "inventory": [("T1", 3, ["a", "b"]), ("T2", 4, ["a"]), ("T3", 8, ["a", "b"])],
            "accounts": [("T2", 1, ["c"]), ("T3", 2, ["c", "d"]), ("T4", 3, ["d"])],
        ])
        let report = Checker.checkState(snapshot, initial: nil, quiet: true)
        #expect(report.violations == 0, "\(report.lines)")
        #expect(report.findings.first { $0.kind == .notSerializable }!.counts == "4 committed txns, 4 edges, acyclic")
    }

    @Test func entriesWithoutAnApplyOrderAreLeftOutOfTheGraphAndCounted() {
        // T2's inventory entry has no order (a participant that keeps none): without it, the
        // two participants' orders do not meet in a cycle.
        var snapshot = ledgers([
            "inventory": [("T1", 1, ["a"]), ("T2", 0, ["a"])],
            "accounts": [("T2", 1, ["b"]), ("T1", 2, ["b"])],
        ])
        snapshot.ledgers["inventory"]!["T9"] = LedgerEntry(outcome: .abort, epoch: e1, seenEpoch: e1)
        let report = Checker.checkState(snapshot, initial: nil, quiet: true)
        #expect(report.violations == 0, "\(report.lines)")
        #expect(report.findings.first { $0.kind == .notSerializable }!.counts
            == "2 committed txns, 1 edges, acyclic; 1 committed entries without an apply order left out")
        let clean = Scenario.clean().verify().findings.first { $0.kind == .notSerializable }!
        #expect(clean.counts == "0 committed txns, 0 edges, acyclic; 6 committed entries without an apply order left out")
    }

    @Test func countsAreGroupedByThousands() {
        #expect([0, 999, 1_000, 12_345, 1_234_567].map(Checker.grouped) == ["0", "999", "1,000", "12,345", "1,234,567"])
    }

    @Test func malformedHistoryLinesAreReportedEachWithItsLineNumber() {
        var run = Scenario.clean()
        run.history += [
            "not json",
            #"{"type":"ok","txn":"t9","attempt":1,"time":105.5,"outcome":"committed"}"#,
            #"{"type":"invoke","txn":"t9","attempt":1,"time":106}"#,
            #"{"type":"fail","txn":"t2","attempt":1,"time":102,"outcome":"committed"}"#,
            #"{"type":"invoke","txn":"t9","att"#,
        ]
        let report = run.verify()
        #expect(report.violatedKinds == [.malformedHistory])
        let problems = report.findings.first { $0.kind == .malformedHistory }!.problems
        #expect(problems.count == 5, "\(problems)")
        #expect(problems.contains { $0.hasPrefix("line 9: not a JSON object") })
        #expect(problems.contains { $0.hasPrefix("line 11: an invoke without its order") })
        #expect(problems.contains { $0.hasPrefix("line 13: not a JSON object") })
        #expect(problems.contains { $0 == "t9 attempt 1: ok without an invoke before it" })
        #expect(problems.contains { $0.hasPrefix("line 12: \"fail\" needs \"outcome\":\"aborted\"") })
    }

    @Test func aTxnAtTheRMsThatNoClientInvokedIsReported() {
        var run = Scenario.clean()
        for rm in ["inventory", "orders", "accounts"] { run.snapshot.ledgers[rm]!["ghost"] = LedgerEntry(outcome: .abort, epoch: e1, seenEpoch: e1) }
        #expect(run.verify().violatedKinds == [.notInvoked])
        let partial = Checker.verify(history: History(parsing: run.history.joined(separator: "\n")), complete: false, snapshot: run.snapshot,
                                     initial: run.initial, quiet: true, checkedAt: 202)
        #expect(partial.violations == 0, "a partial history (dtc check --history) does not claim every txn")
    }

    @Test func statisticsCountOutcomesAndTheLongestTimeInDoubt() throws {
        let stats = try #require(Scenario.clean().verify().stats)
        #expect(stats.txns == 3 && stats.attempts == 4 && stats.retriedTxns == 1)
        #expect(stats.completions == [.ok: 1, .fail: 1, .unknown: 2] && stats.open == 0)
        #expect(stats.toldCommitted == 1 && stats.toldAborted == 1)
        #expect(stats.neverToldCommitted == 1 && stats.neverToldAborted == 0)
        #expect(stats.maxInDoubtToldSeconds == 1.5 && stats.maxInDoubtToldTxn == "t1")
        #expect(stats.maxInDoubtNeverToldSeconds == 100 && stats.maxInDoubtNeverToldTxn == "t3")
    }
}

@Suite struct HistoryTests {
    @Test func aTransferRunOverTwoAccountsParticipantsHasNoViolations() {
        let report = TransferScenario.clean().verify()
        #expect(report.violations == 0, "\(report.lines)")
    }

    @Test func aTransferWhoseCreditDiffersOrIsMissingIsReported() {
        var differs = TransferScenario.clean()
        differs.snapshot.credits["x1"]!.amount += 1
        differs.snapshot.balances["accounts-2/user-1"]! += 1
        #expect(differs.verify().violatedKinds == [.toldCommittedNotApplied, .transferIncomplete])

        var missing = TransferScenario.clean()
        missing.snapshot.credits["x1"] = nil
        missing.snapshot.balances["accounts-2/user-1"]! -= 100
        #expect(missing.verify().violatedKinds == [.toldCommittedNotApplied], "the money sits in the debit: conserved, but the client was told otherwise")
    }

    @Test func anEventRoundTripsThroughItsLine() {
        let events = [
            HistoryEvent.invoke("x-1", attempt: 1, at: 5, HistoryEvent.Transfer(from: "user-0", fromRM: "accounts", to: "user-\"1", toRM: "accounts-2", amount: 7)),
            HistoryEvent.invoke("o-\"1\"", attempt: 2, at: 1_700_000_000.25, HistoryEvent.Order(user: "u\\1", sku: "s\n", qty: 3, amount: 4)),
            HistoryEvent(kind: .fail, txn: "o", attempt: 1, time: 1.5, reason: "inventory voted NO: insufficient stock for \"x\"\t"),
            HistoryEvent(kind: .unknown, txn: "o", attempt: 3, time: 2, reason: "outcome unknown: \u{1}"),
            HistoryEvent(kind: .ok, txn: "o", attempt: 4, time: 3),
        ]
        let history = History(parsing: events.map(\.jsonLine).joined(separator: "\n") + "\n")
        #expect(history.malformed.isEmpty)
        #expect(history.events == events)
    }
}

let e1 = Epoch(counter: 1, node: 1)

/// Ledgers alone, every entry a commit of a txn with a branch at every participant listed:
/// per participant, (txn, sequence, keys locked).
func ledgers(_ commits: [String: [(txn: String, sequence: UInt64, keys: [String])]]) -> ClusterSnapshot {
    var snapshot = ClusterSnapshot()
    let txns = Set(commits.values.flatMap { $0.map(\.txn) })
    for txn in txns {
        let participants = commits.keys.filter { rm in commits[rm]!.contains { $0.txn == txn } }.sorted()
        for rm in participants {
            let applied = commits[rm]!.first { $0.txn == txn }!
            snapshot.ledgers[rm, default: [:]][txn] = LedgerEntry(
                outcome: .commit, epoch: e1, seenEpoch: e1, participants: participants, sequence: applied.sequence, keys: applied.keys)
        }
    }
    return snapshot
}
let order = HistoryEvent.Order(user: "user-0", sku: "sku-0", qty: 2, amount: 300)

/// Two accounts participants, each seeded with two users of 1,000 cents; transfer x1 moved 100
/// cents from user-0 at accounts to user-1 at accounts-2 and its client was told so.
struct TransferScenario {
    var snapshot = ClusterSnapshot()
    var history: [String] = []
    let initial = InitialState(skus: 0, unitsPerSku: 0, users: 2, centsPerUser: 1_000)

    static func clean() -> TransferScenario {
        var run = TransferScenario()
        run.snapshot.accountsRMs = 2
        run.snapshot.balances = ["accounts/user-0": 900, "accounts/user-1": 1_000, "accounts-2/user-0": 1_000, "accounts-2/user-1": 1_100]
        run.snapshot.debits["x1"] = ("user-0", 100)
        run.snapshot.credits["x1"] = ("user-1", 100)
        let participants = ["accounts", "accounts-2"]
        for rm in participants { run.snapshot.ledgers[rm] = ["x1": LedgerEntry(outcome: .commit, epoch: e1, seenEpoch: e1, participants: participants)] }
        let transfer = HistoryEvent.Transfer(from: "user-0", fromRM: "accounts", to: "user-1", toRM: "accounts-2", amount: 100)
        run.history = [HistoryEvent.invoke("x1", attempt: 1, at: 100, transfer).jsonLine, #"{"type":"ok","txn":"x1","attempt":1,"time":100.5,"outcome":"committed"}"#]
        return run
    }

    func verify() -> VerificationReport {
        Checker.verify(history: History(parsing: history.joined(separator: "\n")), snapshot: snapshot, initial: initial, quiet: true, checkedAt: 101)
    }
}

/// Two SKUs of 10 units, two users with 1,000 cents. t1 committed (attempt 1 unknown, attempt
/// 2 ok: 1.5 s in doubt), t2 aborted, t3 committed but its client never learned it.
struct Scenario {
    var snapshot = ClusterSnapshot()
    var history: [String] = []
    var quiet = true
    let initial = InitialState(skus: 2, unitsPerSku: 10, users: 2, centsPerUser: 1_000)

    static func clean() -> Scenario {
        var run = Scenario()
        run.snapshot.stock = ["sku-0": 10, "sku-1": 10]
        run.snapshot.balances = ["user-0": 1_000, "user-1": 1_000]
        for rm in ["inventory", "orders", "accounts", "tickets"] { run.snapshot.ledgers[rm] = [:] }
        run.snapshot.orderRMs = ["orders"]
        run.commit("t1", order)
        run.commit("t3", HistoryEvent.Order(user: "user-1", sku: "sku-1", qty: 1, amount: 50))
        for rm in ["inventory", "orders"] { run.snapshot.ledgers[rm]!["t2"] = LedgerEntry(outcome: .abort, epoch: e1, seenEpoch: e1) }
        run.history = [
            HistoryEvent.invoke("t1", attempt: 1, at: 100, order).jsonLine,
            #"{"type":"unknown","txn":"t1","attempt":1,"time":100.5,"outcome":"unknown","reason":"n1 down"}"#,
            #"{"type":"invoke","txn":"t2","attempt":1,"time":100.25,"user":"user-1","sku":"sku-1","qty":20,"amount":10}"#,
            #"{"type":"fail","txn":"t2","attempt":1,"time":100.75,"outcome":"aborted","reason":"inventory voted NO: insufficient stock"}"#,
            HistoryEvent.invoke("t1", attempt: 2, at: 101, order).jsonLine,
            #"{"type":"ok","txn":"t1","attempt":2,"time":101.5,"outcome":"committed"}"#,
            HistoryEvent.invoke("t3", attempt: 1, at: 102, HistoryEvent.Order(user: "user-1", sku: "sku-1", qty: 1, amount: 50)).jsonLine,
            #"{"type":"unknown","txn":"t3","attempt":1,"time":103,"outcome":"unknown","reason":"timeout"}"#,
        ]
        return run
    }

    mutating func commit(_ txn: String, _ order: HistoryEvent.Order) {
        snapshot.stock[order.sku]! -= order.qty
        snapshot.reservations[txn] = (order.sku, order.qty)
        snapshot.orders[txn] = ClusterSnapshot.Order(user: order.user, sku: order.sku, qty: order.qty, amount: order.amount)
        snapshot.balances[order.user]! -= order.amount
        snapshot.debits[txn] = (order.user, order.amount)
        let participants = ["inventory", "orders", "accounts"]
        for rm in participants { snapshot.ledgers[rm]![txn] = LedgerEntry(outcome: .commit, epoch: e1, seenEpoch: e1, participants: participants) }
    }

    func checkState() -> VerificationReport {
        Checker.checkState(snapshot, initial: initial, quiet: quiet)
    }

    func verify() -> VerificationReport {
        Checker.verify(history: History(parsing: history.joined(separator: "\n")), snapshot: snapshot, initial: initial, quiet: quiet, checkedAt: 202)
    }
}

/// History files damaged line by line: every line is an event or a reported problem, never a
/// crash.
@Suite struct HistoryFuzzTests {
    @Test func damagedHistoryLinesAreEventsOrReportedProblems() {
        let lines = [
            HistoryEvent.invoke("t1", attempt: 1, at: 100, HistoryEvent.Order(user: "u", sku: "s", qty: 1, amount: 2)).jsonLine,
            HistoryEvent.invoke("x1", attempt: 2, at: 100, HistoryEvent.Transfer(from: "a", fromRM: "r1", to: "b", toRM: "r2", amount: 3)).jsonLine,
            HistoryEvent(kind: .fail, txn: "t1", attempt: 1, time: 101, reason: "inventory voted NO: \"x\"").jsonLine,
        ].map { Array($0.utf8) }
        var rng = SplitMix64(seed: 21)
        for _ in 0..<5_000 {
            var bytes = lines[Int.random(in: 0..<lines.count, using: &rng)]
            for _ in 0..<Int.random(in: 1...3, using: &rng) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                let byte = UInt8.random(in: 0...255, using: &rng)
                if Bool.random(using: &rng) { bytes[at] = byte == 0x0A ? 0x20 : byte } else { bytes = Array(bytes.prefix(at)) }
            }
            let history = History(parsing: String(decoding: bytes, as: UTF8.self))
            #expect(history.events.count + history.malformed.count <= 1)
        }
    }
}
