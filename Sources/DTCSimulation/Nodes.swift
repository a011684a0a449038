import DTCCore

/// What a leader holds back until a quorum holds every record appended before it.
struct HeldRelease: Sendable {
    var messages: [Envelope] = []
    var replies: [ClientReply] = []
}

/// What waits for a node's next fsync.
enum AfterSync: Sendable {
    /// The leader's own copy of these appends is durable: it counts as one member's ack.
    case ownTickets([(partition: UInt32, ticket: UInt64)])
    /// A follower's appends are durable: acknowledge them to the leader.
    case acks([AppendAck], to: Int)
    /// Promises granted to a candidate are durable: answer with this node's rows.
    case fenceAnswer(attempt: UInt64, granted: [UInt32], refused: [UInt32: Epoch], to: Int)
    /// The candidate's own promises are durable: send the FENCEs.
    case sendFences
}

/// One takeover in progress at a candidate.
struct TakeoverAttempt: Sendable {
    var takeover: Takeover
    var number: UInt64
    var awaiting: Set<Int> = []
    var deadline: UInt64 = .max
}

/// A coordinator node: the real cores dtc-node runs (`Coordinator`, `Membership`,
/// `PartitionPromises`, `ReplicationLeader`, `Takeover`) with the shell's rules: records are
/// appended locally and to the partition's other members, and what depends on them waits for
/// a quorum; promises are durable before a FENCE or its answer goes out; a follower acks only
/// what it synced.
struct SimNode {
    let index: Int
    let name: String
    var core: Coordinator?
    var membership: Membership
    var promises = PartitionPromises()
    var replication: [UInt32: ReplicationLeader<HeldRelease>] = [:]
    var trims = TrimSchedule()
    var disk = Disk<NodeWrite>()
    var generation = 0
    /// Added to the simulated time to give this node's clock. dtc reads a monotonic clock,
    /// so a jump only ever goes forward (a suspended VM, a stalled process).
    var clockOffset: UInt64 = 0
    var pausedUntil: UInt64 = 0
    var lastTickAt: UInt64 = 0
    var nextHeartbeatAt: UInt64 = 0
    var retryTakeoverAt: [UInt32: UInt64] = [:]
    var takeover: TakeoverAttempt?
    var attempts: UInt64 = 0
    /// Leader side: per follower, the open session and the next sequence number.
    var sessions: [Int: (session: UInt64, next: UInt64)] = [:]
    /// Leader side: when each follower last acknowledged anything (or got a catch-up).
    var lastAckAt: [Int: UInt64] = [:]
    var sessionsOpened: UInt64 = 0
    /// Follower side: per leader, the session followed and the sequence expected next (nil
    /// once the session broke: everything after a gap or a refusal is refused until the
    /// leader opens a new session with a catch-up).
    var following: [Int: (session: UInt64, next: UInt64?)] = [:]
    var afterSync: [AfterSync] = []
    var waitingClients: [TxnID: [Int]] = [:]
    var waitingRMs: [TxnID: [Int]] = [:]

    init(index: Int) {
        self.index = index
        self.name = "n\(index)"
        membership = Membership(me: name, peers: [], replicationFactor: 3, suspicionTimeout: 0, startedAt: 0)
    }

    /// Rows of a partition, from the synced log: what a FENCE answer or a takeover reads.
    func rows(of partition: UInt32) -> [TxnRow] {
        var rows: [TxnID: TxnRow] = [:]
        for write in disk.synced {
            guard case .record(let entry) = write, entry.partition == partition else { continue }
            if case .trim(let txnID) = entry.record {
                rows[txnID] = nil
            } else {
                rows[entry.record.txnID, default: TxnRow(txnID: entry.record.txnID)].apply(entry.record)
            }
        }
        return rows.values.sorted { $0.txnID < $1.txnID }
    }

    /// The highest promise per partition in the synced log.
    func syncedPromises() -> [UInt32: Epoch] {
        var promised: [UInt32: Epoch] = [:]
        for write in disk.synced {
            if case .promise(let partition, let epoch) = write { promised[partition] = max(promised[partition] ?? .zero, epoch) }
        }
        return promised
    }
}

