/// One coordinator node, as a pure state machine: events in (`step`), actions out
/// (`NodeActions`), in the manner of etcd-io/raft's `Step`/`Ready`. It owns the node's cores
/// (`Coordinator`, `Membership`, `PartitionPromises`, a `ReplicationLeader` per led partition,
/// `TrimSchedule`, the takeover in progress) and the rules that tie them together:
///
/// - a leader's records go to its own log and to the partition's other members at once; what
///   depends on them (decisions to RMs, outcomes to clients) is held until a quorum holds
///   every record appended before it;
/// - a follower takes a session's messages in order, acks only what is durable, and breaks the
///   session on a gap or a refusal, so no ack claims a record it did not store;
/// - promises are durable before a FENCE or its answer goes out, and a fence answer carries the
///   rows durable once the promise is;
/// - a node takes part (promises, accepts, takes over) only once its membership is ready;
/// - a higher epoch seen anywhere makes the leader step down, and whoever waited on its
///   partition is told to retry.
///
/// dtc-node (gRPC, LMDB, a real clock) and dtc-sim (a simulated network, disk and clock) both
/// drive this type; neither adds protocol of its own. Reads of the durable log come through
/// the `log` function a step is given (a fence answer's rows, a takeover's own rows, the rows
/// a catch-up leaves out); the machine never writes except through `NodeActions.writes`.
public struct NodeMachine: Sendable {
    public let name: String
    /// Every node of the cluster, in config order: a node's 1-based position is the node id in
    /// its epochs and start stamps.
    public let nodes: [String]
    public let map: PartitionMap
    public let timing: NodeTiming
    /// A silent follower's allowance grows to at most this many times `silentFollowerMs`.
    static let silenceAllowedMaxFactor: UInt64 = 8
    /// The pace assumed of a follower writing a catch-up, with room to spare (a release build
    /// writes one of 150,000 records, most of them ENDs it holds already, in about a second).
    static let catchUpRecordsPerMs: UInt64 = 50
    public private(set) var coordinator: Coordinator
    public private(set) var membership: Membership
    public private(set) var promises: PartitionPromises
    public private(set) var counters = Counters()
    /// A deliberate bug, for the simulator's mutant tests only.
    package var mutant: Mutant? {
        didSet { coordinator.mutant = mutant }
    }

    public struct Counters: Sendable, Equatable {
        public var takeovers: UInt64 = 0
        public var trimmed: UInt64 = 0
        public var sessionsOpened: UInt64 = 0
    }

    /// The partitions whose replica group holds this node.
    public let memberOf: [UInt32]
    private let nodeID: NodeID
    /// Distinguishes this run of the node from its earlier ones: sessions it opens number above
    /// theirs, so a follower never takes a late message of a dead leader's session for new.
    private let incarnation: UInt64
    private var now: UInt64
    private var replication: [UInt32: ReplicationLeader<HeldRelease>] = [:]
    private var trims = TrimSchedule()
    private var lastTickAt: UInt64 = 0
    private var nextHeartbeatAt: UInt64
    private var retryTakeoverAt: [UInt32: UInt64] = [:]
    private var takeover: TakeoverAttempt?
    private var takenFrom: [UInt32: String] = [:]
    /// Leader side: per follower, the open session and its next sequence number, and when the
    /// follower last acknowledged anything (or got a catch-up).
    private var sessions: [String: (session: UInt64, next: UInt64)] = [:]
    private var lastAckAt: [String: UInt64] = [:]
    /// Per follower, how long it may stay silent before a new session: `silentFollowerMs`,
    /// doubled (up to `silenceAllowedMax`) after every session that silence opened, and more
    /// after a large catch-up (`catchUpRecordsPerMs`), back to the base once it is no longer
    /// behind. A follower slower than the base (a big catch-up after
    /// a restart) would otherwise get a new session, and lose the one it was working on, for
    /// ever.
    private var silenceAllowed: [String: UInt64] = [:]
    /// Follower side: per leader, the session followed and the sequence expected next (nil once
    /// the session broke: everything after a gap or a refusal is refused until a catch-up).
    private var following: [String: (session: UInt64, next: UInt64?)] = [:]
    private var nextWriteID: UInt64 = 0
    private var afterDurable: [(write: UInt64, then: AfterDurable)] = []
    /// Requesters waiting for a txn's outcome (submit, resolve).
    private var waiting: [TxnID: [Requester]] = [:]
    /// Per RM: PREPAREs sent and not answered; they count as NO if its stream breaks.
    private var unanswered: [String: Set<TxnID>] = [:]
    /// Txns takeovers found in doubt and not ENDed yet, and when the first such takeover began.
    private var inDoubt: Set<TxnID> = []
    private var inDoubtSince: UInt64 = 0
    private var out = NodeActions()

    /// What a leader holds back until a quorum holds every record appended before it.
    struct HeldRelease: Sendable {
        var rmMessages: [Envelope] = []
        var replies: [ClientReply] = []
        var answers: [(to: Requester, answer: NodeAnswer)] = []
    }

    /// What waits for one of the node's writes to be durable.
    enum AfterDurable: Sendable {
        /// The leader's own copy of these appends is durable: it counts as one member's ack.
        case ownTickets([(partition: UInt32, ticket: UInt64)])
        /// A follower's appends are durable: acknowledge them to the leader.
        case acks([AppendAck], to: String)
        /// Promises granted to a candidate are durable: answer with this node's rows.
        case fenceAnswer(attempt: UInt64, granted: [UInt32], refused: [UInt32: Epoch], to: String)
        /// The candidate's own promises are durable: send the FENCEs.
        case sendFences(attempt: UInt64)
    }

