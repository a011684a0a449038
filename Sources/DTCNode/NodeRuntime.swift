import DTCClient
import DTCCore
import DTCWire
import Foundation
import GRPCCore
import Logging

/// The node's shell around the pure `Coordinator`. It feeds events in, writes the records the
/// core asks for to its own log and to the partition's other members, and releases messages
/// and replies only once a quorum of the partition's replica group holds those records
/// durably. It also keeps the failure detector, takes partitions over from suspected leaders
/// and steps down when a higher epoch appears.
actor NodeRuntime: RMReplyHandler, PeerReplyHandler {
    let name: String
    let config: ClusterConfig
    private let nodeID: UInt32
    private var coordinator: Coordinator
    private let store: NodeStore
    private let rmLinks: [String: RMLink]
    private let connections: Connections
    private var peerLinks: [String: PeerLink] = [:]
    private let clock: ProcessClock
    private let logger: Logger
    let map: PartitionMap
    /// The partitions whose replica group includes this node.
    private let memberOf: [UInt32]

    /// Clients waiting for a txn's outcome (Submit, Resolve); nil tells them this node no
    /// longer leads the partition.
    private var waiters: [TxnID: [CheckedContinuation<TxnStatus?, Never>]] = [:]
    private var replication: [UInt32: ReplicationLeader<Release>] = [:]
    /// Per led partition: tickets that carry a COMMIT not yet on a quorum (for the crash points).
    private var commitTickets: [UInt32: [UInt64]] = [:]
    private var membership: Membership
    private var promises: PartitionPromises
    private var fencing: Set<UInt32> = []
    private var retryTakeoverAt: [UInt32: UInt64] = [:]
    private var lastTickAt: UInt64 = 0
    private var takenFrom: [UInt32: String] = [:]
    /// Txns a takeover found in doubt and has not finished yet, and when that takeover began.
    private var inDoubt: Set<TxnID> = []
    private var inDoubtSince: UInt64 = 0
    private var trims = TrimSchedule()
    /// Per follower: when it last acknowledged anything (or its stream last opened).
    private var lastAckAt: [String: UInt64] = [:]
    private var trimmed: UInt64 = 0
    private var takeovers: UInt64 = 0

    enum Release {
        case messages([Envelope])
        case replies([ClientReply])
        case waiter(CheckedContinuation<Void, Never>)
    }

    init(
        name: String, config: ClusterConfig, coordinator: Coordinator, store: NodeStore, rmLinks: [String: RMLink],
        connections: Connections, clock: ProcessClock, logger: Logger, promised: [UInt32: Epoch]
    ) {
        self.connections = connections
        self.name = name
        self.config = config
        self.nodeID = coordinator.nodeIndex + 1
        self.coordinator = coordinator
        self.store = store
        self.rmLinks = rmLinks
        self.clock = clock
        self.logger = logger
        let map = config.partitionMap
        self.map = map
        self.memberOf = (0..<map.partitionCount).filter { map.replicaGroup(of: $0).contains(name) }
        self.promises = PartitionPromises(promised)
        self.membership = Membership(
            me: name, peers: config.nodes.map(\.name).filter { $0 != name }, replicationFactor: config.replicationFactor,
            suspicionTimeout: UInt64(config.timing.suspicionTimeoutMs), startedAt: clock.now())
    }

    func attach(_ links: [String: PeerLink]) {
        peerLinks = links
    }

    // MARK: - Client requests

    enum Answer: Sendable {
        case status(TxnStatus, partition: UInt32)
        case redirect(Dtc_V1_Redirect)
        case unavailable(String)
        case overloaded(Int)
        /// The txn ID is known with other branches.
        case idTaken
    }

    func submit(_ txnID: TxnID, branches: [Branch]) async -> Answer {
        let partition = map.partition(of: txnID)
        if let refusal = refusal(for: partition) { return refusal }
        switch coordinator.submit(txnID, branches: branches, partition: partition, now: clock.now()) {
        case .overloaded(let inFlight):
            return .overloaded(inFlight)
        case .idTaken:
            return .idTaken
        case .accepted(let output):
            return await outcome(of: txnID, partition: partition, after: output)
        }
    }

    /// Termination protocol: the outcome for an RM that holds `txnID` prepared. PREPARING means
    /// "still undecided, ask again".
    func resolve(_ txnID: TxnID, partition: UInt32) async -> Answer {
        if let refusal = refusal(for: partition) { return refusal }
        guard let output = coordinator.resolve(txnID, partition: partition) else {
            return .status(.preparing, partition: partition)
        }
        return await outcome(of: txnID, partition: partition, after: output)
    }

    private func outcome(of txnID: TxnID, partition: UInt32, after output: CoordinatorOutput) async -> Answer {
        let status = await withCheckedContinuation { continuation in
            waiters[txnID, default: []].append(continuation)
            apply(output)
        }
        guard let status else { return .unavailable("partition \(partition) is no longer led by \(name); retry") }
        return .status(status, partition: partition)
    }

    enum TxnAnswer: Sendable {
        case snapshot(TxnSnapshot)
        case refused(Answer)
        case notFound
    }

    /// A txn's state, answered only once everything appended so far is durable on a quorum,
    /// so a decision is never reported before it is made.
    func txn(_ txnID: TxnID) async -> TxnAnswer {
        let partition = map.partition(of: txnID)
        if let refusal = refusal(for: partition) { return .refused(refusal) }
        guard let snapshot = coordinator.snapshot(of: txnID) else { return .notFound }
        await withCheckedContinuation { continuation in
            hold(.waiter(continuation), partition: partition)
        }
        return .snapshot(snapshot)
    }

    /// Why this node cannot serve `partition` now: another leads it, a takeover is pending,
    /// or the partition has lost its quorum. Nil if it can.
    private func refusal(for partition: UInt32) -> Answer? {
        let members = map.replicaGroup(of: partition)
        let live = members.filter { $0 == name || membership.isAlive($0) }
        if members.contains(name), live.count < members.count / 2 + 1 {
            return .unavailable("partition \(partition) has no quorum: live \(live.joined(separator: ", ")) of \(members.joined(separator: ", "))")
        }
        guard coordinator.leads(partition) else {
            if let leader = membership.leader(of: partition), leader.node != name, membership.isAlive(leader.node) {
                return .redirect(redirect(to: leader.node, partition: partition))
            }
            if !members.contains(name) { return .redirect(redirect(to: members[0], partition: partition)) }
            return .unavailable("partition \(partition) has no leader yet (members \(members.joined(separator: ", ")); takeover pending)")
        }
        return nil
    }

    func status() -> Dtc_V1_StatusResponse {
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
        response.logRecords = UInt64((try? store.rows.rowCount()) ?? 0)
        response.logSyncs = store.rows.syncCount
        response.uptimeMs = clock.elapsedMillis()
        response.trimmed = trimmed
        response.ready = membership.isReady
        response.takeovers = takeovers
        let now = clock.now()
        response.peers = membership.peers.map { peer in
            .with {
                $0.node = peer
                $0.alive = membership.isAlive(peer)
                $0.lastHeardMsAgo = membership.lastHeard[peer].map { now - min(now, $0) } ?? UInt64.max
            }
        }
        return response
    }

    // MARK: - Events from RMs and time

    func votesReceived(_ votes: [(TxnID, Vote)], from rm: String) {
        let now = clock.now()
        var output = CoordinatorOutput()
        for (txnID, vote) in votes {
            output.merge(coordinator.voteReceived(vote, txn: txnID, from: rm, now: now))
        }
        if output.recordsToAppend.contains(where: \.isCommit) { CrashPoints.shared.reached(.afterVotes) }
        apply(output)
    }

    /// A refused decision (a stale epoch) counts as acknowledged: the RM has a decision from a
    /// newer leader, which finishes the txn.
    func acksReceived(_ acks: [(TxnID, accepted: Bool, reason: String)], from rm: String) {
        var output = CoordinatorOutput()
        for (txnID, accepted, reason) in acks {
            if !accepted { logger.warning("\(rm) refused the decision for \(txnID): \(reason)") }
            output.merge(coordinator.ackReceived(txn: txnID, from: rm))
        }
        apply(output)
    }

    func tick() {
        let now = clock.now()
        // A node that did not run for a while (paused, starved) has heard nothing, through no
        // fault of its peers: it must not suspect them, and take their partitions, for that.
        if lastTickAt > 0, now - lastTickAt > UInt64(config.timing.suspicionTimeoutMs / 2) {
            logger.warning("no tick for \(now - lastTickAt) ms (paused?): giving peers a fresh suspicion timeout")
            membership.assumeAlive(at: now)
        }
        lastTickAt = now
        apply(coordinator.tick(now: now))
        membership.tick(now: now)
        trimDue(now: now)
        restartSilentStreams(now: now)
        guard membership.isReady else { return }
        let partitions = memberOf.filter { shouldTakeOver($0, now: now) }
        guard !partitions.isEmpty else { return }
        fencing.formUnion(partitions)
        Task { await self.takeOver(partitions) }
    }

    // MARK: - Persist and replicate before send

    /// Appends each partition's records locally and to its other members, sends what depends on
    /// nothing unsynced, and holds the rest until a quorum holds every record appended so far.
    private func apply(_ output: CoordinatorOutput) {
        if !output.recordsToAppend.isEmpty { append(output.recordsToAppend) }
        send(output.messagesNow)
        var messages: [UInt32: [Envelope]] = [:]
        for envelope in output.messagesAfterAppend { messages[envelope.partition, default: []].append(envelope) }
        for (partition, envelopes) in messages { hold(.messages(envelopes), partition: partition) }
        var replies: [UInt32: [ClientReply]] = [:]
        for reply in output.replies { replies[map.partition(of: reply.txnID), default: []].append(reply) }
        for (partition, partitionReplies) in replies { hold(.replies(partitionReplies), partition: partition) }
    }

    /// Gives each partition's records a ticket, sends them to the partition's other members,
    /// and writes them all to the local log in one group-commit entry.
    private func append(_ records: [PartitionRecord]) {
        noteFinished(records)
        var byPartition: [UInt32: [PartitionRecord]] = [:]
        for entry in records { byPartition[entry.partition, default: []].append(entry) }
        var tickets: [(partition: UInt32, ticket: UInt64)] = []
        var heldForCrash: [(PeerLink, Dtc_V1_Append)] = []
        for (partition, entries) in byPartition.sorted(by: { $0.key < $1.key }) {
            guard var replica = replication[partition], let epoch = coordinator.epochs[partition] else {
                preconditionFailure("\(name) appends to partition \(partition), which it does not lead")
            }
            let ticket = replica.issue()
            if entries.contains(where: \.isCommit) { commitTickets[partition, default: []].append(ticket) }
            for case .end(let txnID) in entries.map(\.record) {
                trims.ended(txnID, partition: partition, ticket: ticket, due: clock.now() + UInt64(config.timing.logRetentionMs))
            }
            replication[partition] = replica
            tickets.append((partition, ticket))
            let append = Dtc_V1_Append.with {
                $0.partition = partition
                $0.epochCounter = epoch.counter
                $0.epochNode = epoch.node
                $0.ticket = ticket
                $0.records = entries.map { Data($0.record.encoded()) }
            }
            // For the crash point "after-commit-local" the followers get a COMMIT only once it
            // is durable here, so that the crash surely falls between local durability and quorum.
            let holdForCrash = CrashPoints.shared.isArmed(.afterCommitLocal) && entries.contains(where: \.isCommit)
            for link in replica.members.filter({ $0 != name }).compactMap({ peerLinks[$0] }) {
                if holdForCrash { heldForCrash.append((link, append)) } else { link.send([append]) }
            }
        }
        let durableTickets = tickets
        let held = heldForCrash
        store.append(records) { result in
            if case .failure(let error) = result { fatalError("dtc-node: log append failed, stopping to recover: \(error)") }
            if !held.isEmpty {
                CrashPoints.shared.reached(.afterCommitLocal)
                for (link, append) in held { link.send([append]) }
            }
            Task { await self.acknowledgedLocally(durableTickets) }
        }
    }

    private func acknowledgedLocally(_ tickets: [(partition: UInt32, ticket: UInt64)]) {
        for (partition, ticket) in tickets { acknowledged(partition: partition, ticket: ticket, by: name) }
    }

    /// Logs when the last txn that a takeover found in doubt has been acknowledged by every RM.
    private func noteFinished(_ entries: [PartitionRecord]) {
        guard !inDoubt.isEmpty else { return }
        for entry in entries {
            if case .end(let txnID) = entry.record { inDoubt.remove(txnID) }
        }
        if inDoubt.isEmpty {
            logger.info("every txn found in doubt by the takeover is finished at all its RMs, \(clock.now() - inDoubtSince) ms after the takeover began")
        }
    }

    private func hold(_ release: Release, partition: UInt32) {
        guard var replica = replication[partition] else {
            drop(release)
            return
        }
        let now = replica.hold(release)
        replication[partition] = replica
        if let now { perform(now) }
    }

    private func acknowledged(partition: UInt32, ticket: UInt64, by member: String) {
        guard var replica = replication[partition] else { return }
        let released = replica.acknowledged(ticket, by: member)
        let durable = replica.quorumDurable
        replication[partition] = replica
        if let tickets = commitTickets[partition], tickets.contains(where: { $0 <= durable }) {
            commitTickets[partition]!.removeAll { $0 <= durable }
            CrashPoints.shared.reached(.afterCommitQuorum)
        }
        for release in released { perform(release) }
    }

    private func perform(_ release: Release) {
        switch release {
        case .messages(let envelopes): send(envelopes)
        case .replies(let replies):
            for reply in replies {
                for waiter in waiters.removeValue(forKey: reply.txnID) ?? [] { waiter.resume(returning: reply.status) }
            }
        case .waiter(let continuation): continuation.resume()
        }
    }

    /// What was held for a partition this node no longer leads is never sent.
    private func drop(_ release: Release) {
        if case .waiter(let continuation) = release { continuation.resume() }
    }

    private func send(_ envelopes: [Envelope]) {
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

    // MARK: - Followers

    func appendsAcked(_ acks: [Dtc_V1_AppendAck], from peer: String) {
        lastAckAt[peer] = clock.now()
        for ack in acks {
            if ack.accepted {
                acknowledged(partition: ack.partition, ticket: ack.ticket, by: peer)
                continue
            }
            let theirs = Epoch(counter: ack.promisedCounter, node: ack.promisedNode)
            if let mine = coordinator.epochs[ack.partition], theirs > mine {
                logger.warning("\(peer) promised epoch \(theirs) for partition \(ack.partition), above ours (\(mine)): stepping down")
                stepDown(ack.partition)
            }
        }
    }

    /// A follower that is behind and has acknowledged nothing for a suspicion timeout gets a new
    /// stream (and so a catch-up): an open stream that brings no acks back would otherwise
    /// hold every decision of the partitions it shares with this node.
    private func restartSilentStreams(now: UInt64) {
        for (peer, link) in peerLinks.sorted(by: { $0.key < $1.key }) {
            let isBehind = replication.values.contains { $0.members.contains(peer) && $0.isBehind(peer) }
            guard isBehind else {
                lastAckAt[peer] = now
                continue
            }
            let silentFor = now - min(now, lastAckAt[peer] ?? now)
            guard silentFor > UInt64(config.timing.suspicionTimeoutMs), membership.isAlive(peer) else { continue }
            logger.warning("\(peer) is behind and acknowledged nothing for \(silentFor) ms: restarting the stream to it")
            lastAckAt[peer] = now
            link.restart()
        }
    }

    /// A (re)connected follower gets every in-flight txn of the partitions it shares with us
    /// again; its acks count from that catch-up on.
    func peerConnected(_ peer: String) {
        lastAckAt[peer] = clock.now()
        peerLinks[peer]?.discardQueued()
        catchUp(peer, partitions: replication.keys.sorted())
    }

    private func catchUp(_ peer: String, partitions: [UInt32]) {
        guard let link = peerLinks[peer] else { return }
        var appends: [Dtc_V1_Append] = []
        for partition in partitions {
            guard let replica = replication[partition], replica.members.contains(peer) else { continue }
            replication[partition]!.catchUp(peer)
            let epoch = coordinator.epochs[partition]!
            appends.append(.with {
                $0.partition = partition
                $0.epochCounter = epoch.counter
                $0.epochNode = epoch.node
                $0.ticket = replica.issued
                $0.records = (coordinator.activeRecords(partition: partition)
                    + coordinator.endedRecords(trims.ended(partition: partition), partition: partition)).map { Data($0.encoded()) }
                $0.catchUp = true
            })
        }
        link.send(appends)
    }

    enum AppendsVerdict { case acceptedAll, refusedSome }

    /// A leader's appends, as a follower: accepted when their epoch is at least the one promised
    /// for the partition, acknowledged once durable.
    func appendsReceived(_ appends: [Dtc_V1_Append], from leader: String, replyTo acks: BatchQueue<Dtc_V1_AppendAck>) -> AppendsVerdict {
        var entries: [PartitionRecord] = []
        var newPromises: [UInt32: Epoch] = [:]
        var accepted: [Dtc_V1_AppendAck] = []
        var refused: [Dtc_V1_AppendAck] = []
        for append in appends {
            let epoch = Epoch(counter: append.epochCounter, node: append.epochNode)
            let partition = append.partition
            switch promises.append(partition: partition, epoch: epoch, led: coordinator.epochs[partition], isReady: membership.isReady) {
            case .refuse(let promised):
                refused.append(refusal(append, promised: promised))
                continue
            case .accept(let promise, let mustStepDown):
                if mustStepDown { stepDown(partition) }
                if let promise { newPromises[partition] = promise }
            }
            membership.learn(partition, leader: leader, epoch: epoch)
            var records = append.records.compactMap { try? LogRecord(decoding: [UInt8]($0)) }.map { PartitionRecord(partition: partition, record: $0) }
            if append.catchUp { records += staleRows(partition, listed: records) }
            trimmed += UInt64(records.filter(\.isTrim).count)
            entries += records
            accepted.append(.with { $0.partition = partition; $0.ticket = append.ticket; $0.accepted = true })
        }
        acks.append(contentsOf: refused)
        guard !accepted.isEmpty else { return refused.isEmpty ? .acceptedAll : .refusedSome }
        // One group-commit entry for the whole message; the acks go back once it is durable.
        let durableAcks = accepted
        store.append(entries, promises: newPromises) { result in
            if case .failure(let error) = result { fatalError("dtc-node: replicated append failed, stopping to recover: \(error)") }
            acks.append(contentsOf: durableAcks)
        }
        return refused.isEmpty ? .acceptedAll : .refusedSome
    }

    /// A catch-up lists every txn of the partition its leader knows and has not trimmed. A row
    /// here that it does not list belongs to a txn the leader never heard of (so no decision
    /// of it was made: presumed abort) or one trimmed since every member held its END: either
    /// way the row goes, lest it outlive the others' and mislead a later takeover.
    private func staleRows(_ partition: UInt32, listed: [PartitionRecord]) -> [PartitionRecord] {
        let known = Set(listed.map(\.record.txnID))
        let stale = ((try? store.rows(of: partition)) ?? []).filter { !known.contains($0.txnID) }
        return stale.map { PartitionRecord(partition: partition, record: .trim(txnID: $0.txnID)) }
    }

    private func refusal(_ append: Dtc_V1_Append, promised: Epoch) -> Dtc_V1_AppendAck {
        .with {
            $0.partition = append.partition
            $0.ticket = append.ticket
            $0.accepted = false
            $0.promisedCounter = promised.counter
            $0.promisedNode = promised.node
        }
    }

    // MARK: - Failure detection

    func heartbeatReceived(_ request: Dtc_V1_HeartbeatRequest) -> Dtc_V1_HeartbeatResponse {
        heard(request.node, leads: request.leads, promised: [], ready: true)
        return .with {
            $0.node = name
            $0.leads = leadsList()
            $0.promised = promises.promised.sorted { $0.key < $1.key }.map { partition, epoch in
                .with { $0.partition = partition; $0.epochCounter = epoch.counter; $0.epochNode = epoch.node }
            }
            $0.ready = membership.isReady
        }
    }

    func heartbeatAnswered(_ response: Dtc_V1_HeartbeatResponse) {
        heard(response.node, leads: response.leads, promised: response.promised, ready: response.ready)
    }

    func heartbeatRequest() -> Dtc_V1_HeartbeatRequest {
        .with {
            $0.node = name
            $0.leads = leadsList()
        }
    }

    private func leadsList() -> [Dtc_V1_PartitionEpoch] {
        coordinator.epochs.sorted { $0.key < $1.key }.map { partition, epoch in
            .with { $0.partition = partition; $0.epochCounter = epoch.counter; $0.epochNode = epoch.node; $0.leader = name }
        }
    }

    /// A peer is alive and says what it leads: adopt higher epochs, and step down from a
    /// partition that a higher epoch now leads.
    private func heard(_ peer: String, leads: [Dtc_V1_PartitionEpoch], promised peerPromises: [Dtc_V1_PartitionEpoch], ready: Bool) {
        membership.heard(peer, at: clock.now(), isReady: ready)
        let led = Dictionary(leads.map { ($0.partition, Epoch(counter: $0.epochCounter, node: $0.epochNode)) }, uniquingKeysWith: max)
        membership.peerLeads(peer, led)
        for lead in leads {
            let epoch = Epoch(counter: lead.epochCounter, node: lead.epochNode)
            if let mine = coordinator.epochs[lead.partition], epoch > mine {
                logger.warning("\(peer) leads partition \(lead.partition) at epoch \(epoch), above ours (\(mine)): stepping down")
                stepDown(lead.partition)
            }
        }
        // Adopting a peer's promise only makes this node refuse more: safe, and it is how a
        // node that lost its data learns the epochs it must not go below.
        for promise in peerPromises {
            let epoch = Epoch(counter: promise.epochCounter, node: promise.epochNode)
            membership.observe(promise.partition, epoch: epoch)
            promises.adopt(promise.partition, epoch)
        }
    }

    // MARK: - Takeover

    private func shouldTakeOver(_ partition: UInt32, now: UInt64) -> Bool {
        guard !coordinator.leads(partition), !fencing.contains(partition), now >= (retryTakeoverAt[partition] ?? 0) else { return false }
        return membership.shouldTakeOver(partition, members: map.replicaGroup(of: partition))
    }

    /// Fences the partitions at new epochs: a quorum of each one's members promise it
    /// (refusing the old leader from then on) and return their rows; the merged rows go to the
    /// core, which re-appends every decision at the new epoch and aborts every undecided txn.
    /// One Fence RPC per member carries all the partitions it shares with this node.
    private func takeOver(_ partitions: [UInt32]) async {
        defer { fencing.subtract(partitions) }
        let started = clock.now()
        var seen: [UInt32: Epoch] = [:]
        for partition in partitions {
            seen[partition] = [promises[partition], membership.leader(of: partition)?.epoch, membership.observed(partition)].compactMap { $0 }.max() ?? .zero
        }
        var takeover = Takeover(
            candidate: name, nodeID: nodeID, seen: seen,
            groups: Dictionary(uniqueKeysWithValues: partitions.map { ($0, map.replicaGroup(of: $0)) }))
        for (partition, epoch) in takeover.epochs { promises.adopt(partition, epoch) }
        await persistPromises(takeover.epochs)
        for partition in partitions {
            takeover.promisedLocally(partition, rows: (try? store.rows(of: partition)) ?? [])
        }
        for (member, answers) in await fence(takeover.epochs) {
            for answer in answers {
                if answer.promised {
                    takeover.promised(answer.partition, by: member, rows: answer.rows.compactMap { try? TxnRow(decoding: [UInt8]($0)) })
                } else {
                    let theirs = Epoch(counter: answer.promisedCounter, node: answer.promisedNode)
                    takeover.refused(answer.partition, promised: theirs)
                    membership.observe(answer.partition, epoch: theirs)
                }
            }
        }
        for partition in takeover.lost() {
            retryTakeoverAt[partition] = clock.now() + UInt64(config.timing.heartbeatMs * 3)
            logger.info("takeover of partition \(partition) at epoch \(takeover.epochs[partition]!) failed: promises from \(takeover.promisers(of: partition).joined(separator: ", ")) of \(map.replicaGroup(of: partition).joined(separator: ", "))")
        }
        var installed: [UInt32] = []
        var inDoubt: [TxnRow] = []
        for won in takeover.won() {
            // Meanwhile this node may have promised a higher epoch to another candidate.
            guard promises[won.partition] == won.epoch, !coordinator.leads(won.partition) else {
                retryTakeoverAt[won.partition] = clock.now() + UInt64(config.timing.heartbeatMs * 3)
                continue
            }
            inDoubt += install(won.partition, epoch: won.epoch, rows: won.rows)
            installed.append(won.partition)
        }
        guard !installed.isEmpty else { return }
        let commits = inDoubt.filter { $0.decision?.outcome == .commit }.count
        logger.info("took over \(installed.count) partitions in \(clock.now() - started) ms (\(previousLeaders(installed))): \(inDoubt.count) txns in doubt, \(commits) commits to finish, the rest aborted")
        if !inDoubt.isEmpty {
            inDoubtSince = started
            for row in inDoubt { self.inDoubt.insert(row.txnID) }
        }
    }

    /// Adopts one partition; returns its txns that were in doubt.
    private func install(_ partition: UInt32, epoch: Epoch, rows: [TxnRow]) -> [TxnRow] {
        let members = map.replicaGroup(of: partition)
        replication[partition] = ReplicationLeader(members: members, epoch: epoch)
        let previous = membership.leader(of: partition)
        membership.learn(partition, leader: name, epoch: epoch)
        if let previous, previous.node != name { takenFrom[partition] = previous.node }
        let output = coordinator.takeOver(partition: partition, epoch: epoch, rows: rows, now: clock.now())
        takeovers += 1
        apply(output)
        return rows.filter { !$0.isEnded && !$0.branches.isEmpty }
    }

    /// "from n1 (last heard 1040 ms ago)" for the log of a takeover.
    private func previousLeaders(_ partitions: [UInt32]) -> String {
        let now = clock.now()
        let nodes = Set(partitions.compactMap { takenFrom[$0] })
        guard !nodes.isEmpty else { return "no previous leader" }
        return "from " + nodes.sorted().map { node in
            "\(node) (last heard \(membership.lastHeard[node].map { "\(now - min(now, $0)) ms ago" } ?? "never"))"
        }.joined(separator: ", ")
    }

    private func persistPromises(_ epochs: [UInt32: Epoch]) async {
        do {
            try await store.promise(epochs)
        } catch {
            fatalError("dtc-node: persisting promises failed: \(error)")
        }
    }

    private nonisolated func fence(_ epochs: [UInt32: Epoch]) async -> [(String, [Dtc_V1_PartitionPromise])] {
        var byMember: [String: [Dtc_V1_PartitionEpoch]] = [:]
        for (partition, epoch) in epochs {
            for member in map.replicaGroup(of: partition) where member != name {
                byMember[member, default: []].append(.with {
                    $0.partition = partition
                    $0.epochCounter = epoch.counter
                    $0.epochNode = epoch.node
                })
            }
        }
        var callOptions = CallOptions.defaults
        callOptions.timeout = .milliseconds(max(300, config.timing.suspicionTimeoutMs))
        callOptions.waitForReady = false
        let options = callOptions
        let candidate = name
        return await withTaskGroup(of: (String, [Dtc_V1_PartitionPromise]).self) { group in
            for (member, partitions) in byMember {
                guard let address = config.node(named: member)?.address else { continue }
                let request = Dtc_V1_FenceRequest.with { $0.candidate = candidate; $0.partitions = partitions }
                group.addTask {
                    (member, (try? await self.connections.replica(address).fence(request, options: options).promises) ?? [])
                }
            }
            var responses: [(String, [Dtc_V1_PartitionPromise])] = []
            for await response in group { responses.append(response) }
            return responses
        }
    }

    /// A candidate asks this node to promise new epochs: each above every epoch promised or
    /// led here is promised (durably, before the answer) and answered with this node's rows.
    func fenceRequested(_ request: Dtc_V1_FenceRequest) async -> Dtc_V1_FenceResponse {
        var granted: [UInt32: Epoch] = [:]
        var refused: [Dtc_V1_PartitionPromise] = []
        for wanted in request.partitions {
            let partition = wanted.partition
            let epoch = Epoch(counter: wanted.epochCounter, node: wanted.epochNode)
            if case .failure(let refusal) = promises.fence(partition: partition, epoch: epoch, led: coordinator.epochs[partition], isReady: membership.isReady) {
                refused.append(.with {
                    $0.partition = partition
                    $0.promised = false
                    $0.promisedCounter = refusal.promised.counter
                    $0.promisedNode = refusal.promised.node
                })
                continue
            }
            granted[partition] = epoch
            backOffTakeover(partition)
            membership.observe(partition, epoch: epoch)
            if coordinator.leads(partition) {
                logger.warning("\(request.candidate) fences partition \(partition) at epoch \(epoch): stepping down")
                stepDown(partition)
            }
        }
        if !granted.isEmpty { await persistPromises(granted) }
        let promises = granted.sorted { $0.key < $1.key }.map { partition, epoch in
            Dtc_V1_PartitionPromise.with {
                $0.partition = partition
                $0.promised = true
                $0.promisedCounter = epoch.counter
                $0.promisedNode = epoch.node
                $0.rows = ((try? store.rows(of: partition)) ?? []).map { Data($0.encoded()) }
            }
        }
        return .with { $0.promises = promises + refused }
    }

    /// Stops leading: held messages and replies of the partition are never sent, and clients
    /// waiting on its txns are told to retry (the new leader answers them).
    private func stepDown(_ partition: UInt32) {
        let dropped = coordinator.stepDown(partition: partition)
        // A higher epoch leads now, even if this node has not heard from its leader yet: leave
        // the partition alone for a suspicion timeout, in which that leader's heartbeats arrive.
        membership.forget(partition, leader: name)
        backOffTakeover(partition)
        commitTickets[partition] = nil
        trims.forget(partition: partition)
        for release in replication.removeValue(forKey: partition)?.pending ?? [] { drop(release) }
        for txnID in dropped {
            for waiter in waiters.removeValue(forKey: txnID) ?? [] { waiter.resume(returning: nil) }
        }
        logger.info("stepped down from partition \(partition); \(dropped.count) in-flight txns left to the new leader")
    }

    private func backOffTakeover(_ partition: UInt32) {
        retryTakeoverAt[partition] = max(retryTakeoverAt[partition] ?? 0, clock.now() + UInt64(config.timing.suspicionTimeoutMs))
    }

    // MARK: - Trimming

    /// ENDed rows leave the log of every member together, once every member holds the END
    /// and the retention period has passed (see `LogRecord.trim`).
    private func trimDue(now: UInt64) {
        var output = CoordinatorOutput()
        for (partition, replica) in replication.sorted(by: { $0.key < $1.key }) {
            let due = trims.due(partition: partition, allDurable: replica.allDurable, now: now)
            output.recordsToAppend += due.map { PartitionRecord(partition: partition, record: .trim(txnID: $0)) }
        }
        guard !output.recordsToAppend.isEmpty else { return }
        trimmed += UInt64(output.recordsToAppend.count)
        apply(output)
    }

    private func redirect(to leader: String, partition: UInt32) -> Dtc_V1_Redirect {
        .with {
            $0.node = leader
            $0.address = config.node(named: leader)?.address ?? ""
            $0.partition = partition
        }
    }
}

extension PartitionRecord {
    var isCommit: Bool {
        if case .decision(_, .commit, _, _) = record { return true }
        return false
    }

    var isTrim: Bool {
        if case .trim = record { return true }
        return false
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
