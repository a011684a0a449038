import DTCCore
import Foundation

/// The kinds of violation the checker reports, one per invariant of DESIGN.md it checks.
public enum ViolationKind: String, Hashable, Sendable, CaseIterable, Comparable {
    case malformedHistory = "the history is well-formed"
    case notInvoked = "every txn in the ledgers was invoked by a client"
    case atomicity = "every txn has one outcome at every RM"
    case toldCommittedNotApplied = "told committed ⇒ applied at every RM, as ordered"
    case toldAbortedButApplied = "told aborted ⇒ applied at no RM"
    case toldContradiction = "no txn was told committed on one attempt and aborted on another"
    case appliedTwice = "no decision was applied twice at an RM"
    case staleEpoch = "no RM applied a decision from an epoch lower than one it had seen"
    case notSerializable = "committed txns are serializable (the precedence graph from the participants' ledgers is acyclic)"
    case leftPrepared = "no RM holds a prepared txn once quiet"
    case abortedWithEffects = "every aborted txn has no effect"
    case stockNotConserved = "stock + reserved = initial stock per SKU"
    case moneyNotConserved = "initial money = balances + debits - credits"
    case orderIncomplete = "every committed order has one matching reservation and debit"
    case transferIncomplete = "every committed transfer has one debit and one credit of its amount"

    public static func < (lhs: ViolationKind, rhs: ViolationKind) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// One checked invariant: what was counted, and every problem found (each is one violation).
public struct Finding: Sendable {
    public var kind: ViolationKind
    public var counts: String
    public var problems: [String]

    public var holds: Bool { problems.isEmpty }
}

/// What happened to the clients' txns, from the history (and, for txns no client learned the
/// outcome of, from the ledgers).
public struct HistoryStats: Sendable, Equatable {
    public var attempts = 0
    public var completions: [HistoryEvent.Kind: Int] = [:]
    /// Attempts with an invoke and no completion (the client was stopped first).
    public var open = 0
    public var txns = 0
    /// Txns sent more than once with the same ID.
    public var retriedTxns = 0
    public var toldCommitted = 0
    public var toldAborted = 0
    /// Txns no client learned the outcome of, by their outcome in the ledgers.
    public var neverToldCommitted = 0
    public var neverToldAborted = 0
    /// Longest time from a txn's first invoke to the first definite answer a client got.
    public var maxInDoubtToldSeconds = 0.0
    public var maxInDoubtToldTxn = ""
    /// For txns no client learned the outcome of: first invoke → the moment the checker saw
    /// every RM resolved (an upper bound on their time in doubt).
    public var maxInDoubtNeverToldSeconds = 0.0
    public var maxInDoubtNeverToldTxn = ""

    public var maxInDoubtSeconds: Double { max(maxInDoubtToldSeconds, maxInDoubtNeverToldSeconds) }
}

public struct VerificationReport: Sendable {
    public var findings: [Finding] = []
    public var stats: HistoryStats?

    public var violations: Int { findings.reduce(0) { $0 + $1.problems.count } }
    public var violatedKinds: Set<ViolationKind> { Set(findings.filter { !$0.holds }.map(\.kind)) }

    /// One line per invariant, then up to three examples for each that failed.
    public var lines: [String] {
        var lines: [String] = []
        for finding in findings {
            let verdict = finding.holds ? "ok  " : "FAIL"
            let count = finding.holds ? "" : " [\(finding.problems.count) violation(s)]"
            lines.append("\(verdict) \(finding.kind.rawValue): \(finding.counts)\(count)")
            lines += finding.problems.prefix(3).map { "       e.g. \($0)" }
        }
        return lines
    }