    struct TakeoverAttempt: Sendable {
        var takeover: Takeover
        var number: UInt64
        var startedAt: UInt64
        var fencesSent = false
        var awaiting: Set<String> = []
        var deadline: UInt64 = .max
    }

    /// `promised` are the epochs promised in the node's log; `incarnation` must grow with every
    /// start of the node (dtc-node keeps a counter in its log).
    public init(
        name: String, nodes: [String], map: PartitionMap, timing: NodeTiming, limits: Limits, promised: [UInt32: Epoch],
        incarnation: UInt64, now: UInt64
    ) {
        guard let index = nodes.firstIndex(of: name) else { preconditionFailure("\(name) is not among the nodes \(nodes)") }
        self.name = name
        self.nodes = nodes
        self.map = map
        self.timing = timing
        self.nodeID = NodeIndex(UInt32(index)).id
        self.incarnation = incarnation
        self.now = now
        self.nextHeartbeatAt = now
        self.coordinator = Coordinator(node: name, nodeIndex: NodeIndex(UInt32(index)), epochs: [:], limits: limits)
        self.membership = Membership(
            me: name, peers: nodes.filter { $0 != name }, replicationFactor: map.replicationFactor,
            suspicionTimeout: timing.suspicionTimeoutMs, startedAt: now)
        self.promises = PartitionPromises(promised)
        self.memberOf = (0..<map.partitionCount).filter { map.replicaGroup(of: $0).contains(name) }
    }

    public var peers: [String] { membership.peers }

    /// Handles one event at `now` (this node's clock, in ms); `log` reads the node's durable rows
    /// and `txnIDs`, if given, which txns of a partition have one (cheaper than reading them).
    public mutating func step(
        _ event: NodeEvent, now time: UInt64, txnIDs: ((UInt32) -> [TxnID])? = nil, log: (UInt32) -> [TxnRow]
    ) -> NodeActions {
        now = max(now, time)
        out = NodeActions()
        switch event {
        case .tick: tick(log: log)
        case .submit(let txnID, let branches, let requester): submit(txnID, branches, requester)
        case .submits(let submits): for item in submits { submit(item.txnID, item.branches, item.requester) }
        case .resolve(let txnID, let partition, let requester): resolve(txnID, partition: partition, requester)
        case .query(let txnID, let requester): query(txnID, requester)
        case .votes(let votes, let rm): votesReceived(votes, from: rm)
        case .acks(let acks, let rm): acksReceived(acks, from: rm)
        case .rmStreamBroken(let rm, let reason): rmStreamBroken(rm, reason: reason)
        case .peer(let message, let peer):
            if let txnIDs {
                receive(message, from: peer, log: log, txnIDs: txnIDs)
            } else {
                receive(message, from: peer, log: log) { partition in log(partition).map(\.txnID) }
            }
        case .durable(let id): durable(id, log: log)
        }
        defer { out = NodeActions() }
        return out
    }

    // MARK: - Queries for status pages

    public var inFlightCount: Int { coordinator.inFlightCount }

    public func leads(_ partition: UInt32) -> Bool { coordinator.leads(partition) }

    public func snapshot(of txnID: TxnID) -> TxnSnapshot? { coordinator.snapshot(of: txnID) }

    /// Why `partition` cannot be served now, or nil if it can: for status and tests.
    public func unavailability(of partition: UInt32) -> NodeAnswer? { refusal(for: partition) }

    public var takeoverInProgress: String? {
        takeover.map { "#\($0.number) of \($0.takeover.epochs.count) partitions awaiting \($0.awaiting.sorted())" }
    }

    public func retryTakeover(of partition: UInt32) -> UInt64? { retryTakeoverAt[partition] }

    // MARK: - Clients and participants

    private mutating func submit(_ txnID: TxnID, _ branches: [Branch], _ requester: Requester) {
        let partition = map.partition(of: txnID)
        if let refusal = refusal(for: partition) { return answer(requester, refusal) }
        switch coordinator.submit(txnID, branches: branches, partition: partition, now: now) {
        case .overloaded(let inFlight): answer(requester, .overloaded(inFlight: inFlight))
        case .idTaken: answer(requester, .idTaken)
        case .accepted(let output):
            waiting[txnID, default: []].append(requester)
            apply(output)
        }
    }

    /// Termination protocol: the outcome for a participant that holds `txnID` prepared.
    /// PREPARING means "still undecided, ask again".
    private mutating func resolve(_ txnID: TxnID, partition: UInt32, _ requester: Requester) {
        if let refusal = refusal(for: partition) { return answer(requester, refusal) }
        guard let output = coordinator.resolve(txnID, partition: partition) else {
            return answer(requester, .status(.preparing, sender: sender(of: partition)))
        }
        waiting[txnID, default: []].append(requester)
        apply(output)
    }

    /// A txn's state, answered once everything appended so far is on a quorum, so a decision
    /// is never reported before it is made.
    private mutating func query(_ txnID: TxnID, _ requester: Requester) {
        let partition = map.partition(of: txnID)
        if let refusal = refusal(for: partition) { return answer(requester, refusal) }
        guard let snapshot = coordinator.snapshot(of: txnID) else { return answer(requester, .notFound) }
        hold(HeldRelease(answers: [(requester, .snapshot(snapshot))]), partition: partition)
    }

