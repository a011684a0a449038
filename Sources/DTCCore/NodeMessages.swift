/// What coordinator nodes say to each other, what a node asks its disk to do, and what it
/// answers the clients and participants that ask it something. `NodeMachine` consumes and
/// produces these; dtc-node maps them to gRPC and LMDB, dtc-sim to its simulated network and
/// disk.

/// One partition's records in an append, at the leader's epoch, with the ticket they carry.
public struct PartitionAppend: Hashable, Sendable {
    public var partition: UInt32
    public var epoch: Epoch
    public var ticket: UInt64
    public var records: [LogRecord]

    public init(partition: UInt32, epoch: Epoch, ticket: UInt64, records: [LogRecord]) {
        self.partition = partition
        self.epoch = epoch
        self.ticket = ticket
        self.records = records
    }
}

/// A leader's replication to one follower is a session of numbered messages. The follower
/// takes them in order only; a gap (a lost message, a broken stream, a follower that
/// restarted) or a refusal breaks the session, and the leader opens a new one whose first
/// message (sequence 0) is a catch-up: every txn of the shared partitions it knows and has not
/// trimmed. Sessions only move forward, so a late message of an old session changes nothing.
public struct AppendMessage: Hashable, Sendable {
    public var session: UInt64
    public var sequence: UInt64
    public var appends: [PartitionAppend]

    public init(session: UInt64, sequence: UInt64, appends: [PartitionAppend]) {
        self.session = session
        self.sequence = sequence
        self.appends = appends
    }

    public var isCatchUp: Bool { sequence == 0 }
}

public struct AppendAck: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        /// Every append of the partition up to `ticket` is durable at the follower.
        case accepted
        /// The follower promised a higher epoch (or is not ready: `.zero`).
        case refused(promised: Epoch)
        /// The follower missed a message of the session: the leader must catch it up.
        case gap
    }

    public var session: UInt64
    public var partition: UInt32
    public var ticket: UInt64
    public var kind: Kind

    public init(session: UInt64, partition: UInt32, ticket: UInt64, kind: Kind) {
        self.session = session
        self.partition = partition
        self.ticket = ticket
        self.kind = kind
    }
}

/// A node is alive, what it leads, and (in a reply) what it has promised.
public struct Heartbeat: Hashable, Sendable {
    public var leads: [UInt32: Epoch]
    public var promised: [UInt32: Epoch]
    public var isReady: Bool
    public var isReply: Bool

    public init(leads: [UInt32: Epoch], promised: [UInt32: Epoch], isReady: Bool, isReply: Bool) {
        self.leads = leads
        self.promised = promised
        self.isReady = isReady
        self.isReply = isReply
    }
}

/// A candidate asks a member to promise new epochs (attempt numbers tell answers apart).
public struct FenceRequest: Hashable, Sendable {
    public var attempt: UInt64
    public var epochs: [UInt32: Epoch]

    public init(attempt: UInt64, epochs: [UInt32: Epoch]) {
        self.attempt = attempt
        self.epochs = epochs
    }
}

/// A member's answer: the rows of each partition it promised, the epoch that beats each it
/// refused.
public struct FenceAnswer: Hashable, Sendable {
    public var attempt: UInt64
    public var promised: [UInt32: [TxnRow]]
    public var refused: [UInt32: Epoch]

    public init(attempt: UInt64, promised: [UInt32: [TxnRow]], refused: [UInt32: Epoch]) {
        self.attempt = attempt
        self.promised = promised
        self.refused = refused
    }
}

public enum PeerMessage: Hashable, Sendable {
    case append(AppendMessage)
    case appendAcks([AppendAck])
    case heartbeat(Heartbeat)
    case fence(FenceRequest)
    case fenceAnswer(FenceAnswer)
}

/// What a node writes to its log: records of partitions (merged into rows) and promises.
public enum NodeWrite: Hashable, Sendable {
    case record(PartitionRecord)
    case promise(UInt32, Epoch)
}