    mutating func add(_ kind: ViolationKind, _ counts: String, _ problems: [String]) {
        findings.append(Finding(kind: kind, counts: counts, problems: problems))
    }
}

/// The independent checker: pure functions over what the RMs hold and what clients were told.
/// It trusts no coordinator: every verdict comes from the RMs' durable state and the history.
public enum Checker {
    /// Atomicity, exactly-once, epochs and prepared txns from every participant's ledger, for
    /// any participant that follows the contract; with the shop's `initial` state (where the
    /// shop runs), also the shop's business invariants.
    public static func checkState(_ snapshot: ClusterSnapshot, initial: InitialState?, quiet: Bool) -> VerificationReport {
        var report = VerificationReport()
        checkAtomicity(snapshot, into: &report)
        checkLedgerEntries(snapshot, into: &report)
        checkSerializable(snapshot, into: &report)
        let prepared = snapshot.prepared.flatMap { rm, ids in ids.sorted().map { "\(rm): \($0) still prepared" } }.sorted()
        report.add(.leftPrepared, "\(prepared.count) prepared\(quiet ? "" : ", the cluster did not become quiet in time")",
                   prepared + (quiet ? [] : ["the cluster did not become quiet in time"]))
        checkAborted(snapshot, into: &report)
        if let initial {
            checkStock(snapshot, initial: initial, into: &report)
            checkMoney(snapshot, initial: initial, into: &report)
            checkOrders(snapshot, into: &report)
            checkTransfers(snapshot, into: &report)
        }
        return report
    }

    /// `checkState` plus the history: it is well-formed, what clients were told holds, and the
    /// statistics; if the history is `complete` (every txn the RMs saw came from its clients),
    /// also that every applied txn was invoked. `checkedAt` is when the snapshot was taken.
    public static func verify(
        history: History, complete: Bool = true, snapshot: ClusterSnapshot, initial: InitialState?, quiet: Bool, checkedAt: Double
    ) -> VerificationReport {
        var report = checkState(snapshot, initial: initial, quiet: quiet)
        var historyReport = VerificationReport()
        let attempts = checkWellFormed(history, into: &historyReport)
        if complete { checkInvoked(attempts, snapshot, into: &historyReport) }
        checkTold(attempts, snapshot, into: &historyReport)
        report.findings = historyReport.findings + report.findings
        report.stats = stats(attempts, history, snapshot, checkedAt: checkedAt)
        return report
    }

    // MARK: - History

    /// One attempt of one txn: its invoke and its completion, if any.
    struct Attempt {
        var invoke: HistoryEvent
        var completion: HistoryEvent?
    }

    /// Per txn, its attempts in order.
    typealias Attempts = [String: [Int: Attempt]]

    static func checkWellFormed(_ history: History, into report: inout VerificationReport) -> Attempts {
        var problems = history.malformed.map { "line \($0.line): \($0.problem)" }
        var attempts: Attempts = [:]
        for event in history.events {
            let name = "\(event.txn) attempt \(event.attempt)"
            switch event.kind {
            case .invoke:
                if attempts[event.txn]?[event.attempt] != nil { problems.append("\(name): invoked twice") }
                attempts[event.txn, default: [:]][event.attempt] = Attempt(invoke: event)
            case .ok, .fail, .unknown:
                guard var attempt = attempts[event.txn]?[event.attempt] else {
                    problems.append("\(name): \(event.kind.rawValue) without an invoke before it")
                    continue
                }
                if attempt.completion != nil { problems.append("\(name): completed twice") }
                if event.time < attempt.invoke.time { problems.append("\(name): completed before it was invoked") }
                attempt.completion = event
                attempts[event.txn]![event.attempt] = attempt
            }
        }
        report.add(.malformedHistory, "\(history.events.count) events, \(history.malformed.count) unreadable lines", problems)
        return attempts
    }

    static func checkInvoked(_ attempts: Attempts, _ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        let applied = Set(snapshot.ledgers.values.flatMap(\.keys)).union(snapshot.orders.keys)
        let uninvoked = applied.filter { attempts[$0] == nil }.sorted()
        report.add(.notInvoked, "\(applied.count) txns at the RMs, \(attempts.count) invoked",
                   uninvoked.map { "\($0): at the RMs, never invoked" })
    }