    /// Why this node cannot serve `partition` now: its replica group has no live quorum,
    /// another node leads it, or a takeover is pending. Nil if it can.
    private func refusal(for partition: UInt32) -> NodeAnswer? {
        let members = map.replicaGroup(of: partition)
        let live = members.filter { membership.isAlive($0) }
        if members.contains(name), live.count < members.count / 2 + 1 {
            return .unavailable("partition \(partition) has no quorum: live \(live.joined(separator: ", ")) of \(members.joined(separator: ", "))")
        }
        guard coordinator.leads(partition) else {
            if let leader = membership.leader(of: partition), leader.node != name, membership.isAlive(leader.node) {
                return .redirect(leader: leader.node, partition: partition)
            }
            if !members.contains(name) { return .redirect(leader: members[0], partition: partition) }
            return .unavailable("partition \(partition) has no leader yet (members \(members.joined(separator: ", ")); takeover pending)")
        }
        return nil
    }

    private func sender(of partition: UInt32) -> Sender {
        Sender(partition: partition, epoch: coordinator.epochs[partition] ?? .zero, node: name)
    }

    private mutating func answer(_ requester: Requester, _ answer: NodeAnswer) {
        out.answers.append((requester, answer))
    }

    private mutating func votesReceived(_ votes: [VoteReply], from rm: String) {
        var output = CoordinatorOutput()
        for vote in votes {
            if vote.attempt == coordinator.attempt(of: vote.txnID) { unanswered[rm]?.remove(vote.txnID) }
            output.merge(coordinator.voteReceived(vote.vote, attempt: vote.attempt, txn: vote.txnID, from: rm, now: now))
        }
        apply(output)
    }

    /// A refused decision (a stale epoch) counts as acknowledged: the RM has a decision from a
    /// newer leader, which finishes the txn.
    private mutating func acksReceived(_ acks: [AckReply], from rm: String) {
        var output = CoordinatorOutput()
        for ack in acks {
            if !ack.accepted { out.observations.append(.decisionRefused(rm: rm, ack.txnID, reason: ack.reason)) }
            output.merge(coordinator.ackReceived(txn: ack.txnID, from: rm, rolledBackAttempt: ack.rolledBackAttempt, now: now))
        }
        apply(output)
    }

    private mutating func rmStreamBroken(_ rm: String, reason: String) {
        guard let lost = unanswered.removeValue(forKey: rm), !lost.isEmpty else { return }
        let votes = lost.sorted().map { txnID in
            VoteReply(txnID: txnID, vote: .no(reason: AbortReason(.unavailable, reason)), attempt: coordinator.attempt(of: txnID) ?? 0)
        }
        votesReceived(votes, from: rm)
    }

    // MARK: - Time

    private mutating func tick(log: (UInt32) -> [TxnRow]) {
        // A node that did not run for a while (paused, starved) has heard nothing, through no
        // fault of its peers: it must not suspect them, and take their partitions, for that.
        if lastTickAt > 0, now - lastTickAt > timing.suspicionTimeoutMs / 2 {
            membership.assumeAlive(at: now)
            out.observations.append(.stalled(forMs: now - lastTickAt))
        }
        lastTickAt = now
        apply(coordinator.tick(now: now))
        membership.tick(now: now)
        if now >= nextHeartbeatAt {
            nextHeartbeatAt = now + timing.heartbeatMs
            let heartbeat = Heartbeat(leads: coordinator.epochs, promised: [:], isReady: membership.isReady, isReply: false)
            for peer in peers { out.peerMessages.append((peer, .heartbeat(heartbeat))) }
        }
        catchUpSilentFollowers()
        trimDue()
        pruneUnanswered()
        if let attempt = takeover {
            if now >= attempt.deadline { finishTakeover() }
        } else if membership.isReady {
            startTakeover()
        }
    }

    /// Forgets PREPAREs whose txn no longer waits for that RM's vote (decided without it).
    private mutating func pruneUnanswered() {
        for (rm, txns) in unanswered where txns.count > coordinator.inFlightCount {
            unanswered[rm] = txns.filter { coordinator.isAwaitingVote($0, from: rm) }
        }
    }

    // MARK: - Persist and replicate before send

    /// Appends the records locally and to each partition's other members; what depends on
    /// them waits until a quorum of the partition's replica group holds them durably.
    private mutating func apply(_ output: CoordinatorOutput) {
        if !output.recordsToAppend.isEmpty { append(output.recordsToAppend) }
        for envelope in output.messagesNow { send(envelope) }
        var held: [UInt32: HeldRelease] = [:]
        for envelope in output.messagesAfterAppend { held[envelope.partition, default: HeldRelease()].rmMessages.append(envelope) }
        for reply in output.replies { held[map.partition(of: reply.txnID), default: HeldRelease()].replies.append(reply) }
        for (partition, release) in held.sorted(by: { $0.key < $1.key }) { hold(release, partition: partition) }
    }

