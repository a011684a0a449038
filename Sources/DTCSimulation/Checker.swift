import DTCCore

/// The invariants of DESIGN.md, checked after every event of a simulation.
struct Checker {
    private(set) var violations: [String] = []
    /// The outcome each RM durably applied, per txn.
    private var applied: [TxnID: [Int: Outcome]] = [:]
    /// COMMITs an RM made durable, per txn and RM: more than one is an effect applied twice.
    private var commits: [TxnID: [Int: Int]] = [:]
    /// The first decision any process made durable, per txn: it must never change.
    private var decided: [TxnID: Outcome] = [:]
    /// RMs that durably prepared a txn at some point.
    private var preparedAt: [TxnID: Set<Int>] = [:]
    private var told: [TxnID: TxnStatus] = [:]
    private var branches: [TxnID: [Branch]] = [:]
    private(set) var committedTxns: Set<TxnID> = []
    /// How many of each node's synced log records were checked already.
    private var nodeRecordsChecked: [Int: Int] = [:]
    /// RMs whose committed state changed since the last check.
    private var changedRMs: Set<Int> = []

    mutating func fail(_ violation: String) {
        violations.append(violation)
    }

    mutating func submitted(_ txnID: TxnID, _ branches: [Branch]) {
        self.branches[txnID] = branches
    }

    /// A client is told an outcome: it must agree with what every RM applies, now and later.
    mutating func told(_ reply: ClientReply, by simulation: Simulation) {
        guard reply.status != .preparing else { return }
        if let earlier = told[reply.txnID], earlier != reply.status {
            fail("told outcome changed: \(reply.txnID) was told \(earlier), now \(reply.status)")
        }
        told[reply.txnID] = reply.status
        record(reply.txnID, reply.status == .committed ? .commit : .abort, by: "a client")
    }

    /// Records an RM made durable.
    mutating func synced(_ records: [ParticipantRecord], at rm: Int, in simulation: Simulation) {
        if !records.isEmpty { changedRMs.insert(rm) }
        for record in records {
            switch record {
            case .prepared(let prepared):
                preparedAt[prepared.txnID, default: []].insert(rm)
            case .committed(let txnID, _, _, _):
                commits[txnID, default: [:]][rm, default: 0] += 1
                if commits[txnID]![rm]! > 1 { fail("exactly once: \(txnID) committed twice at \(Simulation.rmNames[rm])") }
                apply(txnID, .commit, at: rm)
                let voters = Set(branches[txnID]?.compactMap { Simulation.rmNames.firstIndex(of: $0.rm) } ?? [])
                let missing = voters.subtracting(preparedAt[txnID] ?? [])
                if !missing.isEmpty {
                    fail("commit without durable YES: \(txnID) committed at \(Simulation.rmNames[rm]) but never durably prepared at \(missing.sorted().map { Simulation.rmNames[$0] })")
                }
            case .aborted(let txnID, _, _):
                apply(txnID, .abort, at: rm)
            }
        }
    }

    private mutating func apply(_ txnID: TxnID, _ outcome: Outcome, at rm: Int) {
        if let earlier = applied[txnID]?[rm], earlier != outcome {
            fail("exactly once: \(txnID) applied \(earlier) then \(outcome) at \(Simulation.rmNames[rm])")
        }
        applied[txnID, default: [:]][rm] = outcome
        if outcome == .commit { committedTxns.insert(txnID) }
        record(txnID, outcome, by: Simulation.rmNames[rm])
    }

    private mutating func record(_ txnID: TxnID, _ outcome: Outcome, by whom: String) {
        if let first = decided[txnID], first != outcome {
            fail("atomicity / a decision changed: \(txnID) is \(first) elsewhere but \(outcome) at \(whom)")
        }
        if decided[txnID] == nil { decided[txnID] = outcome }
    }

    /// After every event: the coordinators' synced decisions agree with the rest, and each RM's
    /// business state conserves stock and money.
    mutating func check(_ simulation: Simulation) {
        for node in simulation.nodes {
            let synced = node.disk.synced
            for entry in synced[(nodeRecordsChecked[node.index] ?? 0)...] {
                if case .decision(let txnID, let outcome, _, _) = entry.record { record(txnID, outcome, by: "n\(node.index)'s log") }
            }
            nodeRecordsChecked[node.index] = synced.count
        }
        for rm in changedRMs.sorted() { checkConservation(simulation.rms[rm]) }
        changedRMs = []
    }

    private mutating func checkConservation(_ rm: SimRM) {
        let state = rm.committedState
        switch rm.name {
        case "inventory":
            for sku in 0..<3 {
                guard case .count(let stock) = state[StateKey.stock("sku-\(sku)")] else { continue }
                let reserved = state.values.reduce(Int64(0)) { sum, value in
                    if case .reservation("sku-\(sku)", let qty) = value { return sum + qty }
                    return sum
                }
                if stock + reserved != Simulation.seedStock || stock < 0 {
                    fail("stock not conserved for sku-\(sku): \(stock) + \(reserved) != \(Simulation.seedStock)")
                }
            }
        case "accounts":
            for user in 0..<3 {
                guard case .count(let balance) = state[StateKey.balance("user-\(user)")] else { continue }
                let debited = state.values.reduce(Int64(0)) { sum, value in
                    if case .debit("user-\(user)", let amount) = value { return sum + amount }
                    return sum
                }
                if balance + debited != Simulation.seedBalance || balance < 0 {
                    fail("money not conserved for user-\(user): \(balance) + \(debited) != \(Simulation.seedBalance)")
                }
            }
        default:
            break
        }
    }

    /// When the run ends (faults long stopped): every txn a client was told has that outcome at
    /// every RM of its branches, and no RM holds a prepared txn.
    mutating func checkEnd(_ simulation: Simulation) {
        for (txnID, status) in told.sorted(by: { $0.key < $1.key }) {
            let outcome: Outcome = status == .committed ? .commit : .abort
            for rm in (branches[txnID] ?? []).compactMap({ Simulation.rmNames.firstIndex(of: $0.rm) }) where outcome == .commit {
                if applied[txnID]?[rm] != .commit {
                    fail("liveness: \(txnID) was told committed but is not applied at \(Simulation.rmNames[rm])")
                }
            }
        }
        for rm in simulation.rms where (rm.core?.preparedCount ?? 0) > 0 {
            fail("liveness: \(rm.name) still holds \(rm.core!.preparedCount) prepared txns after faults stopped")
        }
        if !simulation.clients.allSatisfy(\.isFinished) {
            fail("liveness: a client never got an answer after faults stopped")
        }
    }
}
