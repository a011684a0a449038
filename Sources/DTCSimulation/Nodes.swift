import DTCCore

/// The simulation's glue to the `NodeMachine` each simulated node runs: events in (deliveries,
/// ticks, fsyncs), actions out (disk writes, messages, answers), observations to the checker.
/// No protocol lives here.
extension Simulation {
    // MARK: - Start, crash, time

    /// A (re)start: the node knows its promises and rows from its synced log only.
    func startNode(_ index: Int) {
        var node = nodes[index]
        node.generation += 1
        if node.disk.recover() { faults["torn write", default: 0] += 1 }
        var machine = NodeMachine(
            name: node.name, nodes: nodes.map(\.name), map: map, timing: Self.timing, limits: limits, promised: node.syncedPromises(),
            incarnation: UInt64(node.generation), now: localNow(index))
        machine.mutant = mutant
        node.machine = machine
        node.lastWrite = 0
        node.requesters = [:]
        nodes[index] = node
        schedule(at: now + 1, .tickNode(index, generation: node.generation))
    }

    func crashNode(_ index: Int) {
        nodes[index].machine = nil
        nodes[index].disk.crash(tearingLastWrite: swarm.tearsWrites && Bool.random(using: &random))
    }

    func tickNode(_ index: Int, _ generation: Int) {
        guard nodes[index].generation == generation, nodes[index].machine != nil else { return }
        step(.tick, node: index)
        schedule(at: now + Self.tickMs, .tickNode(index, generation: generation))
    }

    func syncNode(_ index: Int, _ generation: Int) {
        guard nodes[index].generation == generation, nodes[index].machine != nil else { return }
        let before = nodes[index].disk.synced.count
        nodes[index].disk.sync()
        checker.nodeSynced(Array(nodes[index].disk.synced[before...]), at: index, in: self)
        step(.durable(nodes[index].lastWrite), node: index)
    }

    // MARK: - Messages in

    func nodeReceivesSubmit(_ txnID: TxnID, _ branches: [Branch], client: Int, node index: Int) {
        step(.submits([Submit(txnID, branches, from: requester(.client(client), txnID, at: index))]), node: index)
    }

    func nodeReceivesVote(_ vote: VoteReply, rm: Int, node index: Int) {
        step(.votes([vote], from: rmNames[rm]), node: index)
    }

    func nodeReceivesAck(_ ack: AckReply, rm: Int, node index: Int) {
        step(.acks([ack], from: rmNames[rm]), node: index)
    }

    func nodeReceivesInquiry(_ prepared: PreparedTxn, rm: Int, node index: Int) {
        let asker = requester(.rm(rm), prepared.txnID, at: index)
        step(.resolve(prepared.txnID, partition: prepared.sender.partition, from: asker), node: index)
    }

    func nodeReceivesPeer(_ message: PeerMessage, from peer: Int, node index: Int) {
        step(.peer(message, from: "n\(peer)"), node: index)
    }

    private func requester(_ asker: SimNode.Asker, _ txnID: TxnID, at index: Int) -> Requester {
        nextRequester += 1
        let token = Requester(nextRequester)
        nodes[index].requesters[token] = (asker, txnID)
        return token
    }

    // MARK: - Actions out

    private func step(_ event: NodeEvent, node index: Int) {
        guard nodes[index].machine != nil else { return }
        let disk = nodes[index].disk
        let actions = nodes[index].machine!.step(event, now: localNow(index)) { disk.synced.rows(of: $0) }
        perform(actions, node: index)
    }

    private func perform(_ actions: NodeActions, node index: Int) {
        for observation in actions.observations { observe(observation, node: index) }
        for write in actions.writes {
            nodes[index].disk.write(write.items)
            nodes[index].lastWrite = write.id
            schedule(at: now + fsyncDelay(), .syncNode(index, generation: nodes[index].generation))
        }
        for (peer, message) in actions.peerMessages { send(.peer(message, from: index, to: Self.nodeIndex(peer))) }
        for envelope in actions.rmMessages {
            switch envelope {
            case .prepare(let rm, let message):
                checker.prepareSent(message)
                send(.prepare(message, rm: rmNames.firstIndex(of: rm)!))
            case .decision(let rm, let message):
                checker.decisionSent(message)
                send(.decision(message, rm: rmNames.firstIndex(of: rm)!))
            }
        }
        for (requester, answer) in actions.answers {
            guard let (asker, txnID) = nodes[index].requesters.removeValue(forKey: requester) else { continue }
            deliverAnswer(answer, txnID: txnID, to: asker, node: index)
        }
    }

    private func deliverAnswer(_ answer: NodeAnswer, txnID: TxnID, to asker: SimNode.Asker, node index: Int) {
        switch (asker, answer) {
        case (.client(let client), .status(let status, _, _)):
            send(.reply(ClientReply(txnID: txnID, status: status), client: client, node: index))
        case (.client(let client), .redirect(let leader, _)):
            send(.redirect(txnID, leader: Self.nodeIndex(leader), client: client, node: index))
        case (.client(let client), .unavailable), (.client(let client), .overloaded):
            send(.retryLater(txnID, client: client, node: index))
        case (.rm(let rm), .status(let status, let sender, _)):
            switch status {
            case .committed: send(.inquiryAnswer(txnID, .commit, sender: sender, rm: rm))
            case .aborted: send(.inquiryAnswer(txnID, .abort, sender: sender, rm: rm))
            case .preparing: break
            }
        case (.client, .idTaken), (.client, .snapshot), (.client, .notFound), (.rm, _):
            break
        }
    }

    private func observe(_ observation: NodeObservation, node index: Int) {
        switch observation {
        case .issued(let partition, let ticket, let records):
            checker.issued(records, ticket: ticket, partition: partition, by: index)
        case .ackClaims(let partition, let ticket, let follower):
            checker.ackClaims(ticket, partition: partition, leader: index, follower: Self.nodeIndex(follower))
        case .claimsRestart(let partition, let follower):
            checker.claimsRestart(partition: partition, leader: index, follower: follower.map(Self.nodeIndex))
        case .released(let txnID, let outcome, let what):
            checker.released(txnID, outcome, by: index, what: what)
        case .tookOver(let partitions, _, _, _, _):
            takeovers += partitions.count
        case .steppedDown, .takeoverLost, .inDoubtFinished, .newSession, .decisionRefused, .stalled:
            break
        }
    }
}