    /// `opening` lists partitions that get an append (and a ticket) even without records.
    private mutating func append(_ records: [PartitionRecord], opening: [UInt32] = []) {
        noteEnded(records)
        var byPartition: [UInt32: [LogRecord]] = [:]
        for partition in opening { byPartition[partition] = [] }
        for entry in records { byPartition[entry.partition, default: []].append(entry.record) }
        var appends: [PartitionAppend] = []
        for (partition, partitionRecords) in byPartition.sorted(by: { $0.key < $1.key }) {
            guard let epoch = coordinator.epochs[partition], replication[partition] != nil else {
                preconditionFailure("\(name) appends to partition \(partition), which it does not lead")
            }
            let ticket = replication[partition]!.issue()
            for case .end(let txnID) in partitionRecords {
                trims.ended(txnID, partition: partition, ticket: ticket, due: now + timing.retentionMs)
            }
            appends.append(PartitionAppend(partition: partition, epoch: epoch, ticket: ticket, records: partitionRecords))
            out.observations.append(.issued(partition: partition, ticket: ticket, records: partitionRecords))
        }
        write(records.map { .record($0) }, then: .ownTickets(appends.map { ($0.partition, $0.ticket) }))
        for follower in peers {
            let theirs = appends.filter { replication[$0.partition]!.members.contains(follower) }
            if !theirs.isEmpty { sendAppends(theirs, to: follower) }
        }
    }

    private mutating func write(_ items: [NodeWrite], then follow: AfterDurable?) {
        // A step's own appends go in one write: they join the step's last write if it holds
        // appends too (durable together is durable no later).
        if case .ownTickets(let tickets)? = follow, out.writes.last?.id == nextWriteID, let last = afterDurable.last, last.write == nextWriteID,
            case .ownTickets(let earlier) = last.then
        {
            out.writes[out.writes.count - 1].items += items
            afterDurable[afterDurable.count - 1].then = .ownTickets(earlier + tickets)
            return
        }
        nextWriteID += 1
        out.writes.append(NodeWriteBatch(id: nextWriteID, items: items))
        if let follow { afterDurable.append((nextWriteID, follow)) }
    }

    private mutating func hold(_ release: HeldRelease, partition: UInt32) {
        guard replication[partition] != nil else { return drop(release, partition: partition) }
        if let ready = replication[partition]!.hold(release) { perform(ready, partition: partition) }
    }

    private mutating func acknowledged(_ partition: UInt32, _ ticket: UInt64, by member: String) {
        guard let replica = replication[partition] else { return }
        if member != name, ticket > replica.base { out.observations.append(.ackClaims(partition: partition, ticket: ticket, follower: member)) }
        let released = replication[partition]!.acknowledged(ticket, by: member)
        guard !released.isEmpty else { return }
        // A decision retried while it waited for the quorum was held once per retry: it goes
        // out once.
        var merged = HeldRelease()
        var seen: Set<Envelope> = []
        for release in released {
            merged.rmMessages += release.rmMessages.filter { seen.insert($0).inserted }
            merged.replies += release.replies
            merged.answers += release.answers
        }
        perform(merged, partition: partition)
    }

    private mutating func perform(_ release: HeldRelease, partition: UInt32) {
        for envelope in release.rmMessages {
            if case .decision(let rm, let message) = envelope {
                out.observations.append(.released(message.txnID, message.outcome, what: "a decision to \(rm)"))
            }
            send(envelope)
        }
        for reply in release.replies {
            switch reply.status {
            case .committed: out.observations.append(.released(reply.txnID, .commit, what: "an outcome"))
            case .aborted: out.observations.append(.released(reply.txnID, .abort, what: "an outcome"))
            case .preparing: break
            }
            for requester in waiting.removeValue(forKey: reply.txnID) ?? [] {
                answer(requester, .status(reply.status, sender: sender(of: partition), attempts: reply.attempts))
            }
        }
        for (requester, answer) in release.answers { self.answer(requester, answer) }
    }

    /// What was held for a partition this node no longer leads is never sent; whoever waits
    /// is told to retry (the new leader answers).
    private mutating func drop(_ release: HeldRelease, partition: UInt32) {
        let retry = NodeAnswer.unavailable("partition \(partition) is no longer led by \(name); retry")
        for (requester, _) in release.answers { answer(requester, retry) }
        for reply in release.replies {
            for requester in waiting.removeValue(forKey: reply.txnID) ?? [] { answer(requester, retry) }
        }
    }

    private mutating func send(_ envelope: Envelope) {
        if case .prepare(let rm, let message) = envelope { unanswered[rm, default: []].insert(message.txnID) }
        out.rmMessages.append(envelope)
    }

    /// Logs when the last txn that takeovers found in doubt has ENDed.
    private mutating func noteEnded(_ records: [PartitionRecord]) {
        guard !inDoubt.isEmpty else { return }
        for case .end(let txnID) in records.map(\.record) { inDoubt.remove(txnID) }
        if inDoubt.isEmpty { out.observations.append(.inDoubtFinished(afterMs: now - inDoubtSince)) }
    }

    // MARK: - Durability

    private mutating func durable(_ id: UInt64, log: (UInt32) -> [TxnRow]) {
        let ready = afterDurable.prefix { $0.write <= id }
        afterDurable.removeFirst(ready.count)
        for (_, follow) in ready {
            switch follow {
            case .ownTickets(let tickets):
                for (partition, ticket) in tickets {
                    acknowledged(partition, ticket, by: name)
                    if mutant == .releaseOnLocalSync, let members = replication[partition]?.members {
                        for member in members where member != name { acknowledged(partition, ticket, by: member) }
                    }
                }
            case .acks(let acks, let leader):
                out.peerMessages.append((leader, .appendAcks(acks)))
            case .fenceAnswer(let attempt, let granted, let refused, let candidate):
                let promised = Dictionary(uniqueKeysWithValues: granted.map { ($0, log($0)) })
                out.peerMessages.append((candidate, .fenceAnswer(FenceAnswer(attempt: attempt, promised: promised, refused: refused))))
            case .sendFences(let attempt):
                sendFences(attempt: attempt, log: log)
            }
        }
    }

