import DTCCore

/// A coordinator node: the real `Coordinator` core, its disk, and the shell's rule that
/// messages and replies depending on records wait until every record written so far is synced.
struct SimNode {
    let index: Int
    var core: Coordinator?
    var disk = Disk<PartitionRecord>()
    var generation = 0
    var epochCounter: UInt64 = 0
    var syncsIssued = 0
    var syncsDone = 0
    var held: [(after: Int, messages: [Envelope], replies: [ClientReply])] = []
    var waitingClients: [TxnID: [Int]] = [:]
    var waitingRMs: [TxnID: [Int]] = [:]

    init(index: Int) { self.index = index }
}

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

    static func seed(for name: String) -> [String: StateValue] {
        switch name {
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

/// A client placing orders one at a time, retrying each with the same txnID until answered.
struct SimClient {
    let index: Int
    var placed = 0
    var current: (txnID: TxnID, branches: [Branch])?
    var told: [TxnID: TxnStatus] = [:]
    var isFinished = false

    init(index: Int) { self.index = index }
}

extension Simulation {
    // MARK: - Nodes

    func startNode(_ index: Int) {
        var node = nodes[index]
        node.generation += 1
        node.epochCounter += 1
        let led = map.partitions(ledBy: "n\(index)")
        let epochs = Dictionary(uniqueKeysWithValues: led.map { ($0, Epoch(counter: node.epochCounter, node: UInt32(index + 1))) })
        var core = Coordinator(node: "n\(index)", nodeIndex: UInt32(index), epochs: epochs, limits: limits)
        core.mutant = mutant
        let output = core.recover(node.disk.synced, now: now)
        node.core = core
        node.syncsIssued = 0
        node.syncsDone = 0
        node.held = []
        node.waitingClients = [:]
        node.waitingRMs = [:]
        nodes[index] = node
        apply(output, node: index)
        schedule(at: now + 20, .tickNode(index, generation: node.generation))
    }

    func crashNode(_ index: Int) {
        nodes[index].core = nil
        nodes[index].disk.crash()
    }

    var limits: Limits {
        var limits = Limits()
        limits.prepareTimeout = 300
        limits.lockWaitTimeout = 100
        limits.decisionRetryInitial = 50
        limits.decisionRetryMax = 400
        return limits
    }

    func nodeReceivesSubmit(_ txnID: TxnID, _ branches: [Branch], client: Int) {
        let index = homeNode(of: txnID)
        guard var core = nodes[index].core else { return }
        guard case .accepted(let output) = core.submit(txnID, branches: branches, partition: map.partition(of: txnID), now: now) else {
            nodes[index].core = core
            return
        }
        nodes[index].core = core
        nodes[index].waitingClients[txnID, default: []].append(client)
        apply(output, node: index)
    }

    func nodeReceivesVote(_ txnID: TxnID, _ vote: Vote, rm: Int, node index: Int) {
        guard var core = nodes[index].core else { return }
        let output = core.voteReceived(vote, txn: txnID, from: Self.rmNames[rm], now: now)
        nodes[index].core = core
        apply(output, node: index)
    }

    func nodeReceivesAck(_ txnID: TxnID, rm: Int, node index: Int) {
        guard var core = nodes[index].core else { return }
        let output = core.ackReceived(txn: txnID, from: Self.rmNames[rm])
        nodes[index].core = core
        apply(output, node: index)
    }

    func nodeReceivesInquiry(_ prepared: PreparedTxn, rm: Int, node index: Int) {
        guard var core = nodes[index].core, core.leads(prepared.sender.partition) else { return }
        let output = core.resolve(prepared.txnID, partition: prepared.sender.partition)
        nodes[index].core = core
        guard let output else { return }
        nodes[index].waitingRMs[prepared.txnID, default: []].append(rm)
        apply(output, node: index)
    }

    func tickNode(_ index: Int, _ generation: Int) {
        guard nodes[index].generation == generation, var core = nodes[index].core else { return }
        let output = core.tick(now: now)
        nodes[index].core = core
        apply(output, node: index)
        schedule(at: now + 20, .tickNode(index, generation: generation))
    }

    func syncNode(_ index: Int, _ generation: Int) {
        guard nodes[index].generation == generation, nodes[index].core != nil else { return }
        nodes[index].disk.sync()
        nodes[index].syncsDone = nodes[index].syncsIssued
        let ready = nodes[index].held
        nodes[index].held = []
        for item in ready { release(item.messages, item.replies, node: index) }
    }

    /// Persist before send: what depends on records waits for the sync of all written so far.
    private func apply(_ output: CoordinatorOutput, node index: Int) {
        if !output.recordsToAppend.isEmpty {
            nodes[index].disk.write(output.recordsToAppend)
            nodes[index].syncsIssued += 1
            schedule(at: now + fsyncDelay(), .syncNode(index, generation: nodes[index].generation))
        }
        for envelope in output.messagesNow { send(envelope) }
        guard !output.messagesAfterAppend.isEmpty || !output.replies.isEmpty else { return }
        if nodes[index].disk.pending.isEmpty {
            release(output.messagesAfterAppend, output.replies, node: index)
        } else {
            nodes[index].held.append((nodes[index].syncsIssued, output.messagesAfterAppend, output.replies))
        }
    }

    private func release(_ messages: [Envelope], _ replies: [ClientReply], node index: Int) {
        for envelope in messages { send(envelope) }
        for reply in replies {
            for client in nodes[index].waitingClients.removeValue(forKey: reply.txnID) ?? [] {
                checker.told(reply, by: self)
                send(.reply(reply, client: client))
            }
            for rm in nodes[index].waitingRMs.removeValue(forKey: reply.txnID) ?? [] {
                guard reply.status != .preparing, let epoch = nodes[index].core?.epochs[map.partition(of: reply.txnID)] else { continue }
                let sender = Sender(partition: map.partition(of: reply.txnID), epoch: epoch, node: "n\(index)")
                send(.inquiryAnswer(reply.txnID, reply.status == .committed ? .commit : .abort, sender: sender, rm: rm))
            }
        }
    }

    private func send(_ envelope: Envelope) {
        switch envelope {
        case .prepare(let rm, let message): send(.prepare(message, rm: Self.rmNames.firstIndex(of: rm)!))
        case .decision(let rm, let message): send(.decision(message, rm: Self.rmNames.firstIndex(of: rm)!))
        }
    }

    // MARK: - Resource managers

    func startRM(_ index: Int) {
        rms[index].generation += 1
        var core = Participant(limits: limits, inquiryAfter: 500)
        core.mutant = mutant
        let (prepared, finished) = rms[index].recovered()
        core.recover(prepared: prepared, finished: finished, now: now)
        rms[index].core = core
        rms[index].waitingVotes = [:]
        rms[index].waitingAcks = [:]
        schedule(at: now + 20, .tickRM(index, generation: rms[index].generation))
    }

    func crashRM(_ index: Int) {
        rms[index].core = nil
        rms[index].disk.crash()
    }

    func rmReceivesPrepare(_ message: PrepareMessage, rm index: Int) {
        guard var core = rms[index].core else { return }
        rms[index].waitingVotes[message.txnID, default: []].append(Int(message.sender.node.dropFirst())!)
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
            send(.inquire(prepared, rm: index, node: homeNode(of: prepared.txnID)))
        }
    }

    // MARK: - Clients

    func clientNext(_ index: Int) {
        guard clients[index].placed < swarm.txnsPerClient else {
            clients[index].isFinished = true
            return
        }
        let number = clients[index].placed
        clients[index].placed += 1
        let txnID = TxnID("c\(index)-t\(number)")
        let user = "user-\(Int.random(in: 0..<3, using: &random))"
        let sku = "sku-\(Int.random(in: 0..<3, using: &random))"
        let qty = Int64.random(in: 1...3, using: &random)
        let amount = Int64.random(in: 100...2_000, using: &random)
        let branches = [
            Branch(rm: "inventory", op: .reserve(orderID: txnID.rawValue, sku: sku, qty: qty)),
            Branch(rm: "orders", op: .createOrder(orderID: txnID.rawValue, userID: user, sku: sku, qty: qty, amount: amount)),
            Branch(rm: "accounts", op: .debit(orderID: txnID.rawValue, userID: user, amount: amount)),
        ]
        clients[index].current = (txnID, branches)
        checker.submitted(txnID, branches)
        submit(index, attempt: 1)
    }

    private func submit(_ index: Int, attempt: Int) {
        guard let (txnID, branches) = clients[index].current else { return }
        send(.submit(txnID, branches, client: index))
        schedule(at: now + 600, .clientTimeout(index, txnID, attempt: attempt))
    }

    func clientTimeout(_ index: Int, _ txnID: TxnID, _ attempt: Int) {
        guard clients[index].current?.txnID == txnID else { return }
        submit(index, attempt: attempt + 1)
    }

    func clientReceives(_ reply: ClientReply, client index: Int) {
        guard clients[index].current?.txnID == reply.txnID, reply.status != .preparing else { return }
        clients[index].told[reply.txnID] = reply.status
        clients[index].current = nil
        schedule(at: now + UInt64.random(in: 0...20, using: &random), .clientNext(index))
    }
}
