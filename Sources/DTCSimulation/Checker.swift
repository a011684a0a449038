import DTCCore
import DTCShop

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
    /// Per txn and epoch: the decision a node's synced log holds, and which nodes hold it.
    /// A decision is made once a quorum of the replica group holds it (R = 3: two nodes).
    private var decisionHolders: [TxnID: [Epoch: (outcome: Outcome, nodes: Set<Int>)]] = [:]
    /// Decisions made: held by a quorum at some epoch.
    private var made: [TxnID: Outcome] = [:]
    /// Per node: the highest decision epoch its synced log holds per txn, and the txns it trimmed.
    private var heldDecisions: [Int: [TxnID: Epoch]] = [:]
    private var trimmedAt: [Int: Set<TxnID>] = [:]
    /// Per leader and led partition: the decisions each ticket carried, and per follower the
    /// ticket up to which its acks were checked against what it holds.
    private var issuedDecisions: [Int: [UInt32: [(ticket: UInt64, decisions: [(TxnID, Epoch)])]]] = [:]
    private var claimsChecked: [Int: [UInt32: [Int: UInt64]]] = [:]
    /// Per RM and txn: the highest epoch the RM saw in a PREPARE or an accepted decision,
    /// as far as it can know it (after a restart: what its synced prepared record says).
    private var epochSeen: [Int: [TxnID: Epoch]] = [:]
    /// RMs whose committed state changed since the last check.
    private var changedRMs: Set<Int> = []
    /// Per txn and epoch: the start stamp of its PREPAREs and the highest attempt rolled back.
    private var stamps: [AttemptKey: StartStamp] = [:]
    private var rolledBackAttempts: [AttemptKey: Attempt] = [:]

    private struct AttemptKey: Hashable {
        var txnID: TxnID
        var epoch: Epoch
    }

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
            case .committed(let txnID, _, _, _, _, _, _):
                commits[txnID, default: [:]][rm, default: 0] += 1
                if commits[txnID]![rm]! > 1 { fail("exactly once: \(txnID) committed twice at \(simulation.rmNames[rm])") }
                apply(txnID, .commit, at: rm, named: simulation.rmNames[rm])
                let voters = Set(branches[txnID]?.compactMap { simulation.rmNames.firstIndex(of: $0.rm) } ?? [])
                let missing = voters.subtracting(preparedAt[txnID] ?? [])
                if !missing.isEmpty {
                    fail("commit without durable YES: \(txnID) committed at \(simulation.rmNames[rm]) but never durably prepared at \(missing.sorted().map { simulation.rmNames[$0] })")
                }
            case .aborted(let txnID, let attempt, _, _, _):
                // The rollback of one attempt is not the txn's outcome: a later one may commit.
                if attempt == .max { apply(txnID, .abort, at: rm, named: simulation.rmNames[rm]) }
            }
        }
    }

    private mutating func apply(_ txnID: TxnID, _ outcome: Outcome, at rm: Int, named name: String) {
        if let earlier = applied[txnID]?[rm], earlier != outcome {
            fail("exactly once: \(txnID) applied \(earlier) then \(outcome) at \(name)")
        }
        applied[txnID, default: [:]][rm] = outcome
        if outcome == .commit { committedTxns.insert(txnID) }
        record(txnID, outcome, by: name)
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
        for rm in changedRMs.sorted() { checkConservation(simulation.rms[rm]) }
        changedRMs = []
    }

    /// Writes that became durable in a node's log: a decision a quorum now holds is made.
    mutating func nodeSynced(_ writes: [NodeWrite], at node: Int, in simulation: Simulation) {
        for write in writes {
            guard case .record(let entry) = write else { continue }
            if case .trim(let txnID) = entry.record { trimmedAt[node, default: []].insert(txnID) }
            guard case .decision(let txnID, let outcome, _, let epoch) = entry.record else { continue }
            heldDecisions[node, default: [:]][txnID] = max(heldDecisions[node]?[txnID] ?? .zero, epoch)
            var holders = decisionHolders[txnID]?[epoch] ?? (outcome, [])
            if holders.outcome != outcome {
                fail("two decisions at one epoch: \(txnID) is \(holders.outcome) and \(outcome) at epoch \(epoch)")
            }
            holders.nodes.insert(node)
            decisionHolders[txnID, default: [:]][epoch] = holders
            if holders.nodes.count == 2 {
                made[txnID] = outcome
                record(txnID, outcome, by: "a quorum at epoch \(epoch) (\(holders.nodes.sorted().map { "n\($0)" }))")
            }
        }
    }

    /// A leader issued `ticket` for records of a partition it leads.
    mutating func issued(_ records: [LogRecord], ticket: UInt64, partition: UInt32, by leader: Int) {
        let decisions = records.compactMap { record -> (TxnID, Epoch)? in
            if case .decision(let txnID, _, _, let epoch) = record { return (txnID, epoch) }
            return nil
        }
        if !decisions.isEmpty { issuedDecisions[leader, default: [:]][partition, default: []].append((ticket, decisions)) }
    }

    /// A new tenure, or a catch-up to `follower`: its acks are checked from the start again.
    mutating func claimsRestart(partition: UInt32, leader: Int, follower: Int? = nil) {
        if let follower {
            claimsChecked[leader, default: [:]][partition, default: [:]][follower] = 0
        } else {
            issuedDecisions[leader, default: [:]][partition] = []
            claimsChecked[leader, default: [:]][partition] = [:]
        }
    }

    /// An ack claims that the follower holds every record issued up to `ticket`: each decision
    /// among them must be in its synced log (or trimmed). The quorum rule rests on this.
    mutating func ackClaims(_ ticket: UInt64, partition: UInt32, leader: Int, follower: Int) {
        let from = claimsChecked[leader]?[partition]?[follower] ?? 0
        guard ticket > from else { return }
        for entry in issuedDecisions[leader]?[partition] ?? [] where entry.ticket > from && entry.ticket <= ticket {
            for (txnID, epoch) in entry.decisions {
                let holds = (heldDecisions[follower]?[txnID] ?? .zero) >= epoch
                if !holds, trimmedAt[follower]?.contains(txnID) != true, trimmedAt[leader]?.contains(txnID) != true {
                    fail("false ack: n\(follower) acked ticket \(ticket & 0xffff_ffff) of partition \(partition) to n\(leader) without the decision of \(txnID) at epoch \(epoch)")
                }
            }
        }
        claimsChecked[leader, default: [:]][partition, default: [:]][follower] = ticket
    }

    /// A leader releases what waited for the quorum: a decision it sends or tells must be
    /// made by then (held durably by a quorum), whatever its tickets claim.
    mutating func released(_ txnID: TxnID, _ outcome: Outcome, by node: Int, what: String) {
        if made[txnID] != outcome {
            fail("not on a quorum: n\(node) released \(what) \(outcome) for \(txnID) before a quorum held the decision")
        }
    }

    /// A leader sent a PREPARE: every attempt of a txn at one epoch carries the same start
    /// stamp (else a retried txn never ages, and wait-die may starve it), and an attempt never
    /// reuses a number whose rollback was sent (its late rollback could undo the new attempt).
    mutating func prepareSent(_ message: PrepareMessage) {
        let key = AttemptKey(txnID: message.txnID, epoch: message.sender.epoch)
        if let stamp = stamps[key], stamp != message.stamp {
            fail("stamp changed: \(message.txnID) prepared at epoch \(message.sender.epoch) with stamp \(stamp), then \(message.stamp) (attempt \(message.attempt))")
        }
        stamps[key] = message.stamp
        if let rolledBack = rolledBackAttempts[key], message.attempt <= rolledBack {
            fail("attempt reused: \(message.txnID) prepared as attempt \(message.attempt) at epoch \(message.sender.epoch) after attempt \(rolledBack) was rolled back")
        }
    }

    mutating func decisionSent(_ message: DecisionMessage) {
        guard let attempt = message.rolledBackAttempt else { return }
        let key = AttemptKey(txnID: message.txnID, epoch: message.sender.epoch)
        rolledBackAttempts[key] = max(rolledBackAttempts[key] ?? 0, attempt)
    }

    /// An RM received a PREPARE at `epoch`.
    mutating func rmSaw(_ txnID: TxnID, epoch: Epoch, at rm: Int) {
        epochSeen[rm, default: [:]][txnID] = max(epochSeen[rm]?[txnID] ?? .zero, epoch)
    }

    /// No RM accepts a decision from a lower epoch once it has seen a higher one for the txn.
    mutating func rmDecided(_ message: DecisionMessage, _ output: ParticipantOutput, at rm: Int, in simulation: Simulation) {
        let seen = epochSeen[rm]?[message.txnID] ?? .zero
        let accepted = output.recordsToPersist.contains { record in
            switch record {
            case .committed(let txnID, _, _, _, _, _, _), .aborted(let txnID, _, _, _, _): txnID == message.txnID
            case .prepared: false
            }
        }
        let acknowledged = output.replies.contains { routed in
            if case .ack(let ack) = routed.reply { return ack.txnID == message.txnID && ack.accepted }
            return false
        }
        if accepted || acknowledged, message.sender.epoch < seen {
            fail("stale epoch: \(simulation.rmNames[rm]) accepted \(message.outcome) for \(message.txnID) from epoch \(message.sender.epoch) after seeing epoch \(seen)")
        }
        if accepted || acknowledged {
            epochSeen[rm, default: [:]][message.txnID] = max(seen, message.sender.epoch)
        }
    }

    /// A restarted RM knows only what it synced: the epochs of its prepared records.
    mutating func rmRestarted(_ rm: Int, prepared: [PreparedTxn]) {
        epochSeen[rm] = Dictionary(prepared.map { ($0.txnID, $0.sender.epoch) }, uniquingKeysWith: max)
    }

    private mutating func checkConservation(_ rm: SimRM) {
        let state = rm.shopState
        switch SimRM.service(of: rm.name) {
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
    /// every RM of its branches, no RM holds a prepared txn, and the committed txns are
    /// serializable by the RMs' ledgers.
    mutating func checkEnd(_ simulation: Simulation) {
        for (txnID, status) in told.sorted(by: { $0.key < $1.key }) {
            let outcome: Outcome = status == .committed ? .commit : .abort
            for rm in (branches[txnID] ?? []).compactMap({ simulation.rmNames.firstIndex(of: $0.rm) }) where outcome == .commit {
                if applied[txnID]?[rm] != .commit {
                    fail("liveness: \(txnID) was told committed but is not applied at \(simulation.rmNames[rm])")
                }
            }
        }
        for rm in simulation.rms where (rm.machine?.preparedCount ?? 0) > 0 {
            fail("liveness: \(rm.name) still holds \(rm.machine!.preparedCount) prepared txns after faults stopped")
        }
        if !simulation.clients.allSatisfy(\.isFinished) {
            fail("liveness: a client never got an answer after faults stopped")
        }
        checkSerializable(simulation)
    }

    /// The precedence graph of the committed txns, from each RM's ledger as `dtc verify` reads
    /// the library's: every entry the simulated RMs write has its sequence, so none is left out.
    private mutating func checkSerializable(_ simulation: Simulation) {
        let ledgers = Dictionary(uniqueKeysWithValues: simulation.rms.map { ($0.name, $0.ledger) })
        let verdict = Serializability.check(ledgers: ledgers)
        if let cycle = verdict.cycleDescription {
            fail("serializability: the committed txns' precedence graph has a cycle: \(cycle)")
        }
        if verdict.unorderedEntries > 0 {
            fail("serializability: \(verdict.unorderedEntries) committed ledger entries have no apply order")
        }
    }
}