    /// What clients were told holds: committed ⇒ applied at every RM as ordered; aborted ⇒
    /// at none; and no two attempts were told different outcomes.
    static func checkTold(_ attempts: Attempts, _ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        let rms = snapshot.ledgers.keys.sorted()
        var notApplied: [String] = [], applied: [String] = [], contradictions: [String] = []
        var told = (committed: 0, aborted: 0)
        for txn in attempts.keys.sorted() {
            let completions = attempts[txn]!.values.compactMap(\.completion).map(\.kind)
            let committed = completions.contains(.ok), aborted = completions.contains(.fail)
            if committed && aborted { contradictions.append("\(txn): told committed and told aborted") }
            let involved = snapshot.participants(of: txn)
            let outcomes = involved.map { snapshot.ledgers[$0]![txn]?.outcome }
            let describe = zip(involved, outcomes).map { "\($0)=\($1?.rawValue ?? "none")" }.joined(separator: " ")
            if committed {
                told.committed += 1
                if outcomes.contains(where: { $0 != .commit }) {
                    notApplied.append("\(txn): told committed, but \(describe)")
                } else if let transfer = attempts[txn]!.values.compactMap(\.invoke.transfer).first {
                    if snapshot.debits[txn].map({ $0.user == transfer.from && $0.amount == transfer.amount }) != true
                        || snapshot.credits[txn].map({ $0.user == transfer.to && $0.amount == transfer.amount }) != true
                    {
                        notApplied.append("\(txn): told committed, but its debit and credit differ from the transfer invoked")
                    }
                } else if let order = snapshot.orders[txn] {
                    let invoked = attempts[txn]!.sorted { $0.key < $1.key }.compactMap(\.value.invoke.order).first
                    if let invoked, order != ClusterSnapshot.Order(user: invoked.user, sku: invoked.sku, qty: invoked.qty, amount: invoked.amount) {
                        notApplied.append("\(txn): told committed, but the order applied differs from the one invoked")
                    }
                } else {
                    notApplied.append("\(txn): told committed, but no order was created")
                }
            }
            if aborted {
                told.aborted += 1
                if outcomes.contains(.commit) || snapshot.hasEffects(txn) { applied.append("\(txn): told aborted, but \(describe)") }
            }
        }
        report.add(.toldCommittedNotApplied, "\(told.committed) txns told committed", notApplied)
        report.add(.toldAbortedButApplied, "\(told.aborted) txns told aborted", applied)
        report.add(.toldContradiction, "\(attempts.count) txns invoked", contradictions)
    }

    static func stats(_ attempts: Attempts, _ history: History, _ snapshot: ClusterSnapshot, checkedAt: Double) -> HistoryStats {
        var stats = HistoryStats()
        stats.txns = attempts.count
        for event in history.events where event.kind != .invoke { stats.completions[event.kind, default: 0] += 1 }
        for txn in attempts.keys.sorted() {
            let tries = attempts[txn]!.values
            stats.attempts += tries.count
            stats.open += tries.filter { $0.completion == nil }.count
            if tries.count > 1 { stats.retriedTxns += 1 }
            let start = tries.map(\.invoke.time).min()!
            let definite = tries.compactMap(\.completion).filter { $0.kind == .ok || $0.kind == .fail }
            if let first = definite.min(by: { $0.time < $1.time }) {
                if first.kind == .ok { stats.toldCommitted += 1 } else { stats.toldAborted += 1 }
                if first.time - start > stats.maxInDoubtToldSeconds { (stats.maxInDoubtToldSeconds, stats.maxInDoubtToldTxn) = (first.time - start, txn) }
            } else {
                let committed = snapshot.ledgers.values.contains { $0[txn]?.outcome == .commit }
                if committed { stats.neverToldCommitted += 1 } else { stats.neverToldAborted += 1 }
                if checkedAt - start > stats.maxInDoubtNeverToldSeconds {
                    (stats.maxInDoubtNeverToldSeconds, stats.maxInDoubtNeverToldTxn) = (checkedAt - start, txn)
                }
            }
        }
        return stats
    }

    // MARK: - The RMs' state