extension Simulation {
    static let tickMs: UInt64 = 20
    static let heartbeatMs: UInt64 = 50
    static let suspicionTimeoutMs: UInt64 = 400
    static let fenceTimeoutMs: UInt64 = 300
    static let catchUpAfterMs: UInt64 = 200
    /// How long a node keeps an ENDed txn's row (dtc-node: `logRetentionMs`): the window in
    /// which a txnID is deduplicated. It must outlast a client's retries plus the longest
    /// delay of a message (200 ms × 10), or a late submit would run the txn again.
    static let retentionMs: UInt64 = 3_500
    /// A client resubmits a txn for this long after its first submit, then gives up.
    static let retryHorizonMs: UInt64 = 1_200

    static func nodeIndex(_ name: String) -> Int { Int(name.dropFirst())! }

    func localNow(_ index: Int) -> UInt64 { now + nodes[index].clockOffset }

    /// The partitions whose replica group holds the node.
    func partitions(of index: Int) -> [UInt32] {
        (0..<map.partitionCount).filter { map.replicaGroup(of: $0).contains("n\(index)") }
    }

    // MARK: - Start, crash, time

    /// A (re)start: the node leads nothing, knows its promises and rows from its synced log,
    /// and takes part only once its membership is ready, as dtc-node does.
    func startNode(_ index: Int) {
        let local = localNow(index)
        var node = nodes[index]
        node.generation += 1
        if node.disk.recover() { faults["torn write", default: 0] += 1 }
        var core = Coordinator(node: node.name, nodeIndex: UInt32(index), epochs: [:], limits: limits)
        core.mutant = mutant
        node.core = core
        node.membership = Membership(
            me: node.name, peers: nodes.indices.filter { $0 != index }.map { "n\($0)" }, replicationFactor: 3,
            suspicionTimeout: Self.suspicionTimeoutMs, startedAt: local)
        node.promises = PartitionPromises(node.syncedPromises())
        node.replication = [:]
        node.trims = TrimSchedule()
        node.lastTickAt = 0
        node.nextHeartbeatAt = local
        node.retryTakeoverAt = [:]
        node.takeover = nil
        node.sessions = [:]
        node.lastAckAt = [:]
        node.following = [:]
        node.afterSync = []
        node.waitingClients = [:]
        node.waitingRMs = [:]
        nodes[index] = node
        schedule(at: now + 1, .tickNode(index, generation: node.generation))
    }

    func crashNode(_ index: Int) {
        nodes[index].core = nil
        nodes[index].disk.crash(tearingLastWrite: swarm.tearsWrites && Bool.random(using: &random))
    }

    var limits: Limits {
        var limits = Limits()
        limits.prepareTimeout = 300
        limits.lockWaitTimeout = 100
        limits.decisionRetryInitial = 50
        limits.decisionRetryMax = 400
        return limits
    }

    func tickNode(_ index: Int, _ generation: Int) {
        guard nodes[index].generation == generation, var core = nodes[index].core else { return }
        let local = localNow(index)
        // A node that did not run for a while has heard nothing through no fault of its
        // peers: it gives them a fresh suspicion timeout (as dtc-node does).
        if nodes[index].lastTickAt > 0, local - nodes[index].lastTickAt > Self.suspicionTimeoutMs / 2 {
            nodes[index].membership.assumeAlive(at: local)
        }
        nodes[index].lastTickAt = local
        let output = core.tick(now: local)
        nodes[index].core = core
        apply(output, node: index)
        nodes[index].membership.tick(now: local)
        if local >= nodes[index].nextHeartbeatAt {
            nodes[index].nextHeartbeatAt = local + Self.heartbeatMs
            sendHeartbeats(from: index)
        }
        catchUpSilentFollowers(index)
        trimDue(index)
        if let attempt = nodes[index].takeover {
            if local >= attempt.deadline { finishTakeover(index) }
        } else if nodes[index].membership.isReady {
            startTakeover(index)
        }
        schedule(at: now + Self.tickMs, .tickNode(index, generation: generation))
    }

