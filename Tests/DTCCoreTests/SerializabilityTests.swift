import Testing

@testable import DTCCore

/// The precedence graph of committed txns from the participants' ledgers: consecutive lockers of
/// a key are ordered, a cycle is found and named edge by edge, unordered entries are counted.
@Suite struct SerializabilityTests {
    typealias Application = Serializability.Application

    private func applied(_ txn: String, _ sequence: UInt64, _ keys: [String]) -> Application {
        Application(txnID: TxnID(txn), sequence: sequence, keys: keys)
    }

    @Test func twoTxnsOrderedOppositeWaysAtTwoParticipantsAreACycle() throws {
        let verdict = Serializability.check([
            "inventory": [applied("T1", 1, ["a"]), applied("T2", 2, ["a"])],
            "accounts": [applied("T2", 1, ["b"]), applied("T1", 2, ["b"])],
        ])
        let cycle = try #require(verdict.cycle)
        #expect(cycle == [
            Serializability.Edge(from: TxnID("T1"), to: TxnID("T2"), participant: "inventory", key: "a"),
            Serializability.Edge(from: TxnID("T2"), to: TxnID("T1"), participant: "accounts", key: "b"),
        ])
        #expect(verdict.cycleDescription == "T1 → T2 (inventory: a) → T1 (accounts: b)")
        #expect(verdict.txns == 2 && verdict.edges == 2 && verdict.unorderedEntries == 0)
    }

    @Test func consecutiveLockersOfEachKeyAreEdgesAndAnAgreeingOrderIsAcyclic() {
        // inventory: a is locked by T1, T2, T3 (2 edges); b by T1, T3 (1 edge, T1 → T3).
        // accounts: c by T2, T3 (T2 → T3, already counted); d by T4 alone. orders: T1, T4 on e.
        let verdict = Serializability.check([
            "inventory": [applied("T3", 7, ["a", "b"]), applied("T1", 2, ["a", "b"]), applied("T2", 5, ["a"])],
            "accounts": [applied("T2", 1, ["c"]), applied("T3", 4, ["c"]), applied("T4", 9, ["d"])],
            "orders": [applied("T4", 3, ["e"]), applied("T1", 1, ["e"])],
        ])
        #expect(verdict.isAcyclic && verdict.cycle == nil && verdict.cycleDescription == nil)
        #expect(verdict.edges == 4, "T1→T2, T2→T3, T1→T3, T1→T4; T2→T3 a second time does not count")
        #expect(verdict.txns == 4 && verdict.unorderedEntries == 0)
    }

    @Test func entriesWithoutAnOrderAreLeftOutAndCounted() {
        // With T2's inventory entry, the graph would have the cycle of the first test.
        let verdict = Serializability.check([
            "inventory": [applied("T1", 1, ["a"]), applied("T2", 0, ["a"])],
            "accounts": [applied("T2", 1, ["b"]), applied("T1", 2, ["b"]), applied("T3", 0, [])],
        ])
        #expect(verdict.isAcyclic)
        #expect(verdict.unorderedEntries == 2 && verdict.edges == 1 && verdict.txns == 2)
    }

    @Test func onlyTheCommitsOfALedgerAreInTheGraph() {
        let epoch = Epoch(counter: 1, node: 1)
        let verdict = Serializability.check(ledgers: [
            "inventory": [
                TxnID("T1"): LedgerEntry(outcome: .commit, epoch: epoch, sequence: 1, keys: ["a"]),
                TxnID("T2"): LedgerEntry(outcome: .commit, epoch: epoch, sequence: 3, keys: ["a"]),
                TxnID("T9"): LedgerEntry(outcome: .abort, epoch: epoch, sequence: 2, keys: ["a"]),
            ],
            "accounts": [
                TxnID("T2"): LedgerEntry(outcome: .commit, epoch: epoch, sequence: 1, keys: ["b"]),
                TxnID("T1"): LedgerEntry(outcome: .commit, epoch: epoch, sequence: 2, keys: ["b"]),
                TxnID("T8"): LedgerEntry(outcome: .abort, epoch: epoch),
            ],
        ])
        #expect(verdict.cycleDescription == "T1 → T2 (inventory: a) → T1 (accounts: b)", "T9's abort does not stand between T1 and T2")
        #expect(verdict.txns == 2 && verdict.unorderedEntries == 0, "aborts are neither in the graph nor counted as unordered")
    }

    @Test func theCycleFoundIsTheSameWhateverTheInputOrder() {
        // A cycle of three behind a chain, and an acyclic tail: T5 → T1 → T2 → T3 → T1, T3 → T4.
        let inventory = [applied("T5", 1, ["k"]), applied("T1", 2, ["k"]), applied("T2", 3, ["k", "m"])]
        let accounts = [applied("T2", 1, ["x"]), applied("T3", 2, ["x", "y"]), applied("T4", 3, ["y"])]
        let orders = [applied("T3", 1, ["z"]), applied("T1", 2, ["z"])]
        let forward = Serializability.check(["inventory": inventory, "accounts": accounts, "orders": orders])
        let backward = Serializability.check(["inventory": inventory.reversed(), "accounts": accounts.reversed(), "orders": orders.reversed()])
        #expect(forward == backward)
        #expect(forward.cycleDescription == "T1 → T2 (inventory: k) → T3 (accounts: x) → T1 (orders: z)")
    }

    /// A chain of 100,000 txns: no recursion runs out of stack; closed into a ring, the whole
    /// ring is the cycle.
    @Test func aLongChainIsCheckedWithoutRecursionAndItsRingIsFound() throws {
        let count = 100_000
        let names = (0..<count).map { "t\(String($0 + 1_000_000))" }  // zero-padded: txn ID order is chain order
        let chain = names.enumerated().map { applied($0.element, UInt64($0.offset + 1), ["hot"]) }
        let straight = Serializability.check(["inventory": chain])
        #expect(straight.isAcyclic && straight.edges == count - 1 && straight.txns == count)

        let closing = [applied(names[count - 1], 1, ["ring"]), applied(names[0], 2, ["ring"])]
        let ring = Serializability.check(["inventory": chain, "accounts": closing])
        let cycle = try #require(ring.cycle)
        #expect(cycle.count == count && ring.edges == count)
        #expect(cycle.first?.from == TxnID(names[0]) && cycle.last == Serializability.Edge(from: TxnID(names[count - 1]), to: TxnID(names[0]), participant: "accounts", key: "ring"))
        #expect(zip(cycle, cycle.dropFirst()).allSatisfy { $0.to == $1.from })
    }
}