    /// A txn committed at one participant is committed at every participant its ledger entries
    /// name (the txn's branches, as its PREPAREs listed them), and no txn is committed at one
    /// participant and aborted at another. Works for any participant that keeps the ledger.
    static func checkAtomicity(_ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        let txns = Set(snapshot.ledgers.values.flatMap(\.keys))
        var problems: [String] = []
        var committed = 0
        for txn in txns.sorted() {
            let entries = snapshot.ledgers.compactMapValues { $0[txn] }
            guard entries.values.contains(where: { $0.outcome == .commit }) else { continue }
            committed += 1
            let involved = snapshot.participants(of: txn)
            if involved.contains(where: { entries[$0]?.outcome != .commit }) {
                problems.append("\(txn): " + involved.map { "\($0)=\(entries[$0]?.outcome.rawValue ?? "none")" }.joined(separator: " "))
            }
        }
        report.add(.atomicity, "\(txns.count) txns in the ledgers, \(committed) committed", problems)
    }

    /// Exactly once and epoch fencing, from each ledger entry's own record.
    static func checkLedgerEntries(_ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        var twice: [String] = [], stale: [String] = []
        var entries = 0
        for rm in snapshot.ledgers.keys.sorted() {
            for (txn, entry) in snapshot.ledgers[rm]!.sorted(by: { $0.key < $1.key }) {
                entries += 1
                if entry.applications > 1 { twice.append("\(rm): \(txn) \(entry.outcome.rawValue) applied \(entry.applications) times") }
                if entry.isFromStaleEpoch {
                    stale.append("\(rm): \(txn) \(entry.outcome.rawValue) at epoch \(entry.epoch) after it had seen epoch \(entry.seenEpoch)")
                }
            }
        }
        report.add(.appliedTwice, "\(entries) ledger entries", twice)
        report.add(.staleEpoch, "\(entries) ledger entries", stale)
    }

    /// Isolation, from the order in which each participant applied its commits and the keys
    /// each locked (`Serializability`). Entries without that order (written before ledgers
    /// kept it, or by a participant that keeps none, such as dtc-pg) are left out and counted.
    static func checkSerializable(_ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        let ledgers = snapshot.ledgers.mapValues { ledger in
            Dictionary(uniqueKeysWithValues: ledger.map { (TxnID($0.key), $0.value) })
        }
        let verdict = Serializability.check(ledgers: ledgers)
        var counts = "\(grouped(verdict.txns)) committed txns, \(grouped(verdict.edges)) edges, \(verdict.isAcyclic ? "acyclic" : "a cycle")"
        if verdict.unorderedEntries > 0 {
            counts += "; \(grouped(verdict.unorderedEntries)) committed entries without an apply order left out"
        }
        let problems = verdict.cycleDescription.map { ["cycle of \(verdict.cycle!.count) txns: \($0)"] } ?? []
        report.add(.notSerializable, counts, problems)
    }

    /// 12345 → "12,345".
    static func grouped(_ number: Int) -> String {
        let digits = String(number.magnitude)
        let groups = stride(from: digits.count, to: 0, by: -3).reversed().map { end in
            let start = max(end - 3, 0)
            return digits.dropFirst(start).prefix(end - start)
        }
        return (number < 0 ? "-" : "") + groups.joined(separator: ",")
    }

    static func checkAborted(_ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        let aborted = Set(snapshot.ledgers.values.flatMap { $0.filter { $0.value.outcome == .abort }.keys })
        let withEffects = aborted.filter(snapshot.hasEffects).sorted()
        report.add(.abortedWithEffects, "\(aborted.count) aborted", withEffects.map { "\($0): aborted at an RM, has effects" })
    }

