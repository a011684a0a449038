import DTCClient
import DTCCore
import Foundation

/// The invariants `dtc check` verifies, each printed with its counts.
struct InvariantReport {
    private(set) var lines: [String] = []
    private(set) var violations = 0

    mutating func check(_ snapshot: ClusterSnapshot, seed: ClusterConfig.Seed, quiet: Bool) {
        checkStock(snapshot, seed: seed)
        checkMoney(snapshot, seed: seed)
        checkOrders(snapshot)
        checkAtomicity(snapshot)
        checkAborted(snapshot)
        let prepared = snapshot.prepared.values.reduce(0) { $0 + $1.count }
        verdict(prepared == 0 && quiet, "no RM holds a prepared txn once quiet",
                "\(prepared) prepared\(quiet ? "" : ", cluster did not become quiet in time")",
                examples: snapshot.prepared.flatMap { rm, ids in ids.prefix(3).map { "\(rm): \($0)" } })
    }

    mutating func checkStock(_ snapshot: ClusterSnapshot, seed: ClusterConfig.Seed) {
        var reserved: [String: Int64] = [:]
        for reservation in snapshot.reservations.values { reserved[reservation.sku, default: 0] += reservation.qty }
        let bad = snapshot.stock.filter { $0.value + reserved[$0.key, default: 0] != seed.unitsPerSku }.map(\.key).sorted()
        let missing = snapshot.stock.count == seed.skus ? 0 : 1
        verdict(bad.isEmpty && missing == 0, "stock + reserved = initial stock per SKU",
                "\(snapshot.stock.count) SKUs, \(snapshot.reservations.count) reservations, \(reserved.values.reduce(0, +)) units reserved",
                examples: bad.prefix(3).map { "\($0): stock \(snapshot.stock[$0]!) + reserved \(reserved[$0, default: 0]) != \(seed.unitsPerSku)" })
    }

    mutating func checkMoney(_ snapshot: ClusterSnapshot, seed: ClusterConfig.Seed) {
        let initial = Int64(seed.users) * seed.centsPerUser
        let balances = snapshot.balances.values.reduce(0, +)
        let ordered = snapshot.orders.values.reduce(0) { $0 + $1.amount }
        let debited = snapshot.debits.values.reduce(0) { $0 + $1.amount }
        verdict(initial == balances + ordered && debited == ordered, "initial money = balances + committed order amounts",
                "initial \(initial), balances \(balances), orders \(ordered), debits \(debited)")
    }

    /// Every committed order has exactly one reservation and one debit that match it, and no
    /// reservation or debit exists without its order.
    mutating func checkOrders(_ snapshot: ClusterSnapshot) {
        var problems: [String] = []
        for (id, order) in snapshot.orders {
            if let reservation = snapshot.reservations[id] {
                if reservation.sku != order.sku || reservation.qty != order.qty { problems.append("\(id): reservation differs from order") }
            } else { problems.append("\(id): order without reservation") }
            if let debit = snapshot.debits[id] {
                if debit.user != order.user || debit.amount != order.amount { problems.append("\(id): debit differs from order") }
            } else { problems.append("\(id): order without debit") }
        }
        for id in snapshot.reservations.keys where snapshot.orders[id] == nil { problems.append("\(id): reservation without order") }
        for id in snapshot.debits.keys where snapshot.orders[id] == nil { problems.append("\(id): debit without order") }
        verdict(problems.isEmpty, "every committed order has one reservation and one debit",
                "\(snapshot.orders.count) orders, \(snapshot.reservations.count) reservations, \(snapshot.debits.count) debits",
                examples: Array(problems.sorted().prefix(3)))
    }

    /// No txn is committed at one RM and rolled back at another; a txn committed anywhere is
    /// committed at every RM (each order has a branch at every RM).
    mutating func checkAtomicity(_ snapshot: ClusterSnapshot) {
        let rms = snapshot.ledgers.keys.sorted()
        let txns = Set(snapshot.ledgers.values.flatMap(\.keys))
        var problems: [String] = []
        var committed = 0
        for txn in txns.sorted() {
            let outcomes = rms.map { snapshot.ledgers[$0]![txn] }
            guard outcomes.contains(.commit) else { continue }
            committed += 1
            if outcomes.contains(where: { $0 != .commit }) {
                problems.append("\(txn): " + zip(rms, outcomes).map { "\($0)=\($1?.rawValue ?? "none")" }.joined(separator: " "))
            }
        }
        verdict(problems.isEmpty, "every txn has one outcome at every RM",
                "\(txns.count) txns in the ledgers, \(committed) committed at every RM", examples: Array(problems.prefix(3)))
    }

    mutating func checkAborted(_ snapshot: ClusterSnapshot) {
        let aborted = Set(snapshot.ledgers.values.flatMap { $0.filter { $0.value == .abort }.keys })
        let withEffects = aborted.filter { snapshot.orders[$0] != nil || snapshot.reservations[$0] != nil || snapshot.debits[$0] != nil }
        verdict(withEffects.isEmpty, "every aborted txn has no effect",
                "\(aborted.count) aborted", examples: withEffects.sorted().prefix(3).map { "\($0) has effects" })
    }

    /// What clients were told holds: committed ⇒ applied at every RM, aborted ⇒ at none.
    mutating func checkHistory(_ history: [(txn: String, told: String)], _ snapshot: ClusterSnapshot) {
        var problems: [String] = []
        var counted = (committed: 0, aborted: 0, unknown: 0)
        for (txn, told) in history {
            let outcomes = snapshot.ledgers.values.map { $0[txn] }
            switch told {
            case "committed":
                counted.committed += 1
                if outcomes.contains(where: { $0 != .commit }) || snapshot.orders[txn] == nil { problems.append("\(txn): told committed, not applied everywhere") }
            case "aborted":
                counted.aborted += 1
                if outcomes.contains(.commit) || snapshot.orders[txn] != nil { problems.append("\(txn): told aborted, but applied") }
            default:
                counted.unknown += 1
            }
        }
        verdict(problems.isEmpty, "what clients were told holds",
                "\(history.count) told: \(counted.committed) committed, \(counted.aborted) aborted, \(counted.unknown) unknown",
                examples: Array(problems.prefix(3)))
    }

    private mutating func verdict(_ holds: Bool, _ name: String, _ counts: String, examples: [String] = []) {
        if !holds { violations += 1 }
        lines.append("\(holds ? "ok  " : "FAIL") \(name): \(counts)")
        lines += examples.map { "       e.g. \($0)" }
    }

    func print() {
        for line in lines { Swift.print(line) }
        Swift.print(violations == 0 ? "check: all invariants hold" : "check: \(violations) violation(s)")
    }
}
