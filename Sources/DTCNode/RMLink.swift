import DTCClient
import DTCCore
import DTCWire
import GRPCCore
import Synchronization

/// What comes back from an RM, delivered to the node runtime in batches.
protocol RMReplyHandler: Sendable {
    func votesReceived(_ votes: [(TxnID, Vote)], from rm: String) async
    func acksReceived(_ acks: [(TxnID, accepted: Bool, reason: String)], from rm: String) async
}

/// The node's link to one RM. PREPAREs and decisions are queued and sent as batches, one RPC
/// for many txns, with a few batches in flight: unary gRPC costs too much CPU per call to send
/// one per branch. A failed PREPARE batch counts as NO for each of its txns; a failed
/// decision batch is simply resent by the coordinator's retry timer.
final class RMLink: Sendable {
    let rm: String
    private let address: String
    private let connections: Connections
    private let options: CallOptions
    private let batchMax: Int
    private let inFlightBatchesMax: Int
    private let state = Mutex(Queues())

    private struct Queues {
        var prepares: [PrepareMessage] = []
        var decisions: [DecisionMessage] = []
        var inFlightPrepareBatches = 0
        var inFlightDecisionBatches = 0
    }

    init(rm: String, address: String, connections: Connections, options: CallOptions, batchMax: Int = 512, inFlightBatchesMax: Int = 8) {
        self.rm = rm
        self.address = address
        self.connections = connections
        self.options = options
        self.batchMax = batchMax
        self.inFlightBatchesMax = inFlightBatchesMax
    }

    func send(_ prepares: [PrepareMessage], _ decisions: [DecisionMessage], replies: any RMReplyHandler) {
        state.withLock {
            $0.prepares += prepares
            $0.decisions += decisions
        }
        pump(replies)
    }

    /// Starts batches while there is queued work and room in flight.
    private func pump(_ replies: any RMReplyHandler) {
        while let batch = nextPrepareBatch() {
            Task { await sendPrepares(batch, replies) }
        }
        while let batch = nextDecisionBatch() {
            Task { await sendDecisions(batch, replies) }
        }
    }

    private func nextPrepareBatch() -> [PrepareMessage]? {
        state.withLock { queues in
            guard !queues.prepares.isEmpty, queues.inFlightPrepareBatches < inFlightBatchesMax else { return nil }
            let batch = Array(queues.prepares.prefix(batchMax))
            queues.prepares.removeFirst(batch.count)
            queues.inFlightPrepareBatches += 1
            return batch
        }
    }

    private func nextDecisionBatch() -> [DecisionMessage]? {
        state.withLock { queues in
            guard !queues.decisions.isEmpty, queues.inFlightDecisionBatches < inFlightBatchesMax else { return nil }
            let batch = Array(queues.decisions.prefix(batchMax))
            queues.decisions.removeFirst(batch.count)
            queues.inFlightDecisionBatches += 1
            return batch
        }
    }

    private func sendPrepares(_ batch: [PrepareMessage], _ replies: any RMReplyHandler) async {
        var request = Dtc_V1_PrepareBatch()
        request.prepares = batch.map(\.wire)
        var votes: [(TxnID, Vote)]
        do {
            let response = try await connections.resourceManager(address).prepare(request, options: options)
            let byID = Dictionary(response.votes.map { ($0.txnID, Vote(wire: $0)) }, uniquingKeysWith: { first, _ in first })
            votes = batch.map { ($0.txnID, byID[$0.txnID.rawValue] ?? .no(reason: "\(rm) returned no vote")) }
        } catch {
            votes = batch.map { ($0.txnID, .no(reason: "\(rm) unreachable: \(Self.short(error))")) }
        }
        state.withLock { $0.inFlightPrepareBatches -= 1 }
        pump(replies)
        await replies.votesReceived(votes, from: rm)
    }

    private func sendDecisions(_ batch: [DecisionMessage], _ replies: any RMReplyHandler) async {
        var request = Dtc_V1_DecisionBatch()
        request.decisions = batch.map(\.wire)
        let response = try? await connections.resourceManager(address).decide(request, options: options)
        state.withLock { $0.inFlightDecisionBatches -= 1 }
        pump(replies)
        guard let response else { return }
        await replies.acksReceived(response.acks.map { (TxnID($0.txnID), $0.accepted, $0.reason) }, from: rm)
    }

    static func short(_ error: any Error) -> String {
        if let rpc = error as? RPCError { return "\(rpc.code): \(rpc.message)" }
        return "\(error)"
    }
}
