import DTCCore
import DTCShop

/// A participant: the real `ParticipantMachine` with the shop's real logic, its disk, its
/// committed state and its ledger, both rebuilt from what was synced after a crash. It is the
/// library's shell in miniature: plan where the machine asks, persist, report durable, send.
struct SimRM {
    let index: Int
    let name: String
    let logic: ShopLogic
    var machine: ParticipantMachine?
    var disk = Disk<ParticipantRecord>()
    var generation = 0
    /// Inquiries sent per txn: each goes to the next member of the partition's replica group.
    var inquiries: [TxnID: Int] = [:]
    /// Committed values: the seed plus every synced COMMIT's writes, in order. Only synced
    /// records change it, so it survives a crash as the disk does.
    private(set) var committedState: [String: [UInt8]]
    /// How each txn ended, from synced decisions, as the library's ledger database.
    private(set) var ledger: [TxnID: LedgerEntry] = [:]
    /// The last ledger sequence assigned: as the library's counter, which is durable with the
    /// entry that takes it, it survives a crash as the ledger does.
    private(set) var lastLedgerSequence: UInt64 = 0

    init(index: Int, name: String) {
        self.index = index
        self.name = name
        logic = ShopLogic(service: ShopService(rawValue: Self.service(of: name))!)
        committedState = Self.seed(for: name)
    }

    /// Syncs the disk and applies the newly durable decisions; returns what became durable.
    mutating func sync() -> [ParticipantRecord] {
        let synced = disk.pending
        disk.sync()
        for record in synced {
            switch record {
            case .prepared:
                continue
            case .committed(let txnID, let attempt, let writes, let epoch, let seen, _, let keys):
                for write in writes { committedState[write.key] = write.value }
                recordLedger(txnID, LedgerEntry(outcome: .commit, attempt: attempt, epoch: epoch, seenEpoch: seen, keys: keys))
            case .aborted(let txnID, let attempt, let epoch, let seen, _):
                recordLedger(txnID, LedgerEntry(outcome: .abort, attempt: attempt, epoch: epoch, seenEpoch: seen))
            }
        }
        return synced
    }

    /// As the library's store: `applications` counts the decisions written for the entry's
    /// attempt; a new decision takes the next sequence, a repeated one keeps its first
    /// application's sequence and keys.
    private mutating func recordLedger(_ txnID: TxnID, _ decision: LedgerEntry) {
        var entry = decision
        if let earlier = ledger[txnID], earlier.attempt == decision.attempt, earlier.outcome == decision.outcome {
            entry.applications = earlier.applications + 1
            entry.sequence = earlier.sequence
            if entry.keys.isEmpty { entry.keys = earlier.keys }
        } else {
            lastLedgerSequence += 1
            entry.sequence = lastLedgerSequence
        }
        ledger[txnID] = entry
    }

    /// The service an RM runs, from its name: "inventory-2" is a second inventory.
    static func service(of name: String) -> String { String(name.prefix { $0 != "-" }) }

    static func seed(for name: String) -> [String: [UInt8]] {
        let seed = ShopSeed(skus: 3, unitsPerSku: Simulation.seedStock, users: 3, centsPerUser: Simulation.seedBalance)
        return Dictionary(uniqueKeysWithValues: seed.values(for: ShopService(rawValue: service(of: name))!).map { ($0.key, $0.value) })
    }

    /// The shop's values, decoded, for the business checks.
    var shopState: [String: StateValue] { committedState.compactMapValues { try? StateValue(decoding: $0) } }

    /// From the synced records: txns still prepared.
    func recoveredPrepared() -> [PreparedTxn] {
        var prepared: [TxnID: PreparedTxn] = [:]
        for record in disk.synced {
            switch record {
            case .prepared(let txn): prepared[txn.txnID] = txn
            case .committed(let txnID, _, _, _, _, _, _), .aborted(let txnID, _, _, _, _): prepared[txnID] = nil
            }
        }
        return prepared.values.sorted { $0.txnID < $1.txnID }
    }
}