    // MARK: - Replication sessions (leader side)

    private mutating func sendAppends(_ appends: [PartitionAppend], to follower: String) {
        guard let (session, sequence) = sessions[follower] else {
            return openSession(to: follower, because: "first append")  // the catch-up carries these records too
        }
        // A step's appends to a follower travel as one message: they join the step's message to
        // it when nothing else went to it since (never a catch-up: every append in one lists
        // its partition's whole state).
        if let index = out.peerMessages.lastIndex(where: { $0.to == follower }), case .append(var message) = out.peerMessages[index].message,
            message.session == session, !message.isCatchUp, message.sequence + 1 == sequence
        {
            message.appends += appends
            out.peerMessages[index].message = .append(message)
            return
        }
        sessions[follower]!.next += 1
        out.peerMessages.append((follower, .append(AppendMessage(session: session, sequence: sequence, appends: appends))))
    }

    /// A new session starts with every txn of the partitions the follower shares with this
    /// leader that it has not trimmed; its acks count from there on. The stream it travels on
    /// starts afresh too, so nothing queued behind a stuck stream holds it up.
    private mutating func openSession(to follower: String, because reason: String) {
        counters.sessionsOpened += 1
        let session = incarnation << 32 | (counters.sessionsOpened & 0xffff_ffff)
        var catchUp: [PartitionAppend] = []
        for partition in replication.keys.sorted() where replication[partition]!.members.contains(follower) {
            replication[partition]!.catchUp(follower)
            out.observations.append(.claimsRestart(partition: partition, follower: follower))
            catchUp.append(
                PartitionAppend(
                    partition: partition, epoch: coordinator.epochs[partition]!, ticket: replication[partition]!.issued,
                    records: coordinator.activeRecords(partition: partition)
                        + coordinator.endedRecords(trims.ended(partition: partition), partition: partition)))
        }
        sessions[follower] = (session, 1)
        lastAckAt[follower] = now
        // A large catch-up takes its follower a while to write and its acks come only then:
        // it gets time in proportion (a catch-up re-sent because it was slow only comes later).
        let records = UInt64(catchUp.reduce(0) { $0 + $1.records.count })
        silenceAllowed[follower] = max(silenceAllowed[follower] ?? timing.silentFollowerMs, timing.silentFollowerMs + records / Self.catchUpRecordsPerMs)
        out.restartStreams.append(follower)
        out.observations.append(.newSession(follower: follower, because: reason))
        out.peerMessages.append((follower, .append(AppendMessage(session: session, sequence: 0, appends: catchUp))))
    }

    /// A follower that is behind and silent for a while may have lost an append (or its ack),
    /// or sits behind a stream that stays open and brings nothing back: it gets a new session.
    /// One that is not alive (down, paused, cut off) waits: it gets one when it is heard from
    /// again, instead of a catch-up built and dropped every interval.
    private mutating func catchUpSilentFollowers() {
        for follower in peers {
            // A member that did not promise an epoch this node leads at gets its catch-up as
            // soon as it is alive: until then its acks do not count.
            if membership.isAlive(follower), replication.values.contains(where: { $0.awaitsCatchUp(follower) }) {
                openSession(to: follower, because: "it did not promise the epoch of a partition taken over")
                continue
            }
            let isBehind = replication.values.contains { $0.members.contains(follower) && $0.isBehind(follower) }
            guard isBehind, membership.isAlive(follower) else {
                if !isBehind {
                    lastAckAt[follower] = now
                    silenceAllowed[follower] = nil
                }
                continue
            }
            let since = lastAckAt[follower] ?? now
            let allowed = silenceAllowed[follower] ?? timing.silentFollowerMs
            if now >= since + allowed {
                silenceAllowed[follower] = min(allowed * 2, timing.silentFollowerMs * Self.silenceAllowedMaxFactor)
                openSession(to: follower, because: "behind and silent for \(now - since) ms")
            }
        }
    }

    private mutating func appendAcksReceived(_ acks: [AppendAck], from follower: String) {
        for ack in acks {
            switch ack.kind {
            case .gap:
                if sessions[follower]?.session == ack.session { openSession(to: follower, because: "it missed a message") }
            case .accepted:
                // An older session's ack counts for nothing: the catch-up that opened the
                // current one carries what it acknowledges, and the follower's acks count
                // from that catch-up on (`ReplicationLeader.catchUp`).
                guard sessions[follower]?.session == ack.session else { continue }
                if replication[ack.partition]?.awaitsCatchUp(follower) == true { continue }
                // The allowance goes back to the base only once the follower has caught up:
                // one that acks a catch-up and is then silent again working through what
                // queued behind it is busy, not lost, and another catch-up (which may take
                // it longer still) would only keep it behind for ever.
                lastAckAt[follower] = now
                acknowledged(ack.partition, ack.ticket, by: follower)
            case .refused(let promised):
                if let mine = coordinator.epochs[ack.partition], promised > mine {
                    stepDown(ack.partition, because: "\(follower) promised epoch \(promised), above ours (\(mine))")
                }
            }
        }
    }

    // MARK: - Replication sessions (follower side)

