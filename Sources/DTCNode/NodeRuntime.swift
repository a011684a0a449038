import DTCCore
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore
import Logging

/// dtc-node's shell around `NodeMachine`: it turns gRPC calls, RM and peer streams, LMDB
/// completions and the tick into events, and performs the actions the machine returns. It
/// holds no protocol of its own: who leads, what is durable where, and when anything may be
/// sent or answered is the machine's to say (the simulator runs the same machine).
actor NodeRuntime: RMReplyHandler, PeerReplyHandler {
    let name: String
    let config: ClusterConfig
    let map: PartitionMap
    private var machine: NodeMachine
    private let store: NodeStore
    private let rmLinks: [String: RMLink]
    private let connections: Connections
    private var peerLinks: [String: PeerLink] = [:]
    private let clock: ProcessClock
    private let logger: Logger
    private var nextRequester: UInt64 = 0
    /// Callers waiting for the machine's answer (Submit, Resolve, GetTxn).
    private var requesters: [Requester: @Sendable (NodeAnswer) -> Void] = [:]
    /// Fence calls waiting for this node's answer, per candidate and attempt.
    private var fenceCalls: [FenceCall: CheckedContinuation<FenceAnswer?, Never>] = [:]
    /// Per leader: the newest replication stream from it, where this node's acks go.
    private var ackRoutes: [String: (stream: UInt64, acks: BatchQueue<Dtc_V1_AppendAck>)] = [:]
    private var streamsOpened: UInt64 = 0
    /// The newest durable write not yet reported to the machine.
    private nonisolated let durableReports = CompletionBatch<UInt64>(empty: 0)
    /// Peers with a heartbeat call in flight: one at a time each.
    private var heartbeating: Set<String> = []
    /// For the crash point "after-commit-local": appends carrying a COMMIT, sent to followers
    /// only once the write with that COMMIT is durable here.
    private var heldForCrash: [(write: UInt64, to: String, batch: Dtc_V1_AppendBatch)] = []

    private struct FenceCall: Hashable {
        var candidate: String
        var attempt: UInt64
    }

    init(
        name: String, config: ClusterConfig, store: NodeStore, incarnation: UInt64, rmLinks: [String: RMLink], connections: Connections,
        clock: ProcessClock, logger: Logger
    ) throws {
        self.name = name
        self.config = config
        self.map = config.partitionMap
        self.store = store
        self.rmLinks = rmLinks
        self.connections = connections
        self.clock = clock
        self.logger = logger
        var promised: [UInt32: Epoch] = [:]
        for partition in 0..<map.partitionCount where map.replicaGroup(of: partition).contains(name) {
            promised[partition] = try store.promise(of: partition)
        }
        let timing = config.timing
        machine = NodeMachine(
            name: name, nodes: config.nodes.map(\.name), map: map,
            timing: NodeTiming(
                heartbeatMs: UInt64(timing.heartbeatMs), suspicionTimeoutMs: UInt64(timing.suspicionTimeoutMs),
                fenceTimeoutMs: UInt64(max(300, timing.suspicionTimeoutMs)), silentFollowerMs: UInt64(timing.suspicionTimeoutMs / 2),
                retentionMs: UInt64(timing.logRetentionMs)),
            limits: config.limits, promised: promised, incarnation: incarnation, now: clock.now())
    }

    func attach(_ links: [String: PeerLink]) {
        peerLinks = links
    }

    // MARK: - Calls that wait for an answer

    func submit(_ txnID: TxnID, branches: [Branch]) async -> NodeAnswer {
        await ask { .submit(txnID, branches, from: $0) }
    }

    /// Many submits in one step (a SubmitStream batch): their STARTs share a write and a message
    /// to each follower. Each answer goes to `deliver` with the submit's index as it comes.
    func submit(batch: [(TxnID, [Branch])], deliver: @escaping @Sendable (Int, NodeAnswer) -> Void) {
        var submits: [Submit] = []
        for (index, (txnID, branches)) in batch.enumerated() {
            submits.append(Submit(txnID, branches, from: requester { deliver(index, $0) }))
        }
        step(.submits(submits))
    }

    func resolve(_ txnID: TxnID, partition: UInt32) async -> NodeAnswer {
        await ask { .resolve(txnID, partition: partition, from: $0) }
    }

    func txn(_ txnID: TxnID) async -> NodeAnswer {
        await ask { .query(txnID, from: $0) }
    }

    /// A new requester whose answer goes to `deliver`.
    private func requester(_ deliver: @escaping @Sendable (NodeAnswer) -> Void) -> Requester {
        nextRequester += 1
        let requester = Requester(nextRequester)
        requesters[requester] = deliver
        return requester
    }

    private func ask(_ event: (Requester) -> NodeEvent) async -> NodeAnswer {
        await withCheckedContinuation { continuation in
            let requester = requester { continuation.resume(returning: $0) }
            step(event(requester))
        }
    }

    // MARK: - Events

    func tick() {
        step(.tick)
    }

    func votesReceived(_ votes: [VoteReply], from rm: String) {
        let actions = machine.step(.votes(votes, from: rm), now: clock.now(), txnIDs: readTxnIDs, log: readRows)
        if actions.writes.contains(where: { $0.records.contains(where: \.isCommit) }) { CrashPoints.shared.reached(.afterVotes) }
        perform(actions)
    }

    func acksReceived(_ acks: [AckReply], from rm: String) {
        step(.acks(acks, from: rm))
    }

    func streamBroken(to rm: String, reason: String) {
        step(.rmStreamBroken(rm, reason: reason))
    }

    func appendAcksReceived(_ acks: Dtc_V1_AppendAcks, from peer: String) {
        step(.peer(.appendAcks(acks.decoded), from: peer))
    }

    /// A leader's replication stream: each batch is a message of its session; this node's acks
    /// go back on the newest stream from that leader.
    func openedStream(from leader: String, acks: BatchQueue<Dtc_V1_AppendAck>) -> UInt64 {
        streamsOpened += 1
        ackRoutes[leader] = (streamsOpened, acks)
        return streamsOpened
    }

    func closedStream(_ stream: UInt64, from leader: String) {
        if ackRoutes[leader]?.stream == stream { ackRoutes[leader] = nil }
    }

    func appendsReceived(_ message: AppendMessage, from leader: String, stream: UInt64, acks: BatchQueue<Dtc_V1_AppendAck>) {
        if ackRoutes[leader].map({ $0.stream < stream }) ?? true { ackRoutes[leader] = (stream, acks) }
        step(.peer(.append(message), from: leader))
    }

    func heartbeatReceived(_ request: Dtc_V1_HeartbeatRequest) -> Dtc_V1_HeartbeatResponse {
        var actions = machine.step(.peer(.heartbeat(request.heartbeat), from: request.node), now: clock.now(), txnIDs: readTxnIDs, log: readRows)
        var reply = Heartbeat(leads: machine.coordinator.epochs, promised: machine.promises.promised, isReady: machine.membership.isReady, isReply: true)
        if let index = actions.peerMessages.firstIndex(where: { $0.to == request.node && $0.message.isHeartbeatReply }) {
            if case .heartbeat(let answer) = actions.peerMessages.remove(at: index).message { reply = answer }
        }
        perform(actions)
        return Dtc_V1_HeartbeatResponse(reply, from: name)
    }

    /// A candidate's FENCE: answered once the machine has made its promises durable.
    func fenceRequested(_ request: Dtc_V1_FenceRequest) async -> Dtc_V1_FenceResponse {
        let call = FenceCall(candidate: request.candidate, attempt: request.attempt)
        let answer = await withCheckedContinuation { continuation in
            fenceCalls.removeValue(forKey: call)?.resume(returning: nil)
            fenceCalls[call] = continuation
            step(.peer(.fence(request.request), from: request.candidate))
        }
        return answer.map(Dtc_V1_FenceResponse.init) ?? Dtc_V1_FenceResponse()
    }

    private func durable(_ write: UInt64) {
        let released = heldForCrash.prefix { $0.write <= write }
        if !released.isEmpty {
            heldForCrash.removeFirst(released.count)
            CrashPoints.shared.reached(.afterCommitLocal)
            for held in released { peerLinks[held.to]?.send(held.batch) }
        }
        step(.durable(write))
    }

    // MARK: - The machine

    private func step(_ event: NodeEvent) {
        perform(machine.step(event, now: clock.now(), txnIDs: readTxnIDs, log: readRows))
    }

    /// The txns of a partition that have a durable row. A read that fails stops the node, as
    /// in `readRows`.
    private nonisolated func readTxnIDs(_ partition: UInt32) -> [TxnID] {
        do {
            return try store.txnIDs(of: partition)
        } catch {
            fatalError("dtc-node: reading the row keys of partition \(partition) failed, stopping: \(error)")
        }
    }

    /// The node's durable rows of a partition. A read that fails stops the node: answering a
    /// fence or taking over with rows missing could undo a decision.
    private nonisolated func readRows(_ partition: UInt32) -> [TxnRow] {
        do {
            return try store.rows(of: partition)
        } catch {
            fatalError("dtc-node: reading the rows of partition \(partition) failed, stopping: \(error)")
        }
    }

    private func perform(_ actions: NodeActions) {
        for observation in actions.observations { observe(observation) }
        for write in actions.writes { persist(write) }
        for peer in actions.restartStreams { peerLinks[peer]?.restart() }
        for (peer, message) in actions.peerMessages { send(message, to: peer, after: actions.writes.last?.id) }
        sendToRMs(actions.rmMessages)
        for (requester, answer) in actions.answers { requesters.removeValue(forKey: requester)?(answer) }
    }

    private func persist(_ write: NodeWriteBatch) {
        let id = write.id
        let reported = durableReports
        store.append(write.records, promises: write.promises) { result in
            if case .failure(let error) = result { fatalError("dtc-node: log append failed, stopping to recover: \(error)") }
            if reported.add({ $0 = max($0, id) }) { Task { await self.reportDurable() } }
        }
    }

    /// One step for every write a group commit made durable (writes are durable in order, and
    /// the machine takes "durable up to id"): one batch of acks and releases, not one per write.
    private func reportDurable() {
        durable(durableReports.take())
    }

    private func send(_ message: PeerMessage, to peer: String, after write: UInt64?) {
        switch message {
        case .append(let append):
            let batch = Dtc_V1_AppendBatch(append, from: name)
            // For the crash point "after-commit-local" followers get a COMMIT only once it is
            // durable here, so that the crash surely falls between local durability and quorum.
            if let write, CrashPoints.shared.isArmed(.afterCommitLocal), append.appends.contains(where: { $0.records.contains(where: \.isCommitDecision) }) {
                heldForCrash.append((write, peer, batch))
            } else {
                peerLinks[peer]?.send(batch)
            }
        case .appendAcks(let acks):
            ackRoutes[peer]?.acks.append(contentsOf: Dtc_V1_AppendAcks(acks).acks)
        case .heartbeat(let heartbeat) where !heartbeat.isReply:
            callHeartbeat(heartbeat, to: peer)
        case .heartbeat:
            break  // a reply goes back as the response of the call (`heartbeatReceived`)
        case .fence(let request):
            callFence(request, to: peer)
        case .fenceAnswer(let answer):
            fenceCalls.removeValue(forKey: FenceCall(candidate: peer, attempt: answer.attempt))?.resume(returning: answer)
        }
    }

    private func sendToRMs(_ envelopes: [Envelope]) {
        guard !envelopes.isEmpty else { return }
        var prepares: [String: [PrepareMessage]] = [:]
        var decisions: [String: [DecisionMessage]] = [:]
        for envelope in envelopes {
            switch envelope {
            case .prepare(let rm, let message): prepares[rm, default: []].append(message)
            case .decision(let rm, let message): decisions[rm, default: []].append(message)
            }
        }
        for rm in Set(prepares.keys).union(decisions.keys) {
            guard let link = rmLinks[rm] else {
                preconditionFailure("no link to RM \(rm); branches are validated against cluster.json")
            }
            link.send(prepares[rm] ?? [], decisions[rm] ?? [])
        }
    }

    // MARK: - Calls to peers

    private func callHeartbeat(_ heartbeat: Heartbeat, to peer: String) {
        guard let address = config.node(named: peer)?.address, heartbeating.insert(peer).inserted else { return }
        let request = Dtc_V1_HeartbeatRequest(heartbeat, from: name)
        var options = CallOptions.defaults
        options.timeout = .milliseconds(max(config.timing.heartbeatMs * 2, 100))
        options.waitForReady = false
        let connections = connections
        Task {
            let response = try? await connections.replica(address).heartbeat(request, options: options)
            self.heartbeatAnswered(response, by: peer)
        }
    }

    private func heartbeatAnswered(_ response: Dtc_V1_HeartbeatResponse?, by peer: String) {
        heartbeating.remove(peer)
        if let response { step(.peer(.heartbeat(response.heartbeat), from: peer)) }
    }

    /// A FENCE is a call whose response is the member's answer; a lost or failed call is no
    /// answer (the machine's fence deadline passes).
    private func callFence(_ request: FenceRequest, to member: String) {
        guard let address = config.node(named: member)?.address else { return }
        let wire = Dtc_V1_FenceRequest(request, from: name)
        var options = CallOptions.defaults
        options.timeout = .milliseconds(max(300, config.timing.suspicionTimeoutMs))
        options.waitForReady = false
        options.allowPeerSizedMessages()
        let connections = connections
        let logger = logger
        Task {
            do {
                let answer = try await connections.replica(address).fence(wire, options: options).answer()
                await self.step(.peer(.fenceAnswer(answer), from: member))
            } catch {
                logger.info("fence #\(request.attempt) to \(member) got no answer: \(shortDescription(of: error))")
            }
        }
    }

    // MARK: - Logs and crash points

    private func observe(_ observation: NodeObservation) {
        switch observation {
        case .issued, .ackClaims, .claimsRestart:
            break
        case .released(_, .commit, let what) where what.hasPrefix("a decision"):
            CrashPoints.shared.reached(.afterCommitQuorum)
        case .released:
            break
        case .steppedDown(let partition, let reason, let left):
            logger.info("stepped down from partition \(partition) (\(reason)); \(left) in-flight txns left to the new leader")
        case .tookOver(let partitions, let inDoubt, let commits, let ms, let from):
            logger.info("took over \(partitions.count) partitions in \(ms) ms (from \(from)): \(inDoubt) txns in doubt, \(commits) commits to finish, the rest aborted")
        case .takeoverLost(let partition, let epoch, let promisers, let group):
            logger.info("takeover of partition \(partition) at epoch \(epoch) failed: promises from \(promisers.joined(separator: ", ")) of \(group.joined(separator: ", "))")
        case .inDoubtFinished(let ms):
            logger.info("every txn found in doubt by takeovers is finished (or handed on), \(ms) ms after the first of them began")
        case .newSession(let follower, let reason) where reason != "first append":
            logger.info("new replication session to \(follower) with a catch-up: \(reason)")
        case .newSession:
            break
        case .decisionRefused(let rm, let txnID, let reason):
            logger.warning("\(rm) refused the decision for \(txnID): \(reason)")
        case .stalled(let ms):
            logger.warning("no tick for \(ms) ms (paused?): giving peers a fresh suspicion timeout")
        }
    }

    // MARK: - Status

    func status() -> Dtc_V1_StatusResponse {
        let coordinator = machine.coordinator
        var response = Dtc_V1_StatusResponse()
        response.node = name
        response.partitions = coordinator.epochs.keys.sorted().map { partition in
            .with {
                $0.partition = partition
                $0.epochCounter = coordinator.epochs[partition]!.counter
                $0.epochNode = coordinator.epochs[partition]!.node
                $0.inFlight = UInt64(coordinator.inFlightCount(partition: partition))
            }
        }
        response.inFlight = UInt64(coordinator.inFlightCount)
        response.committed = coordinator.counters.committed
        response.aborted = coordinator.counters.aborted
        response.recovered = coordinator.counters.recovered
        response.retries = coordinator.counters.retries
        response.logRecords = UInt64((try? store.rows.rowCount()) ?? 0)
        response.logSyncs = store.rows.syncCount
        response.messagesSent = MessageCounter.shared.messagesSent
        response.uptimeMs = clock.elapsedMillis()
        response.trimmed = machine.counters.trimmed
        response.ready = machine.membership.isReady
        response.takeovers = machine.counters.takeovers
        let now = clock.now()
        let membership = machine.membership
        response.peers = membership.peers.map { peer in
            .with {
                $0.node = peer
                $0.alive = membership.isAlive(peer)
                $0.lastHeardMsAgo = membership.lastHeard[peer].map { now - min(now, $0) } ?? UInt64.max
            }
        }
        return response
    }

    nonisolated func redirect(to leader: String, partition: UInt32) -> Dtc_V1_Redirect {
        .with {
            $0.node = leader
            $0.address = config.node(named: leader)?.address ?? ""
            $0.partition = partition
        }
    }
}

extension PartitionRecord {
    var isCommit: Bool { record.isCommitDecision }
}

extension LogRecord {
    var isCommitDecision: Bool {
        if case .decision(_, .commit, _, _) = self { return true }
        return false
    }
}

extension PeerMessage {
    var isHeartbeatReply: Bool {
        if case .heartbeat(let heartbeat) = self { return heartbeat.isReply }
        return false
    }
}