extension Simulation {
    func startRM(_ index: Int) {
        rms[index].generation += 1
        if rms[index].disk.recover() { faults["torn write", default: 0] += 1 }
        var machine = ParticipantMachine(limits: limits, inquiryAfter: 500)
        machine.mutant = mutant
        let prepared = rms[index].recoveredPrepared()
        machine.recover(prepared: prepared, now: now)
        rms[index].machine = machine
        checker.rmRestarted(index, prepared: prepared)
        schedule(at: now + 20, .tickRM(index, generation: rms[index].generation))
    }

    func crashRM(_ index: Int) {
        rms[index].machine = nil
        rms[index].disk.crash(tearingLastWrite: swarm.tearsWrites && Bool.random(using: &random))
    }

    func rmReceivesPrepare(_ message: PrepareMessage, rm index: Int) {
        guard rms[index].machine != nil else { return }
        checker.rmSaw(message.txnID, epoch: message.sender.epoch, at: index)
        let keys = rms[index].logic.lockKeys(for: message.branch)
        let ledger = rms[index].ledger
        let output = rms[index].machine!.prepare(message, keys: keys, replyTo: Self.nodeIndex(message.sender.node), now: now) { ledger[$0] }
        apply(output, rm: index)
    }

    /// A decision from a node (acked back to it) or an answer to an inquiry (`ackTo` nil).
    func rmReceivesDecision(_ message: DecisionMessage, rm index: Int, ackTo node: Int?) {
        guard rms[index].machine != nil else { return }
        let ledger = rms[index].ledger
        let output = rms[index].machine!.decide(message, replyTo: node, now: now) { ledger[$0] }
        checker.rmDecided(message, output, at: index, in: self)
        apply(output, rm: index)
    }

    func tickRM(_ index: Int, _ generation: Int) {
        guard rms[index].generation == generation, rms[index].machine != nil else { return }
        apply(rms[index].machine!.tick(now: now), rm: index)
        schedule(at: now + 20, .tickRM(index, generation: generation))
    }

    /// Syncs the RM's disk; what became durable goes back to the machine.
    func syncRM(_ index: Int, _ generation: Int) {
        guard rms[index].generation == generation, rms[index].machine != nil else { return }
        let synced = rms[index].sync()
        checker.synced(synced, at: index, in: self)
        apply(rms[index].machine!.recordsDurable(synced, now: now), rm: index)
    }

    private func apply(_ output: ParticipantOutput, rm index: Int) {
        for routed in output.replies {
            switch routed.reply {
            case .vote(let vote): send(.vote(vote, rm: index, node: routed.route))
            case .ack(let ack): send(.ack(ack, rm: index, node: routed.route))
            }
        }
        if !output.recordsToPersist.isEmpty {
            rms[index].disk.write(output.recordsToPersist)
            schedule(at: now + fsyncDelay(), .syncRM(index, generation: rms[index].generation))
        }
        for request in output.plans {
            guard rms[index].machine != nil else { continue }
            let state = rms[index].committedState
            let values = Dictionary(uniqueKeysWithValues: request.keys.compactMap { key in state[key].map { (key, $0) } })
            let planned = rms[index].machine!.planned(request.txnID, rms[index].logic.planned(request.branch, committed: values), now: now)
            apply(planned, rm: index)
        }
        for prepared in output.inquiries {
            // Termination protocol: ask each member of the replica group in turn, as the
            // router's resolve does, until the partition's leader answers.
            let members = map.replicaGroup(of: prepared.sender.partition)
            let asked = rms[index].inquiries[prepared.txnID, default: 0]
            rms[index].inquiries[prepared.txnID] = asked + 1
            send(.inquire(prepared, rm: index, node: Self.nodeIndex(members[asked % members.count])))
        }
    }
}

/// A client placing orders one at a time, retrying each with the same txnID until answered:
/// each retry goes to the next member of the partition's replica group, unless a node
/// redirected it to the leader.
struct SimClient {
    let index: Int
    var placed = 0
    var current: (txnID: TxnID, branches: [Branch])?
    var attempt = 0
    var firstSubmittedAt: UInt64 = 0
    /// Txns given up on: the outcome is unknown to the client.
    var gaveUp = 0
    var redirectedTo: Int?
    var told: [TxnID: TxnStatus] = [:]
    var isFinished = false