    /// A follower takes a session's messages in order only; a gap or a refusal breaks the
    /// session, since its later acks would otherwise claim records it never stored.
    private mutating func appendReceived(_ message: AppendMessage, from leader: String, txnIDs: (UInt32) -> [TxnID]) {
        let followed = following[leader]
        // Sessions only move forward: a late message of an older session must not bring back
        // rows that were trimmed since.
        if message.isCatchUp, message.session > followed?.session ?? 0 {
            following[leader] = (message.session, 1)
        } else if followed?.session == message.session, let next = followed?.next, message.sequence == next {
            following[leader]!.next = next + 1
        } else if followed?.session == message.session, let next = followed?.next, message.sequence < next {
            return  // a duplicate
        } else {
            if message.session >= followed?.session ?? 0 {
                out.peerMessages.append((leader, .appendAcks([AppendAck(session: message.session, partition: 0, ticket: 0, kind: .gap)])))
            }
            return
        }
        var writes: [NodeWrite] = []
        var accepted: [AppendAck] = []
        var refused: [AppendAck] = []
        for append in message.appends {
            let verdict = promises.append(
                partition: append.partition, epoch: append.epoch, led: coordinator.epochs[append.partition], isReady: membership.isReady)
            switch verdict {
            case .refuse(let promised):
                refused.append(AppendAck(session: message.session, partition: append.partition, ticket: append.ticket, kind: .refused(promised: promised)))
            case .accept(let promise, let mustStepDown):
                if mustStepDown { stepDown(append.partition, because: "\(leader) appends at epoch \(append.epoch)") }
                if let promise { writes.append(.promise(append.partition, promise)) }
                membership.learn(append.partition, leader: leader, epoch: append.epoch)
                writes += append.records.map { .record(PartitionRecord(partition: append.partition, record: $0)) }
                if message.isCatchUp {
                    writes += staleRows(append, txnIDs: txnIDs).map { .record(PartitionRecord(partition: append.partition, record: .trim(txnID: $0))) }
                }
                accepted.append(AppendAck(session: message.session, partition: append.partition, ticket: append.ticket, kind: .accepted))
            }
        }
        counters.trimmed += UInt64(writes.filter(\.isTrim).count)
        if !refused.isEmpty {
            if mutant != .followerKeepsSessionAfterRefusal { following[leader]!.next = nil }
            out.peerMessages.append((leader, .appendAcks(refused)))
        }
        guard !accepted.isEmpty else { return }
        if mutant == .followerAcksBeforeDurable {
            out.peerMessages.append((leader, .appendAcks(accepted)))
            return write(writes, then: nil)
        }
        write(writes, then: .acks(accepted, to: leader))
    }

    /// A catch-up lists every txn of the partition its leader knows and has not trimmed. A row
    /// here that it does not list belongs to a txn the leader never heard of (so no decision
    /// of it was made: presumed abort) or one trimmed since every member held its END: either
    /// way the row goes, lest it outlive the others' and mislead a later takeover.
    private func staleRows(_ catchUp: PartitionAppend, txnIDs: (UInt32) -> [TxnID]) -> [TxnID] {
        let listed = Set(catchUp.records.map(\.txnID))
        return txnIDs(catchUp.partition).filter { !listed.contains($0) }
    }

    // MARK: - Peers

    private mutating func receive(_ message: PeerMessage, from peer: String, log: (UInt32) -> [TxnRow], txnIDs: (UInt32) -> [TxnID]) {
        guard peers.contains(peer) else { return }
        switch message {
        case .append(let append): appendReceived(append, from: peer, txnIDs: txnIDs)
        case .appendAcks(let acks): appendAcksReceived(acks, from: peer)
        case .heartbeat(let heartbeat): heartbeatReceived(heartbeat, from: peer)
        case .fence(let request): fenceRequested(request, by: peer)
        case .fenceAnswer(let answer): fenceAnswered(answer, by: peer)
        }
    }

    private mutating func heartbeatReceived(_ heartbeat: Heartbeat, from peer: String) {
        heard(peer, heartbeat)
        guard !heartbeat.isReply else { return }
        let reply = Heartbeat(leads: coordinator.epochs, promised: promises.promised, isReady: membership.isReady, isReply: true)
        out.peerMessages.append((peer, .heartbeat(reply)))
    }

    /// A peer is alive and says what it leads: adopt higher epochs, step down from a partition
    /// a higher epoch leads, and adopt its promises (which only makes this node refuse more:
    /// it is how a node that lost its data learns the epochs it must not go below).
    private mutating func heard(_ peer: String, _ heartbeat: Heartbeat) {
        membership.heard(peer, at: now, isReady: heartbeat.isReady || !heartbeat.isReply)
        membership.peerLeads(peer, heartbeat.leads)
        for (partition, epoch) in heartbeat.leads.sorted(by: { $0.key < $1.key }) {
            if let mine = coordinator.epochs[partition], epoch > mine {
                stepDown(partition, because: "\(peer) leads it at epoch \(epoch), above ours (\(mine))")
            }
        }
        for (partition, epoch) in heartbeat.promised.sorted(by: { $0.key < $1.key }) {
            membership.observe(partition, epoch: epoch)
            promises.adopt(partition, epoch)
        }
    }