/// One write the shell makes durable (fsync before `durable`); writes become durable in the
/// order they were issued.
public struct NodeWriteBatch: Hashable, Sendable {
    public var id: UInt64
    public var items: [NodeWrite]

    public var records: [PartitionRecord] {
        items.compactMap { if case .record(let record) = $0 { record } else { nil } }
    }

    public var promises: [UInt32: Epoch] { items.highestPromises }
}

/// The shell's handle for whoever waits for an answer (a gRPC call, a simulated client or
/// participant). The machine never looks inside it.
public struct Requester: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public var description: String { "r\(rawValue)" }
}

/// What a node answers a submit, a resolve or a txn query.
public enum NodeAnswer: Hashable, Sendable {
    /// The txn's state, as its partition's leader (`sender`) knows it once a quorum holds it.
    /// `attempts`: as in `ClientReply` (0 where not known).
    case status(TxnStatus, sender: Sender, attempts: Attempt = 0)
    /// Another node leads the partition.
    case redirect(leader: String, partition: UInt32)
    /// No leader can serve the partition now (no quorum, a takeover pending, a step-down).
    case unavailable(String)
    /// `inFlightTxnsMax` reached.
    case overloaded(inFlight: Int)
    /// The txn ID is known with other branches.
    case idTaken
    case snapshot(TxnSnapshot)
    case notFound
}

/// What happened inside a node that its operator (logs) or a checker (dtc-sim) wants to know.
public enum NodeObservation: Hashable, Sendable {
    /// A leader issued `ticket` for these records of a partition it leads.
    case issued(partition: UInt32, ticket: UInt64, records: [LogRecord])
    /// A follower's ack claims every record of the partition up to `ticket` (of this tenure).
    case ackClaims(partition: UInt32, ticket: UInt64, follower: String)
    /// A new tenure (`follower` nil) or a catch-up to `follower`: its claims count afresh.
    case claimsRestart(partition: UInt32, follower: String?)
    /// Something that waited for the quorum went out: a decision to an RM or an outcome told.
    case released(TxnID, Outcome, what: String)
    case steppedDown(partition: UInt32, because: String, inFlightLeft: Int)
    case tookOver(partitions: [UInt32], inDoubt: Int, commitsToFinish: Int, tookMs: UInt64, from: String)
    case takeoverLost(partition: UInt32, epoch: Epoch, promisers: [String], group: [String])
    /// Every txn the takeovers found in doubt has ENDed (all its RMs acknowledged).
    case inDoubtFinished(afterMs: UInt64)
    case newSession(follower: String, because: String)
    case decisionRefused(rm: String, TxnID, reason: String)
    /// The node did not run for a while (paused, starved): peers get a fresh suspicion timeout.
    case stalled(forMs: UInt64)
}

/// Everything one step of a node asks its shell to do, in this order: write `writes` (each
/// made durable in order, then reported back as `NodeEvent.durable`); restart the streams in
/// `restartStreams` (drop what is queued on them); send `peerMessages` and `rmMessages`;
/// answer `answers`. Nothing here depends on a write that is not durable yet: what must wait
/// for durability (a follower's ack, a fence answer, the fences of a candidate) or for a
/// quorum (a decision, an outcome) the machine holds and emits in a later step.
public struct NodeActions: Sendable {
    public var writes: [NodeWriteBatch] = []
    public var restartStreams: [String] = []
    public var peerMessages: [(to: String, message: PeerMessage)] = []
    public var rmMessages: [Envelope] = []
    public var answers: [(to: Requester, answer: NodeAnswer)] = []
    public var observations: [NodeObservation] = []

    public init() {}

    public var isEmpty: Bool {
        writes.isEmpty && restartStreams.isEmpty && peerMessages.isEmpty && rmMessages.isEmpty && answers.isEmpty && observations.isEmpty
    }
}