    static func checkStock(_ snapshot: ClusterSnapshot, initial: InitialState, into report: inout VerificationReport) {
        var reserved: [String: Int64] = [:]
        for reservation in snapshot.reservations.values { reserved[reservation.sku, default: 0] += reservation.qty }
        var problems = snapshot.stock.keys.sorted().compactMap { sku -> String? in
            let total = snapshot.stock[sku]! + reserved[sku, default: 0]
            return total == initial.unitsPerSku ? nil : "\(sku): stock \(snapshot.stock[sku]!) + reserved \(reserved[sku, default: 0]) != \(initial.unitsPerSku)"
        }
        if snapshot.stock.count != initial.skus { problems.append("\(snapshot.stock.count) SKUs in stock, \(initial.skus) seeded") }
        for sku in reserved.keys.sorted() where snapshot.stock[sku] == nil { problems.append("\(sku): reserved but not in stock") }
        report.add(.stockNotConserved, "\(snapshot.stock.count) SKUs, \(snapshot.reservations.count) reservations, \(reserved.values.reduce(0, +)) units reserved", problems)
    }

    /// Every accounts participant was seeded with every user's money; debits take it out of
    /// balances, credits (the second half of transfers) put it back.
    static func checkMoney(_ snapshot: ClusterSnapshot, initial: InitialState, into report: inout VerificationReport) {
        let accounts = initial.users * snapshot.accountsRMs
        let money = Int64(accounts) * initial.centsPerUser
        let balances = snapshot.balances.values.reduce(0, +)
        let ordered = snapshot.orders.values.reduce(0) { $0 + $1.amount }
        let debited = snapshot.debits.values.reduce(0) { $0 + $1.amount }
        let credited = snapshot.credits.values.reduce(0) { $0 + $1.amount }
        let debitedForOrders = snapshot.debits.filter { snapshot.isOrder($0.key) }.values.reduce(0) { $0 + $1.amount }
        var problems: [String] = []
        if money != balances + debited - credited {
            problems.append("initial \(money) != balances \(balances) + debits \(debited) - credits \(credited)")
        }
        if debitedForOrders != ordered { problems.append("debits of orders \(debitedForOrders) != order amounts \(ordered)") }
        if snapshot.balances.count != accounts { problems.append("\(snapshot.balances.count) accounts, \(accounts) seeded") }
        let transfers = snapshot.credits.isEmpty ? "" : ", credits \(credited)"
        report.add(.moneyNotConserved, "initial \(money), balances \(balances), orders \(ordered), debits \(debited)\(transfers)", problems)
    }

    /// A credit exists only with the debit of the same transfer, of the same amount (the
    /// atomicity check covers a debit whose credit is missing: its txn names both branches).
    static func checkTransfers(_ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        var problems: [String] = []
        for (id, credit) in snapshot.credits {
            if let debit = snapshot.debits[id] {
                if debit.amount != credit.amount { problems.append("\(id): debit \(debit.amount) != credit \(credit.amount)") }
            } else {
                problems.append("\(id): credit without debit")
            }
        }
        report.add(.transferIncomplete, "\(snapshot.credits.count) transfers credited", problems.sorted())
    }

    /// Every committed order has exactly one reservation and one debit that match it, and no
    /// reservation or debit exists without its order.
    static func checkOrders(_ snapshot: ClusterSnapshot, into report: inout VerificationReport) {
        var problems: [String] = []
        for (id, order) in snapshot.orders {
            if let reservation = snapshot.reservations[id] {
                if reservation.sku != order.sku || reservation.qty != order.qty { problems.append("\(id): reservation differs from order") }
            } else { problems.append("\(id): order without reservation") }
            if let debit = snapshot.debits[id] {
                if debit.user != order.user || debit.amount != order.amount { problems.append("\(id): debit differs from order") }
            } else { problems.append("\(id): order without debit") }
        }
        // A reservation or debit of a txn that has no branch at the orders service is not part
        // of an order (another participant's txn may debit an account).
        for id in snapshot.reservations.keys where snapshot.orders[id] == nil && snapshot.isOrder(id) { problems.append("\(id): reservation without order") }
        for id in snapshot.debits.keys where snapshot.orders[id] == nil && snapshot.isOrder(id) { problems.append("\(id): debit without order") }
        report.add(.orderIncomplete, "\(snapshot.orders.count) orders, \(snapshot.reservations.count) reservations, \(snapshot.debits.count) debits",
                   problems.sorted())
    }
}
