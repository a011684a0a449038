import DTCCore

/// A process on the simulated network.
enum Endpoint: Hashable, Sendable, CustomStringConvertible {
    case node(Int)
    case rm(Int)
    case client(Int)

    var description: String {
        switch self {
        case .node(let index): "n\(index)"
        case .rm(let index): "rm\(index)"
        case .client(let index): "c\(index)"
        }
    }
}

/// What travels on the simulated network.
enum Message: Hashable, Sendable {
    case submit(TxnID, [Branch], client: Int, node: Int)
    case reply(ClientReply, client: Int, node: Int)
    case redirect(TxnID, leader: Int, client: Int, node: Int)
    /// The node cannot serve the txn now (no quorum, no leader yet, overloaded): retry soon.
    case retryLater(TxnID, client: Int, node: Int)
    case prepare(PrepareMessage, rm: Int)
    case vote(VoteReply, rm: Int, node: Int)
    case decision(DecisionMessage, rm: Int)
    case ack(AckReply, rm: Int, node: Int)
    case inquire(PreparedTxn, rm: Int, node: Int)
    case inquiryAnswer(TxnID, Outcome, sender: Sender, rm: Int)
    case peer(PeerMessage, from: Int, to: Int)

    /// Who sends it and who receives it, for network partitions.
    var route: (from: Endpoint, to: Endpoint) {
        switch self {
        case .submit(_, _, let client, let node): (.client(client), .node(node))
        case .reply(_, let client, let node), .redirect(_, _, let client, let node), .retryLater(_, let client, let node):
            (.node(node), .client(client))
        case .prepare(let message, let rm): (.node(Simulation.nodeIndex(message.sender.node)), .rm(rm))
        case .decision(let message, let rm): (.node(Simulation.nodeIndex(message.sender.node)), .rm(rm))
        case .inquiryAnswer(_, _, let sender, let rm): (.node(Simulation.nodeIndex(sender.node)), .rm(rm))
        case .vote(_, let rm, let node), .ack(_, let rm, let node), .inquire(_, let rm, let node): (.rm(rm), .node(node))
        case .peer(_, let from, let to): (.node(from), .node(to))
        }
    }

    private static func attempt(_ attempt: Attempt) -> String { attempt == 0 ? "" : " #\(attempt)" }
    private static func rollback(_ attempt: Attempt?) -> String { attempt.map { " of attempt #\($0)" } ?? "" }

    /// A short line for the trace and the last events of a failing seed.
    var summary: String {
        switch self {
        case .submit(let txnID, _, let client, let node): "submit \(txnID) c\(client)→n\(node)"
        case .reply(let reply, let client, let node): "reply \(reply.txnID) \(reply.status) n\(node)→c\(client)"
        case .redirect(let txnID, let leader, let client, let node): "redirect \(txnID) to n\(leader) n\(node)→c\(client)"
        case .prepare(let message, let rm):
            "prepare \(message.txnID)\(Self.attempt(message.attempt)) @\(message.sender.epoch) \(message.sender.node)→rm\(rm)"
        case .vote(let vote, let rm, let node): "vote \(vote.txnID)\(Self.attempt(vote.attempt)) \(vote.vote) rm\(rm)→n\(node)"
        case .decision(let message, let rm):
            "decision \(message.txnID) \(message.outcome)\(Self.rollback(message.rolledBackAttempt)) @\(message.sender.epoch) \(message.sender.node)→rm\(rm)"
        case .ack(let ack, let rm, let node): "ack \(ack.txnID)\(Self.rollback(ack.rolledBackAttempt)) rm\(rm)→n\(node)"
        case .inquire(let prepared, let rm, let node): "inquire \(prepared.txnID) rm\(rm)→n\(node)"
        case .inquiryAnswer(let txnID, let outcome, let sender, let rm): "answer \(txnID) \(outcome) @\(sender.epoch) \(sender.node)→rm\(rm)"
        case .retryLater(let txnID, let client, let node): "retry later \(txnID) n\(node)→c\(client)"
        case .peer(let message, let from, let to): "\(message.summary) n\(from)→n\(to)"
        }
    }
}

/// Who runs where, what a client wants, and which faults strike how often: all drawn from
/// the seed (swarm testing: each seed turns some fault kinds off).
public struct Swarm: Sendable, CustomStringConvertible {
    public var nodes: Int
    public var rms: Int
    public var clients: Int
    public var txnsPerClient: Int
    public var dropRate: Double
    public var duplicateRate: Double
    public var delayMax: UInt64
    public var crashEvery: UInt64
    public var partitionEvery: UInt64
    public var pauseEvery: UInt64
    public var clockJumpEvery: UInt64
    public var tearsWrites: Bool
    public var faultPhase: UInt64