    /// Stops leading: what was held is never sent, and whoever waits on the partition's txns
    /// is told to retry. A higher epoch leads now, even if this node has not heard from its
    /// leader yet: the partition is left alone for a suspicion timeout, in which that
    /// leader's heartbeats arrive.
    private mutating func stepDown(_ partition: UInt32, because reason: String) {
        guard coordinator.leads(partition) else { return }
        let dropped = coordinator.stepDown(partition: partition)
        membership.forget(partition, leader: name)
        backOffTakeover(partition)
        trims.forget(partition: partition)
        for release in replication.removeValue(forKey: partition)?.pending ?? [] { drop(release, partition: partition) }
        let retry = NodeAnswer.unavailable("partition \(partition) is no longer led by \(name); retry")
        for txnID in dropped {
            for requester in waiting.removeValue(forKey: txnID) ?? [] { answer(requester, retry) }
        }
        out.observations.append(.steppedDown(partition: partition, because: reason, inFlightLeft: dropped.count))
        // The new leader finishes the txns in doubt it takes over from here.
        if !inDoubt.isEmpty {
            inDoubt.subtract(dropped)
            if inDoubt.isEmpty { out.observations.append(.inDoubtFinished(afterMs: now - inDoubtSince)) }
        }
    }

    private mutating func backOffTakeover(_ partition: UInt32) {
        retryTakeoverAt[partition] = max(retryTakeoverAt[partition] ?? 0, now + timing.suspicionTimeoutMs)
    }

    // MARK: - Trimming

    /// ENDed rows leave the log of every member together, once every member holds the END
    /// and the retention period has passed (see `LogRecord.trim`).
    private mutating func trimDue() {
        var output = CoordinatorOutput()
        for (partition, replica) in replication.sorted(by: { $0.key < $1.key }) {
            let due = trims.due(partition: partition, allDurable: replica.allDurable, now: now)
            output.recordsToAppend += due.map { PartitionRecord(partition: partition, record: .trim(txnID: $0)) }
        }
        guard !output.recordsToAppend.isEmpty else { return }
        counters.trimmed += UInt64(output.recordsToAppend.count)
        apply(output)
    }

    // MARK: - Takeover

    /// Fences every partition this node should lead and does not: new epochs, promised here
    /// durably before any FENCE goes out. One takeover runs at a time.
    private mutating func startTakeover() {
        let wanted = memberOf.filter { partition in
            !coordinator.leads(partition) && now >= (retryTakeoverAt[partition] ?? 0)
                && membership.shouldTakeOver(partition, members: map.replicaGroup(of: partition))
        }
        guard !wanted.isEmpty else { return }
        var seen: [UInt32: Epoch] = [:]
        for partition in wanted {
            seen[partition] = [promises[partition], membership.leader(of: partition)?.epoch, membership.observed(partition)].compactMap { $0 }.max() ?? .zero
        }
        let plan = Takeover(
            candidate: name, nodeID: nodeID, seen: seen, groups: Dictionary(uniqueKeysWithValues: wanted.map { ($0, map.replicaGroup(of: $0)) }))
        for (partition, epoch) in plan.epochs { promises.adopt(partition, epoch) }
        attemptsStarted += 1
        let number = attemptsStarted
        takeover = TakeoverAttempt(takeover: plan, number: number, startedAt: now)
        write(plan.epochs.sorted { $0.key < $1.key }.map { .promise($0.key, $0.value) }, then: .sendFences(attempt: number))
    }

    private var attemptsStarted: UInt64 = 0

    private mutating func sendFences(attempt number: UInt64, log: (UInt32) -> [TxnRow]) {
        guard var attempt = takeover, attempt.number == number else { return }
        var byMember: [String: [UInt32: Epoch]] = [:]
        for (partition, epoch) in attempt.takeover.epochs {
            attempt.takeover.promisedLocally(partition, rows: log(partition))
            for member in map.replicaGroup(of: partition) where member != name {
                byMember[member, default: [:]][partition] = epoch
            }
        }
        attempt.awaiting = Set(byMember.keys)
        attempt.deadline = now + timing.fenceTimeoutMs
        attempt.fencesSent = true
        takeover = attempt
        for (member, epochs) in byMember.sorted(by: { $0.key < $1.key }) {
            out.peerMessages.append((member, .fence(FenceRequest(attempt: number, epochs: epochs))))
        }
        if attempt.awaiting.isEmpty || attempt.takeover.isSettled { finishTakeover() }
    }

    /// A candidate asks this node to promise new epochs: each above every epoch promised or
    /// led here is promised (durably, before the answer) and answered with this node's rows.
    private mutating func fenceRequested(_ request: FenceRequest, by candidate: String) {
        var granted: [UInt32] = []
        var refused: [UInt32: Epoch] = [:]
        for (partition, epoch) in request.epochs.sorted(by: { $0.key < $1.key }) {
            guard map.replicaGroup(of: partition).contains(name), map.replicaGroup(of: partition).contains(candidate) else { continue }
            let candidateID = nodes.firstIndex(of: candidate).map { NodeIndex(UInt32($0)).id }
            switch promises.fence(partition: partition, epoch: epoch, led: coordinator.epochs[partition], isReady: membership.isReady, candidate: candidateID) {
            case .failure(let refusal):
                refused[partition] = refusal.promised
            case .success:
                granted.append(partition)
                backOffTakeover(partition)
                membership.observe(partition, epoch: epoch)
                if coordinator.leads(partition) { stepDown(partition, because: "\(candidate) fences it at epoch \(epoch)") }
            }
        }
        guard !granted.isEmpty else {
            out.peerMessages.append((candidate, .fenceAnswer(FenceAnswer(attempt: request.attempt, promised: [:], refused: refused))))
            return
        }
        let writes = granted.map { NodeWrite.promise($0, request.epochs[$0]!) }
        write(writes, then: .fenceAnswer(attempt: request.attempt, granted: granted, refused: refused, to: candidate))
    }

