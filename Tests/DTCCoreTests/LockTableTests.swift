import Testing

@testable import DTCCore

/// Strict two-phase locking with wait-die: older waits, younger dies, so no deadlock.
@Suite struct LockTableTests {
    let old = TxnID("old")
    let young = TxnID("young")
    let younger = TxnID("younger")

    @Test func anOlderRequesterWaitsAndAYoungerOneDies() {
        var locks = LockTable()
        #expect(locks.acquire(["k"], for: young, stamp: 20) == .granted)
        #expect(locks.acquire(["k"], for: old, stamp: 10) == .waiting(for: young))
        #expect(locks.blocker(of: old) == young)
        #expect(locks.acquire(["k"], for: younger, stamp: 30) == .died(holder: young))
        #expect(locks.waiterCount == 1, "a txn that died does not wait")

        let released = locks.release(young)
        #expect(released.granted == [old])
        #expect(released.died.isEmpty)
        #expect(locks.holder(of: "k") == old)
        #expect(locks.blocker(of: old) == nil)
    }

    @Test func locksAreTakenAllOrNone() {
        var locks = LockTable()
        #expect(locks.acquire(["b"], for: old, stamp: 10) == .granted)
        #expect(locks.acquire(["a", "b"], for: young, stamp: 20) == .died(holder: old))
        #expect(locks.holder(of: "a") == nil, "a txn that died holds none of its keys")
        #expect(locks.acquire(["b", "c"], for: old, stamp: 10) == .granted, "keys a txn holds count as granted")
        #expect(locks.lockCount == 2)
    }

    @Test func aWithdrawnWaiterIsNotGrantedLater() {
        var locks = LockTable()
        _ = locks.acquire(["k"], for: young, stamp: 20)
        _ = locks.acquire(["k"], for: old, stamp: 10)
        locks.withdraw(old)
        #expect(locks.waiterCount == 0)
        #expect(locks.release(young).granted.isEmpty)
        #expect(locks.lockCount == 0)
    }

    /// Many random acquire/withdraw/release steps over few keys and txns: after every step every
    /// waiter has a blocker, every wait edge goes from an older stamp to a younger one, and
    /// following blockers never cycles. The seed is in the message, so a failure replays.
    @Test(arguments: [1, 2, 3, 42, 0xdead_beef] as [UInt64])
    func waitEdgesAlwaysGoFromOlderToYoungerAndNeverCycle(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let keys = ["k0", "k1", "k2", "k3"]
        let txns = (0..<8).map { TxnID("t\($0)") }
        var stamps: [TxnID: StartStamp] = [:]
        var unique = Set<StartStamp>()
        for txn in txns {
            var stamp = random.next() % 1_000
            while !unique.insert(stamp).inserted { stamp = random.next() % 1_000 }
            stamps[txn] = stamp
        }

        var locks = LockTable()
        var waiting = Set<TxnID>()
        for step in 0..<5_000 {
            let txn = txns.randomElement(using: &random)!
            let context = "seed \(seed), step \(step)"
            switch (waiting.contains(txn), random.next() % 3) {
            case (true, 0):
                locks.withdraw(txn)
                waiting.remove(txn)
            case (false, 0), (false, 1):
                let wanted = Array(keys.shuffled(using: &random).prefix(Int(random.next() % 3) + 1))
                switch locks.acquire(wanted, for: txn, stamp: stamps[txn]!) {
                case .granted:
                    #expect(wanted.allSatisfy { locks.holder(of: $0) == txn }, "\(context)")
                case .waiting(let holder):
                    #expect(stamps[txn]! < stamps[holder]!, "\(context): \(txn) waits for an older \(holder)")
                    waiting.insert(txn)
                case .died(let holder):
                    #expect(stamps[txn]! > stamps[holder]!, "\(context): \(txn) died for a younger \(holder)")
                }
            case (_, _):
                let released = locks.release(txn)
                waiting.remove(txn)
                waiting.subtract(released.granted)
                waiting.subtract(released.died.map(\.0))
            }
            try checkWaitsForGraph(locks, waiting: waiting, stamps: stamps, context)
        }
    }

    private func checkWaitsForGraph(
        _ locks: LockTable, waiting: Set<TxnID>, stamps: [TxnID: StartStamp], _ context: String
    ) throws {
        #expect(locks.waiterCount == waiting.count, "\(context)")
        for waiter in waiting {
            let blocker = try #require(locks.blocker(of: waiter), "\(context): \(waiter) waits for nobody")
            #expect(stamps[waiter]! < stamps[blocker]!, "\(context): \(waiter) → \(blocker) goes young to old")
            var chain = [waiter]
            var current = waiter
            while let next = locks.blocker(of: current) {
                guard !chain.contains(next) else {
                    Issue.record("\(context): the waits-for graph cycles: \(chain + [next])")
                    return
                }
                chain.append(next)
                current = next
            }
        }
    }
}