    func syncNode(_ index: Int, _ generation: Int) {
        guard nodes[index].generation == generation, nodes[index].core != nil else { return }
        let before = nodes[index].disk.synced.count
        nodes[index].disk.sync()
        checker.nodeSynced(Array(nodes[index].disk.synced[before...]), at: index, in: self)
        let waiting = nodes[index].afterSync
        nodes[index].afterSync = []
        for item in waiting {
            guard nodes[index].core != nil else { return }
            switch item {
            case .ownTickets(let tickets):
                for (partition, ticket) in tickets { acknowledged(partition, ticket, by: index, at: index) }
            case .acks(let acks, let leader):
                send(.appendAcks(acks, from: index, to: leader))
            case .fenceAnswer(let attempt, let granted, let refused, let candidate):
                let promised = Dictionary(uniqueKeysWithValues: granted.map { ($0, nodes[index].rows(of: $0)) })
                send(.fenceAnswer(FenceAnswer(attempt: attempt, promised: promised, refused: refused), from: index, to: candidate))
            case .sendFences:
                sendFences(index)
            }
        }
    }

    private func write(_ writes: [NodeWrite], node index: Int, then waiting: AfterSync) {
        nodes[index].disk.write(writes)
        nodes[index].afterSync.append(waiting)
        schedule(at: now + fsyncDelay(), .syncNode(index, generation: nodes[index].generation))
    }

    // MARK: - Clients and RMs

    func nodeReceivesSubmit(_ txnID: TxnID, _ branches: [Branch], client: Int, node index: Int) {
        guard var core = nodes[index].core else { return }
        let partition = map.partition(of: txnID)
        guard core.leads(partition) else {
            let membership = nodes[index].membership
            if let leader = membership.leader(of: partition), leader.node != nodes[index].name, membership.isAlive(leader.node) {
                send(.redirect(txnID, leader: Self.nodeIndex(leader.node), client: client, node: index))
            }
            return
        }
        guard case .accepted(let output) = core.submit(txnID, branches: branches, partition: partition, now: localNow(index)) else {
            nodes[index].core = core
            return
        }
        nodes[index].core = core
        nodes[index].waitingClients[txnID, default: []].append(client)
        apply(output, node: index)
    }

    func nodeReceivesVote(_ txnID: TxnID, _ vote: Vote, rm: Int, node index: Int) {
        guard var core = nodes[index].core else { return }
        let output = core.voteReceived(vote, txn: txnID, from: rmNames[rm], now: localNow(index))
        nodes[index].core = core
        apply(output, node: index)
    }

