import DTCCore

/// What travels on the simulated network.
enum Message: Hashable, Sendable {
    case submit(TxnID, [Branch], client: Int)
    case reply(ClientReply, client: Int)
    case prepare(PrepareMessage, rm: Int)
    case vote(TxnID, Vote, rm: Int, node: Int)
    case decision(DecisionMessage, rm: Int)
    case ack(TxnID, rm: Int, node: Int)
    case inquire(PreparedTxn, rm: Int, node: Int)
    case inquiryAnswer(TxnID, Outcome, sender: Sender, rm: Int)
}

/// Who runs where, what a client wants, and how often faults strike: all drawn from the seed.
public struct Swarm: Sendable, CustomStringConvertible {
    public var nodes: Int
    public var clients: Int
    public var txnsPerClient: Int
    public var dropRate: Double
    public var duplicateRate: Double
    public var delayMax: UInt64
    public var crashEvery: UInt64
    public var faultPhase: UInt64

    init(_ random: inout SplitMix64) {
        nodes = Int.random(in: 1...3, using: &random)
        clients = Int.random(in: 1...8, using: &random)
        txnsPerClient = Int.random(in: 3...12, using: &random)
        dropRate = [0, 0.01, 0.05, 0.2].randomElement(using: &random)!
        duplicateRate = [0, 0.02, 0.1].randomElement(using: &random)!
        delayMax = [2, 20, 200].randomElement(using: &random)!
        crashEvery = [0, 100, 300, 1_500].randomElement(using: &random)!
        faultPhase = 5_000
    }

    public var description: String {
        "nodes \(nodes), clients \(clients)×\(txnsPerClient) txns, drop \(dropRate), duplicate \(duplicateRate), delay ≤\(delayMax) ms, crash every \(crashEvery == 0 ? "never" : "\(crashEvery) ms")"
    }
}

/// A disk that keeps synced and unsynced writes apart: a crash loses what was not synced.
struct Disk<Record: Sendable>: Sendable {
    private(set) var synced: [Record] = []
    private(set) var pending: [Record] = []

    mutating func write(_ records: [Record]) { pending += records }

    /// Everything written so far becomes durable.
    mutating func sync() {
        synced += pending
        pending = []
    }

    mutating func crash() { pending = [] }
}