    private mutating func fenceAnswered(_ answer: FenceAnswer, by member: String) {
        guard var attempt = takeover, attempt.number == answer.attempt, attempt.awaiting.contains(member) else { return }
        for (partition, rows) in answer.promised.sorted(by: { $0.key < $1.key }) {
            attempt.takeover.promised(partition, by: member, rows: rows)
        }
        for (partition, epoch) in answer.refused.sorted(by: { $0.key < $1.key }) {
            attempt.takeover.refused(partition, promised: epoch, by: member)
            membership.observe(partition, epoch: epoch)
        }
        attempt.awaiting.remove(member)
        takeover = attempt
        if attempt.awaiting.isEmpty || attempt.takeover.isSettled { finishTakeover() }
    }

    /// Installs every partition won (unless this node promised a higher epoch meanwhile); the
    /// others are tried again later. A takeover whose own promises never became durable (the
    /// deadline passed first) wins nothing.
    private mutating func finishTakeover() {
        guard let attempt = takeover else { return }
        takeover = nil
        let retryAt = now + 3 * timing.heartbeatMs
        guard attempt.fencesSent else {
            for partition in attempt.takeover.epochs.keys { retryTakeoverAt[partition] = retryAt }
            return
        }
        for partition in attempt.takeover.lost() {
            retryTakeoverAt[partition] = retryAt
            out.observations.append(
                .takeoverLost(
                    partition: partition, epoch: attempt.takeover.epochs[partition]!, promisers: attempt.takeover.promisers(of: partition),
                    group: map.replicaGroup(of: partition)))
        }
        var installed: [UInt32] = []
        var inDoubtRows: [TxnRow] = []
        for won in attempt.takeover.won() {
            guard promises[won.partition] == won.epoch, !coordinator.leads(won.partition) else {
                retryTakeoverAt[won.partition] = retryAt
                continue
            }
            inDoubtRows += install(
                won.partition, epoch: won.epoch, rows: won.rows, settledEnds: won.endedAtEveryPromiser,
                promisers: attempt.takeover.promisers(of: won.partition))
            installed.append(won.partition)
        }
        guard !installed.isEmpty else { return }
        let from = Set(installed.compactMap { takenFrom[$0] }).sorted()
        out.observations.append(
            .tookOver(
                partitions: installed, inDoubt: inDoubtRows.count, commitsToFinish: inDoubtRows.filter { $0.decision?.outcome == .commit }.count,
                tookMs: now - attempt.startedAt, from: from.isEmpty ? "no previous leader" : from.joined(separator: ", ")))
        if !inDoubtRows.isEmpty {
            if inDoubt.isEmpty { inDoubtSince = attempt.startedAt }
            inDoubt.formUnion(inDoubtRows.map(\.txnID))
        }
    }

    /// Adopts one partition; returns its txns that were in doubt.
    private mutating func install(_ partition: UInt32, epoch: Epoch, rows: [TxnRow], settledEnds: Set<TxnID>, promisers: [String]) -> [TxnRow] {
        let members = map.replicaGroup(of: partition)
        replication[partition] = ReplicationLeader(members: members, epoch: epoch, needsCatchUp: Set(members).subtracting(promisers))
        out.observations.append(.claimsRestart(partition: partition, follower: nil))
        if let previous = membership.leader(of: partition), previous.node != name { takenFrom[partition] = previous.node }
        membership.learn(partition, leader: name, epoch: epoch)
        let output = coordinator.takeOver(partition: partition, epoch: epoch, rows: rows, settledEnds: settledEnds, now: now)
        counters.takeovers += 1
        // Scheduled first: a catch-up that the append below opens must list them, or its
        // follower would drop their rows as stale.
        scheduleTrims(of: settledEnds, partition: partition)
        apply(output)
        if !settledEnds.isEmpty, replication[partition]!.issued == replication[partition]!.base { append([], opening: [partition]) }
        return rows.filter { !$0.isEnded && !$0.branches.isEmpty }
    }

    /// Txns that every promiser holds ENDed are not appended again (a takeover would otherwise
    /// append two records per txn of the whole retention window). They are trimmed once every
    /// member holds the tenure's first ticket: the promisers hold their END already, and the
    /// acks of a member that did not promise count only from its first catch-up on
    /// (`ReplicationLeader.awaitsCatchUp`), which carries the END of every txn waiting to be
    /// trimmed. `install` issues the first ticket if the takeover appends nothing, so that the
    /// members have a ticket to ack.
    private mutating func scheduleTrims(of settled: Set<TxnID>, partition: UInt32) {
        let ticket = replication[partition]!.base + 1
        for txnID in settled.sorted() {
            trims.ended(txnID, partition: partition, ticket: ticket, due: now + timing.retentionMs)
        }
    }
}

extension NodeWrite {
    var isTrim: Bool {
        if case .record(let entry) = self, case .trim = entry.record { return true }
        return false
    }
}

extension Envelope {
    /// The partition whose leader sends it.
    public var partition: UInt32 {
        switch self {
        case .prepare(_, let message): message.sender.partition
        case .decision(_, let message): message.sender.partition
        }
    }
}