    func nodeReceivesAck(_ txnID: TxnID, rm: Int, node index: Int) {
        guard var core = nodes[index].core else { return }
        let output = core.ackReceived(txn: txnID, from: rmNames[rm])
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

    // MARK: - Persist and replicate before send

    /// Appends the records locally and to each partition's other members; what depends on
    /// them waits until a quorum of the partition's replica group holds them durably.
    private func apply(_ output: CoordinatorOutput, node index: Int) {
        if !output.recordsToAppend.isEmpty { append(output.recordsToAppend, node: index) }
        for envelope in output.messagesNow { send(envelope) }
        var held: [UInt32: HeldRelease] = [:]
        for envelope in output.messagesAfterAppend { held[envelope.partition, default: HeldRelease()].messages.append(envelope) }
        for reply in output.replies { held[map.partition(of: reply.txnID), default: HeldRelease()].replies.append(reply) }
        for (partition, release) in held.sorted(by: { $0.key < $1.key }) { hold(release, partition: partition, node: index) }
    }

    private func append(_ records: [PartitionRecord], node index: Int) {
        var byPartition: [UInt32: [LogRecord]] = [:]
        for entry in records { byPartition[entry.partition, default: []].append(entry.record) }
        var appends: [PartitionAppend] = []
        for (partition, partitionRecords) in byPartition.sorted(by: { $0.key < $1.key }) {
            guard let epoch = nodes[index].core?.epochs[partition], nodes[index].replication[partition] != nil else {
                preconditionFailure("n\(index) appends to partition \(partition), which it does not lead")
            }
            let ticket = nodes[index].replication[partition]!.issue()
            for case .end(let txnID) in partitionRecords {
                nodes[index].trims.ended(txnID, partition: partition, ticket: ticket, due: localNow(index) + Self.retentionMs)
            }
            appends.append(PartitionAppend(partition: partition, epoch: epoch, ticket: ticket, records: partitionRecords))
            checker.issued(partitionRecords, ticket: ticket, partition: partition, by: index)
        }
        write(records.map { .record($0) }, node: index, then: .ownTickets(appends.map { ($0.partition, $0.ticket) }))
        for follower in nodes.indices where follower != index {
            let theirs = appends.filter { nodes[index].replication[$0.partition]!.members.contains("n\(follower)") }
            if !theirs.isEmpty { sendAppends(theirs, from: index, to: follower) }
        }
    }

    private func hold(_ release: HeldRelease, partition: UInt32, node index: Int) {
        guard nodes[index].replication[partition] != nil else { return }
        if let now = nodes[index].replication[partition]!.hold(release) { perform(now, node: index) }
    }

    private func acknowledged(_ partition: UInt32, _ ticket: UInt64, by member: Int, at index: Int) {
        guard let replica = nodes[index].replication[partition] else { return }
        if member != index, ticket > replica.base { checker.ackClaims(ticket, partition: partition, leader: index, follower: member) }
        for release in nodes[index].replication[partition]!.acknowledged(ticket, by: "n\(member)") { perform(release, node: index) }
    }

    private func perform(_ release: HeldRelease, node index: Int) {
        for envelope in release.messages {
            if case .decision(let rm, let message) = envelope { checker.released(message.txnID, message.outcome, by: index, what: "a decision to \(rm)") }
            send(envelope)
        }
        for reply in release.replies {
            switch reply.status {
            case .committed: checker.released(reply.txnID, .commit, by: index, what: "a reply")
            case .aborted: checker.released(reply.txnID, .abort, by: index, what: "a reply")
            case .preparing: break
            }
            for client in nodes[index].waitingClients.removeValue(forKey: reply.txnID) ?? [] {
                send(.reply(reply, client: client, node: index))
            }
            for rm in nodes[index].waitingRMs.removeValue(forKey: reply.txnID) ?? [] {
                let partition = map.partition(of: reply.txnID)
                guard reply.status != .preparing, let epoch = nodes[index].core?.epochs[partition] else { continue }
                let sender = Sender(partition: partition, epoch: epoch, node: "n\(index)")
                send(.inquiryAnswer(reply.txnID, reply.status == .committed ? .commit : .abort, sender: sender, rm: rm))
            }
        }
    }

    private func send(_ envelope: Envelope) {
        switch envelope {
        case .prepare(let rm, let message): send(.prepare(message, rm: rmNames.firstIndex(of: rm)!))
        case .decision(let rm, let message): send(.decision(message, rm: rmNames.firstIndex(of: rm)!))
        }
    }

    // MARK: - Replication sessions

    private func sendAppends(_ appends: [PartitionAppend], from index: Int, to follower: Int) {
        if nodes[index].sessions[follower] == nil {
            openSession(from: index, to: follower)
            return  // the catch-up carries these records too
        }
        let (session, sequence) = nodes[index].sessions[follower]!
        nodes[index].sessions[follower]!.next += 1
        send(.append(AppendMessage(session: session, sequence: sequence, appends: appends), from: index, to: follower))
    }

    /// A new session starts with every in-flight txn of the partitions the follower shares
    /// with this leader; its acks count from there on.
    private func openSession(from index: Int, to follower: Int) {
        guard let core = nodes[index].core else { return }
        nodes[index].sessionsOpened += 1
        let session = UInt64(nodes[index].generation) << 32 | nodes[index].sessionsOpened
        var catchUp: [PartitionAppend] = []
        for partition in nodes[index].replication.keys.sorted() where nodes[index].replication[partition]!.members.contains("n\(follower)") {
            nodes[index].replication[partition]!.catchUp("n\(follower)")
            checker.claimsRestart(partition: partition, leader: index, follower: follower)
            catchUp.append(
                PartitionAppend(
                    partition: partition, epoch: core.epochs[partition]!, ticket: nodes[index].replication[partition]!.issued,
                    records: core.activeRecords(partition: partition)
                        + core.endedRecords(nodes[index].trims.ended(partition: partition), partition: partition)))
        }
        nodes[index].sessions[follower] = (session, 1)
        nodes[index].lastAckAt[follower] = localNow(index)
        send(.append(AppendMessage(session: session, sequence: 0, appends: catchUp), from: index, to: follower))
    }

    /// ENDed rows that every member holds leave every member's log together.
    private func trimDue(_ index: Int) {
        var output = CoordinatorOutput()
        for (partition, replica) in nodes[index].replication.sorted(by: { $0.key < $1.key }) {
            let due = nodes[index].trims.due(partition: partition, allDurable: replica.allDurable, now: localNow(index))
            output.recordsToAppend += due.map { PartitionRecord(partition: partition, record: .trim(txnID: $0)) }
        }
        if !output.recordsToAppend.isEmpty { apply(output, node: index) }
    }

    /// A follower that is behind and silent for a while may have lost an append (or its ack):
    /// it gets a new session with a catch-up.
    private func catchUpSilentFollowers(_ index: Int) {
        let local = localNow(index)
        for follower in nodes.indices where follower != index {
            let isBehind = nodes[index].replication.values.contains { $0.members.contains("n\(follower)") && $0.isBehind("n\(follower)") }
            guard isBehind else {
                nodes[index].lastAckAt[follower] = local
                continue
            }
            if local >= (nodes[index].lastAckAt[follower] ?? local) + Self.catchUpAfterMs {
                openSession(from: index, to: follower)
            }
        }
    }

    /// A follower takes a session's messages in order only; a gap or a refusal breaks the
    /// session, since its later acks would otherwise claim records it never stored.
    func nodeReceivesAppend(_ message: AppendMessage, from leader: Int, node index: Int) {
        guard nodes[index].core != nil else { return }
        let followed = nodes[index].following[leader]
        // Sessions only move forward: a late message of an older session must not bring back
        // rows that were trimmed since.
        if message.sequence == 0, message.session > followed?.session ?? 0 {
            nodes[index].following[leader] = (message.session, 1)
        } else if followed?.session == message.session, let next = followed?.next, message.sequence == next {
            nodes[index].following[leader]!.next = next + 1
        } else if followed?.session == message.session, let next = followed?.next, message.sequence < next {
            return  // a duplicate
        } else {
            if message.session >= followed?.session ?? 0 {
                send(.appendAcks([AppendAck(session: message.session, partition: 0, ticket: 0, kind: .gap)], from: index, to: leader))
            }
            return
        }
        var writes: [NodeWrite] = []
        var accepted: [AppendAck] = []
        var refused: [AppendAck] = []
        for append in message.appends {
            let verdict = nodes[index].promises.append(
                partition: append.partition, epoch: append.epoch, led: nodes[index].core!.epochs[append.partition],
                isReady: nodes[index].membership.isReady)
            switch verdict {
            case .refuse(let promised):
                refused.append(AppendAck(session: message.session, partition: append.partition, ticket: append.ticket, kind: .refused(promised: promised)))
            case .accept(let promise, let mustStepDown):
                if mustStepDown { stepDown(append.partition, node: index) }
                if let promise { writes.append(.promise(append.partition, promise)) }
                nodes[index].membership.learn(append.partition, leader: "n\(leader)", epoch: append.epoch)
                writes += append.records.map { .record(PartitionRecord(partition: append.partition, record: $0)) }
                if message.sequence == 0 {
                    writes += staleRows(append, node: index).map { .record(PartitionRecord(partition: append.partition, record: .trim(txnID: $0))) }
                }
                accepted.append(AppendAck(session: message.session, partition: append.partition, ticket: append.ticket, kind: .accepted))
            }
        }
        if !refused.isEmpty {
            if mutant != .followerKeepsSessionAfterRefusal { nodes[index].following[leader]!.next = nil }
            send(.appendAcks(refused, from: index, to: leader))
        }
        if !accepted.isEmpty { write(writes, node: index, then: .acks(accepted, to: leader)) }
    }

    /// A catch-up lists every txn of the partition its leader knows and has not trimmed; the
    /// rows it does not list go (as in dtc-node: a txn the leader never heard of was never
    /// decided, and one it trimmed was ENDed on every member).
    private func staleRows(_ catchUp: PartitionAppend, node index: Int) -> [TxnID] {
        let listed = Set(catchUp.records.map(\.txnID))
        return nodes[index].rows(of: catchUp.partition).map(\.txnID).filter { !listed.contains($0) }
    }

    func nodeReceivesAppendAcks(_ acks: [AppendAck], from follower: Int, node index: Int) {
        guard nodes[index].core != nil else { return }
        for ack in acks {
            switch ack.kind {
            case .gap:
                if nodes[index].sessions[follower]?.session == ack.session { openSession(from: index, to: follower) }
            case .accepted:
                nodes[index].lastAckAt[follower] = localNow(index)
                acknowledged(ack.partition, ack.ticket, by: follower, at: index)
            case .refused(let promised):
                if let mine = nodes[index].core?.epochs[ack.partition], promised > mine { stepDown(ack.partition, node: index) }
            }
        }
    }

    /// Stops leading: what was held is never sent; waiting clients time out and retry.
    private func stepDown(_ partition: UInt32, node index: Int) {
        guard var core = nodes[index].core else { return }
        let dropped = core.stepDown(partition: partition)
        nodes[index].core = core
        nodes[index].membership.forget(partition, leader: nodes[index].name)
        backOffTakeover(partition, node: index)
        nodes[index].replication[partition] = nil
        nodes[index].trims.forget(partition: partition)
        for txnID in dropped {
            nodes[index].waitingClients[txnID] = nil
            nodes[index].waitingRMs[txnID] = nil
        }
    }

    private func backOffTakeover(_ partition: UInt32, node index: Int) {
        nodes[index].retryTakeoverAt[partition] = max(nodes[index].retryTakeoverAt[partition] ?? 0, localNow(index) + Self.suspicionTimeoutMs)
    }

    // MARK: - Failure detection

    private func sendHeartbeats(from index: Int) {
        let heartbeat = Heartbeat(leads: nodes[index].core?.epochs ?? [:], promised: [:], isReady: nodes[index].membership.isReady, isReply: false)
        for peer in nodes.indices where peer != index { send(.heartbeat(heartbeat, from: index, to: peer)) }
    }

    func nodeReceivesHeartbeat(_ heartbeat: Heartbeat, from peer: Int, node index: Int) {
        guard let core = nodes[index].core else { return }
        heard(peer, heartbeat, node: index)
        guard !heartbeat.isReply else { return }
        let reply = Heartbeat(leads: core.epochs, promised: nodes[index].promises.promised, isReady: nodes[index].membership.isReady, isReply: true)
        send(.heartbeat(reply, from: index, to: peer))
    }

    /// A peer is alive and says what it leads: adopt higher epochs, step down from a partition
    /// a higher epoch leads, and adopt its promises (which only makes this node refuse more).
    private func heard(_ peer: Int, _ heartbeat: Heartbeat, node index: Int) {
        nodes[index].membership.heard("n\(peer)", at: localNow(index), isReady: heartbeat.isReady || !heartbeat.isReply)
        nodes[index].membership.peerLeads("n\(peer)", heartbeat.leads)
        for (partition, epoch) in heartbeat.leads.sorted(by: { $0.key < $1.key }) {
            if let mine = nodes[index].core?.epochs[partition], epoch > mine { stepDown(partition, node: index) }
        }
        for (partition, epoch) in heartbeat.promised.sorted(by: { $0.key < $1.key }) {
            nodes[index].membership.observe(partition, epoch: epoch)
            nodes[index].promises.adopt(partition, epoch)
        }
    }

    // MARK: - Takeover

    private func startTakeover(_ index: Int) {
        guard let core = nodes[index].core else { return }
        let local = localNow(index)
        let membership = nodes[index].membership
        let wanted = partitions(of: index).filter { partition in
            !core.leads(partition) && local >= (nodes[index].retryTakeoverAt[partition] ?? 0)
                && membership.shouldTakeOver(partition, members: map.replicaGroup(of: partition))
        }
        guard !wanted.isEmpty else { return }
        var seen: [UInt32: Epoch] = [:]
        for partition in wanted {
            seen[partition] = [nodes[index].promises[partition], membership.leader(of: partition)?.epoch, membership.observed(partition)].compactMap { $0 }.max() ?? .zero
        }
        let takeover = Takeover(
            candidate: nodes[index].name, nodeID: UInt32(index + 1), seen: seen,
            groups: Dictionary(uniqueKeysWithValues: wanted.map { ($0, map.replicaGroup(of: $0)) }))
        for (partition, epoch) in takeover.epochs { nodes[index].promises.adopt(partition, epoch) }
        nodes[index].attempts += 1
        nodes[index].takeover = TakeoverAttempt(takeover: takeover, number: nodes[index].attempts)
        write(takeover.epochs.sorted { $0.key < $1.key }.map { .promise($0.key, $0.value) }, node: index, then: .sendFences)
    }

    private func sendFences(_ index: Int) {
        guard var attempt = nodes[index].takeover else { return }
        var byMember: [Int: [UInt32: Epoch]] = [:]
        for (partition, epoch) in attempt.takeover.epochs {
            attempt.takeover.promisedLocally(partition, rows: nodes[index].rows(of: partition))
            for member in map.replicaGroup(of: partition) where member != nodes[index].name {
                byMember[Self.nodeIndex(member), default: [:]][partition] = epoch
            }
        }
        attempt.awaiting = Set(byMember.keys)
        attempt.deadline = localNow(index) + Self.fenceTimeoutMs
        nodes[index].takeover = attempt
        for (member, epochs) in byMember.sorted(by: { $0.key < $1.key }) {
            send(.fence(attempt: attempt.number, epochs: epochs, from: index, to: member))
        }
        if attempt.awaiting.isEmpty { finishTakeover(index) }
    }

    func nodeReceivesFence(attempt: UInt64, epochs: [UInt32: Epoch], from candidate: Int, node index: Int) {
        guard nodes[index].core != nil else { return }
        var granted: [UInt32] = []
        var refused: [UInt32: Epoch] = [:]
        for (partition, epoch) in epochs.sorted(by: { $0.key < $1.key }) {
            let verdict = nodes[index].promises.fence(
                partition: partition, epoch: epoch, led: nodes[index].core!.epochs[partition], isReady: nodes[index].membership.isReady)
            switch verdict {
            case .failure(let refusal):
                refused[partition] = refusal.promised
            case .success:
                granted.append(partition)
                backOffTakeover(partition, node: index)
                nodes[index].membership.observe(partition, epoch: epoch)
                if nodes[index].core!.leads(partition) { stepDown(partition, node: index) }
            }
        }
        guard !granted.isEmpty else {
            send(.fenceAnswer(FenceAnswer(attempt: attempt, promised: [:], refused: refused), from: index, to: candidate))
            return
        }
        let promises = granted.map { NodeWrite.promise($0, epochs[$0]!) }
        write(promises, node: index, then: .fenceAnswer(attempt: attempt, granted: granted, refused: refused, to: candidate))
    }

    func nodeReceivesFenceAnswer(_ answer: FenceAnswer, from member: Int, node index: Int) {
        guard nodes[index].core != nil, var attempt = nodes[index].takeover, attempt.number == answer.attempt, attempt.awaiting.contains(member) else { return }
        for (partition, rows) in answer.promised.sorted(by: { $0.key < $1.key }) {
            attempt.takeover.promised(partition, by: "n\(member)", rows: rows)
        }
        for (partition, epoch) in answer.refused.sorted(by: { $0.key < $1.key }) {
            attempt.takeover.refused(partition, promised: epoch)
            nodes[index].membership.observe(partition, epoch: epoch)
        }
        attempt.awaiting.remove(member)
        nodes[index].takeover = attempt
        if attempt.awaiting.isEmpty { finishTakeover(index) }
    }

    /// Installs every partition won (unless this node promised a higher epoch meanwhile);
    /// the others are tried again later.
    private func finishTakeover(_ index: Int) {
        guard let attempt = nodes[index].takeover else { return }
        nodes[index].takeover = nil
        let local = localNow(index)
        for partition in attempt.takeover.lost() {
            nodes[index].retryTakeoverAt[partition] = local + 3 * Self.heartbeatMs
        }
        for won in attempt.takeover.won() {
            guard var core = nodes[index].core, nodes[index].promises[won.partition] == won.epoch, !core.leads(won.partition) else {
                nodes[index].retryTakeoverAt[won.partition] = local + 3 * Self.heartbeatMs
                continue
            }
            nodes[index].replication[won.partition] = ReplicationLeader(members: map.replicaGroup(of: won.partition), epoch: won.epoch)
            checker.claimsRestart(partition: won.partition, leader: index)
            nodes[index].membership.learn(won.partition, leader: nodes[index].name, epoch: won.epoch)
            let output = core.takeOver(partition: won.partition, epoch: won.epoch, rows: won.rows, now: local)
            nodes[index].core = core
            takeovers += 1
            apply(output, node: index)
        }
    }
}

extension Envelope {
    var partition: UInt32 {
        switch self {
        case .prepare(_, let message): message.sender.partition
        case .decision(_, let message): message.sender.partition
        }
    }
}