    init(index: Int) { self.index = index }
}

extension Simulation {
    func clientNext(_ index: Int) {
        guard clients[index].placed < swarm.txnsPerClient else {
            clients[index].isFinished = true
            return
        }
        let number = clients[index].placed
        clients[index].placed += 1
        let txnID = TxnID("c\(index)-t\(number)")
        clients[index].current = (txnID, order(txnID))
        clients[index].attempt = 0
        clients[index].firstSubmittedAt = now
        clients[index].redirectedTo = nil
        checker.submitted(txnID, clients[index].current!.branches)
        submit(index)
    }

    /// An order: reserve, create the order, debit; with a second inventory or accounts RM,
    /// some orders also reserve or debit there.
    private func order(_ txnID: TxnID) -> [Branch] {
        let user = "user-\(Int.random(in: 0..<3, using: &random))"
        let sku = "sku-\(Int.random(in: 0..<3, using: &random))"
        let qty = Int64.random(in: 1...3, using: &random)
        let amount = Int64.random(in: 100...2_000, using: &random)
        var branches = orderBranches(
            orderID: txnID.rawValue, user: user, sku: sku, qty: qty, amount: amount, inventory: "inventory", orders: "orders", accounts: "accounts")
        for extra in rmNames.dropFirst(3) where Bool.random(using: &random) {
            switch SimRM.service(of: extra) {
            case "inventory": branches.append(ShopOperation.reserve(orderID: txnID.rawValue, sku: sku, qty: 1).branch(rm: extra))
            default: branches.append(ShopOperation.debit(orderID: txnID.rawValue, userID: user, amount: 100).branch(rm: extra))
            }
        }
        return branches
    }

    private func submit(_ index: Int) {
        guard let (txnID, branches) = clients[index].current else { return }
        clients[index].attempt += 1
        let attempt = clients[index].attempt
        let members = map.replicaGroup(of: map.partition(of: txnID))
        let node = clients[index].redirectedTo ?? Self.nodeIndex(members[(attempt - 1) % members.count])
        send(.submit(txnID, branches, client: index, node: node))
        schedule(at: now + 600, .clientTimeout(index, txnID, attempt: attempt))
    }

    /// Retries stop after `retryHorizonMs`, well inside the dedup window (the log retention):
    /// a txn ID resubmitted after its row was trimmed would run again, as the README says of
    /// dtc. The outcome stays unknown to the client; the RMs still must all finish the txn.
    func clientTimeout(_ index: Int, _ txnID: TxnID, _ attempt: Int) {
        guard clients[index].current?.txnID == txnID, clients[index].attempt == attempt else { return }
        guard now < clients[index].firstSubmittedAt + Self.retryHorizonMs else {
            clients[index].current = nil
            clients[index].gaveUp += 1
            schedule(at: now, .clientNext(index))
            return
        }
        clients[index].redirectedTo = nil
        submit(index)
    }

    /// The node could not serve the txn now: try the next member soon.
    func clientToldToRetry(_ txnID: TxnID, client index: Int) {
        guard clients[index].current?.txnID == txnID else { return }
        schedule(at: now + 50, .clientTimeout(index, txnID, attempt: clients[index].attempt))
    }

    func clientRedirected(_ txnID: TxnID, to leader: Int, client index: Int) {
        guard clients[index].current?.txnID == txnID, clients[index].redirectedTo == nil else { return }
        clients[index].redirectedTo = leader
        submit(index)
    }

    func clientReceives(_ reply: ClientReply, client index: Int) {
        guard clients[index].current?.txnID == reply.txnID, reply.status != .preparing else { return }
        checker.told(reply, by: self)
        clients[index].told[reply.txnID] = reply.status
        clients[index].current = nil
        schedule(at: now + UInt64.random(in: 0...20, using: &random), .clientNext(index))
    }
}