/// What happens to a node.
public enum NodeEvent: Sendable {
    case tick
    case submit(TxnID, [Branch], from: Requester)
    /// Many submits at once (a client's batch): one step, so their STARTs share a write and a
    /// message to each follower.
    case submits([Submit])
    /// A participant (or an operator) asks for the outcome of a txn of `partition`.
    case resolve(TxnID, partition: UInt32, from: Requester)
    /// A txn's state, answered once everything appended so far is on a quorum.
    case query(TxnID, from: Requester)
    case votes([VoteReply], from: String)
    case acks([AckReply], from: String)
    /// The stream to an RM broke: its unanswered PREPAREs count as NO.
    case rmStreamBroken(String, reason: String)
    case peer(PeerMessage, from: String)
    /// Write `id` (and every write before it) is durable.
    case durable(UInt64)
}

/// One submit of a batch (`NodeEvent.submits`).
public struct Submit: Sendable {
    public var txnID: TxnID
    public var branches: [Branch]
    public var requester: Requester

    public init(_ txnID: TxnID, _ branches: [Branch], from requester: Requester) {
        self.txnID = txnID
        self.branches = branches
        self.requester = requester
    }
}

/// A node's timing, in milliseconds of its own clock.
public struct NodeTiming: Sendable, Equatable {
    public var heartbeatMs: UInt64
    public var suspicionTimeoutMs: UInt64
    /// How long a candidate waits for fence answers.
    public var fenceTimeoutMs: UInt64
    /// A follower that is behind and silent for this long gets a new session (a catch-up).
    public var silentFollowerMs: UInt64
    /// How long an ENDed txn's row stays (the window in which a txn ID is deduplicated).
    public var retentionMs: UInt64

    public init(heartbeatMs: UInt64, suspicionTimeoutMs: UInt64, fenceTimeoutMs: UInt64, silentFollowerMs: UInt64, retentionMs: UInt64) {
        self.heartbeatMs = heartbeatMs
        self.suspicionTimeoutMs = suspicionTimeoutMs
        self.fenceTimeoutMs = fenceTimeoutMs
        self.silentFollowerMs = silentFollowerMs
        self.retentionMs = retentionMs
    }
}

extension Sequence where Element == NodeWrite {
    /// The rows of `partition` that these writes leave, in txn order: records merge into their
    /// row, a TRIM deletes it. What a log of durable writes answers to `NodeMachine`'s `log`.
    public func rows(of partition: UInt32) -> [TxnRow] {
        var rows: [TxnID: TxnRow] = [:]
        for case .record(let entry) in self where entry.partition == partition {
            if case .trim(let txnID) = entry.record {
                rows[txnID] = nil
            } else {
                rows[entry.record.txnID, default: TxnRow(txnID: entry.record.txnID)].apply(entry.record)
            }
        }
        return rows.values.sorted { $0.txnID < $1.txnID }
    }

    /// The highest epoch promised per partition among these writes.
    public var highestPromises: [UInt32: Epoch] {
        var promised: [UInt32: Epoch] = [:]
        for case .promise(let partition, let epoch) in self { promised[partition] = Swift.max(promised[partition] ?? .zero, epoch) }
        return promised
    }
}

extension NodeTiming {
    /// The short timing dtc-sim and the NodeMachine transcripts run with.
    public static let simulated = NodeTiming(heartbeatMs: 50, suspicionTimeoutMs: 400, fenceTimeoutMs: 300, silentFollowerMs: 200, retentionMs: 3_500)
}

extension Limits {
    /// The short timeouts dtc-sim and the NodeMachine transcripts run with.
    public static let simulated: Limits = {
        var limits = Limits()
        limits.prepareTimeout = 300
        limits.lockWaitTimeout = 100
        limits.decisionRetryInitial = 50
        limits.decisionRetryMax = 400
        return limits
    }()
}