    init(_ random: inout SplitMix64) {
        nodes = Int.random(in: 3...5, using: &random)
        rms = Int.random(in: 3...5, using: &random)
        clients = Int.random(in: 1...8, using: &random)
        txnsPerClient = Int.random(in: 3...12, using: &random)
        dropRate = [0, 0.01, 0.05, 0.2].randomElement(using: &random)!
        duplicateRate = [0, 0.02, 0.1].randomElement(using: &random)!
        delayMax = [2, 20, 200].randomElement(using: &random)!
        crashEvery = [0, 150, 400, 1_500].randomElement(using: &random)!
        partitionEvery = [0, 0, 300, 1_000].randomElement(using: &random)!
        pauseEvery = [0, 0, 700, 2_000].randomElement(using: &random)!
        clockJumpEvery = [0, 0, 1_000].randomElement(using: &random)!
        tearsWrites = Bool.random(using: &random)
        faultPhase = 5_000
    }

    public var description: String {
        func every(_ ms: UInt64) -> String { ms == 0 ? "never" : "every \(ms) ms" }
        return "nodes \(nodes), RMs \(rms), clients \(clients)×\(txnsPerClient) txns, drop \(dropRate), duplicate \(duplicateRate), delay ≤\(delayMax) ms, "
            + "crash \(every(crashEvery)), partition \(every(partitionEvery)), pause \(every(pauseEvery)), clock jump \(every(clockJumpEvery)), torn writes \(tearsWrites ? "on" : "off")"
    }
}

/// A disk that keeps synced and unsynced writes apart: a crash loses what was not synced,
/// and may tear the last write, which leaves a damaged tail that recovery must cut off
/// (the records' checksums make a torn write detectable rather than misread).
struct Disk<Record: Sendable>: Sendable {
    private(set) var synced: [Record] = []
    private(set) var pending: [Record] = []
    /// Bytes of a torn write at the end of the synced data, until recovery cuts them off.
    private(set) var tornTail = false

    mutating func write(_ records: [Record]) { pending += records }

    /// Everything written so far becomes durable.
    mutating func sync() {
        precondition(!tornTail, "writing after a torn tail that recovery did not cut off")
        synced += pending
        pending = []
    }

    mutating func crash(tearingLastWrite: Bool) {
        tornTail = tearingLastWrite && !pending.isEmpty
        pending = []
    }

    /// Recovery: cuts off a torn tail; returns whether there was one.
    mutating func recover() -> Bool {
        defer { tornTail = false }
        return tornTail
    }
}

extension PeerMessage {
    /// A short line for the trace.
    var summary: String {
        switch self {
        case .append(let message):
            "append s\(message.session)#\(message.sequence) \(message.appends.map { "p\($0.partition)@\($0.epoch) t\($0.ticket & 0xffff_ffff) \($0.records.count)r" })"
        case .appendAcks(let acks): "acks \(acks.map { "p\($0.partition) t\($0.ticket & 0xffff_ffff) \($0.kind)" })"
        case .heartbeat(let heartbeat): "heartbeat\(heartbeat.isReply ? " reply" : "") leads \(heartbeat.leads.count)"
        case .fence(let request): "fence #\(request.attempt) \(request.epochs.sorted { $0.key < $1.key }.map { "p\($0.key)@\($0.value)" })"
        case .fenceAnswer(let answer): "fence answer #\(answer.attempt) promised \(answer.promised.keys.sorted()) refused \(answer.refused.keys.sorted())"
        }
    }
}

/// A coordinator node in the simulation: the real `NodeMachine` dtc-node runs, with a
/// simulated disk, clock and network in place of LMDB, the process clock and gRPC.
struct SimNode {
    let index: Int
    let name: String
    var machine: NodeMachine?
    var disk = Disk<NodeWrite>()
    var generation = 0
    /// The last write handed to the disk: a sync makes it (and all before it) durable.
    var lastWrite: UInt64 = 0
    /// Added to the simulated time to give this node's clock. dtc reads a monotonic clock,
    /// so a jump only ever goes forward (a suspended VM, a stalled process).
    var clockOffset: UInt64 = 0
    var pausedUntil: UInt64 = 0
    /// Who waits for each requester token: a client (and its txn) or an RM's inquiry.
    var requesters: [Requester: (asker: Asker, txnID: TxnID)] = [:]

    enum Asker {
        case client(Int)
        case rm(Int)
    }

    init(index: Int) {
        self.index = index
        self.name = "n\(index)"
    }

    /// Rows of a partition, from the synced log: what a fence answer or a takeover reads.
    func rows(of partition: UInt32) -> [TxnRow] { disk.synced.rows(of: partition) }

    /// The highest promise per partition in the synced log.
    func syncedPromises() -> [UInt32: Epoch] { disk.synced.highestPromises }
}

