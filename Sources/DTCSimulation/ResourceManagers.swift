import DTCCore

/// A resource manager: the real `Participant` core, its disk, and its committed state, which
/// is rebuilt from what was synced after a crash.
struct SimRM {
    let index: Int
    let name: String
    var core: Participant?
    var disk = Disk<ParticipantRecord>()
    var generation = 0
    var waitingVotes: [TxnID: [Int]] = [:]
    var waitingAcks: [TxnID: [Int]] = [:]
    /// Inquiries sent per txn: each goes to the next member of the partition's replica group.
    var inquiries: [TxnID: Int] = [:]
    /// Committed values: the seed plus every synced COMMIT's writes, in order. Only synced
    /// records change it, so it survives a crash as the disk does.
    private(set) var committedState: [String: StateValue]

    init(index: Int, name: String) {
        self.index = index
        self.name = name
        committedState = Self.seed(for: name)
    }

    /// Syncs the disk and applies the newly durable COMMITs; returns what became durable.
    mutating func sync() -> [ParticipantRecord] {
        let synced = disk.pending
        disk.sync()
        for record in synced {
            if case .committed(_, let writes, _, _) = record {
                for write in writes { committedState[write.key] = write.value }
            }
        }
        return synced
    }

    /// The service an RM runs, from its name: "inventory-2" is a second inventory.
    static func service(of name: String) -> String { String(name.prefix { $0 != "-" }) }

    static func seed(for name: String) -> [String: StateValue] {
        switch service(of: name) {
        case "inventory": Dictionary(uniqueKeysWithValues: (0..<3).map { (StateKey.stock("sku-\($0)"), StateValue.count(Simulation.seedStock)) })
        case "accounts": Dictionary(uniqueKeysWithValues: (0..<3).map { (StateKey.balance("user-\($0)"), StateValue.count(Simulation.seedBalance)) })
        default: [:]
        }
    }

    /// From the synced records: txns still prepared, and how finished ones ended.
    func recovered() -> (prepared: [PreparedTxn], finished: [(TxnID, Outcome)]) {
        var prepared: [TxnID: PreparedTxn] = [:]
        var finished: [TxnID: Outcome] = [:]
        for record in disk.synced {
            switch record {
            case .prepared(let txn): prepared[txn.txnID] = txn
            case .committed(let txnID, _, _, _): prepared[txnID] = nil; finished[txnID] = .commit
            case .aborted(let txnID, _, _): prepared[txnID] = nil; finished[txnID] = .abort
            }
        }
        return (prepared.values.sorted { $0.txnID < $1.txnID }, finished.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }
}

extension Simulation {
    func startRM(_ index: Int) {
        rms[index].generation += 1
        if rms[index].disk.recover() { faults["torn write", default: 0] += 1 }
        var core = Participant(limits: limits, inquiryAfter: 500)
        core.mutant = mutant
        let (prepared, finished) = rms[index].recovered()
        core.recover(prepared: prepared, finished: finished, now: now)
        rms[index].core = core
        rms[index].waitingVotes = [:]
        rms[index].waitingAcks = [:]
        checker.rmRestarted(index, prepared: prepared)
        schedule(at: now + 20, .tickRM(index, generation: rms[index].generation))
    }

    func crashRM(_ index: Int) {
        rms[index].core = nil
        rms[index].disk.crash(tearingLastWrite: swarm.tearsWrites && Bool.random(using: &random))
    }

    func rmReceivesPrepare(_ message: PrepareMessage, rm index: Int) {
        guard var core = rms[index].core else { return }
        checker.rmSaw(message.txnID, epoch: message.sender.epoch, at: index)
        rms[index].waitingVotes[message.txnID, default: []].append(Self.nodeIndex(message.sender.node))
        let output = core.prepare(message, now: now)
        rms[index].core = core
        apply(output, rm: index)
    }

    /// A decision from a node (acked back to it) or an answer to an inquiry (`ackTo` nil).
    func rmReceivesDecision(_ message: DecisionMessage, rm index: Int, ackTo node: Int?) {
        guard var core = rms[index].core else { return }
        if let node { rms[index].waitingAcks[message.txnID, default: []].append(node) }
        let output = core.decide(message, now: now)
        rms[index].core = core
        checker.rmDecided(message, output, at: index, in: self)
        apply(output, rm: index)
    }

    func tickRM(_ index: Int, _ generation: Int) {
        guard rms[index].generation == generation, var core = rms[index].core else { return }
        let output = core.tick(now: now)
        rms[index].core = core
        apply(output, rm: index)
        schedule(at: now + 20, .tickRM(index, generation: generation))
    }

    /// Syncs the RM's disk; each record that became durable goes back to the core.
    func syncRM(_ index: Int, _ generation: Int) {
        guard rms[index].generation == generation, rms[index].core != nil else { return }
        let synced = rms[index].sync()
        checker.synced(synced, at: index, in: self)
        for record in synced {
            guard var core = rms[index].core else { return }
            let output: ParticipantOutput
            switch record {
            case .prepared(let prepared): output = core.preparedDurable(prepared.txnID, now: now)
            case .committed(let txnID, _, _, _), .aborted(let txnID, _, _): output = core.decisionDurable(txnID, now: now)
            }
            rms[index].core = core
            apply(output, rm: index)
        }
    }

    private func apply(_ output: ParticipantOutput, rm index: Int) {
        for vote in output.votes {
            for node in rms[index].waitingVotes.removeValue(forKey: vote.txnID) ?? [] {
                send(.vote(vote.txnID, vote.vote, rm: index, node: node))
            }
        }
        for ack in output.acks {
            for node in rms[index].waitingAcks.removeValue(forKey: ack.txnID) ?? [] {
                send(.ack(ack.txnID, rm: index, node: node))
            }
        }
        if !output.recordsToPersist.isEmpty {
            rms[index].disk.write(output.recordsToPersist)
            schedule(at: now + fsyncDelay(), .syncRM(index, generation: rms[index].generation))
        }
        for (txnID, keys) in output.reads.sorted(by: { $0.key < $1.key }) {
            guard var core = rms[index].core, let op = core.operation(of: txnID) else { continue }
            let state = rms[index].committedState
            let values = Dictionary(uniqueKeysWithValues: keys.compactMap { key in state[key].map { (key, $0) } })
            let planned = core.planned(txnID, ServiceLogic.plan(op, committed: values), now: now)
            rms[index].core = core
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
        var branches = [
            Branch(rm: "inventory", op: .reserve(orderID: txnID.rawValue, sku: sku, qty: qty)),
            Branch(rm: "orders", op: .createOrder(orderID: txnID.rawValue, userID: user, sku: sku, qty: qty, amount: amount)),
            Branch(rm: "accounts", op: .debit(orderID: txnID.rawValue, userID: user, amount: amount)),
        ]
        for extra in rmNames.dropFirst(3) where Bool.random(using: &random) {
            switch SimRM.service(of: extra) {
            case "inventory": branches.append(Branch(rm: extra, op: .reserve(orderID: txnID.rawValue, sku: sku, qty: 1)))
            default: branches.append(Branch(rm: extra, op: .debit(orderID: txnID.rawValue, userID: user, amount: 100)))
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
