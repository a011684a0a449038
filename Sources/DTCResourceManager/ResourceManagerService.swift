import DTCCore
import DTCWire
import Foundation
import GRPCCore

/// The RM's gRPC API: batches of PREPAREs and decisions from coordinators, and reads at
/// committed state for the checker.
struct ResourceManagerService: Dtc_V1_ResourceManager.SimpleServiceProtocol {
    let runtime: RMRuntime
    let store: RMStore
    static let scanLimitMax = 10_000

    func prepare(request: Dtc_V1_PrepareBatch, context: ServerContext) async throws -> Dtc_V1_VoteBatch {
        let messages = try request.prepares.enumerated().map { index, wire in
            try invalidArgument("prepares[\(index)]") { () throws(ValidationError) in try PrepareMessage(wire: wire) }
        }
        let votes = await withTaskGroup(of: (Int, Vote).self) { group in
            for (index, message) in messages.enumerated() {
                group.addTask { (index, await runtime.prepare(message)) }
            }
            var votes = [Vote](repeating: .no(reason: "unanswered"), count: messages.count)
            for await (index, vote) in group { votes[index] = vote }
            return votes
        }
        return .with {
            $0.votes = zip(messages, votes).map { VoteReply(txnID: $0.txnID, vote: $1).wire }
        }
    }

    func decide(request: Dtc_V1_DecisionBatch, context: ServerContext) async throws -> Dtc_V1_AckBatch {
        let messages = try request.decisions.enumerated().map { index, wire in
            try invalidArgument("decisions[\(index)]") { () throws(ValidationError) in try DecisionMessage(wire: wire) }
        }
        let acks = await withTaskGroup(of: AckReply.self) { group in
            for message in messages { group.addTask { await runtime.decide(message) } }
            var acks: [AckReply] = []
            for await ack in group { acks.append(ack) }
            return acks
        }
        return .with { $0.acks = acks.map(\.wire) }
    }

    func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse {
        let limit = request.limit == 0 ? 1_000 : Int(request.limit)
        guard limit <= Self.scanLimitMax else {
            throw RPCError(code: .invalidArgument, message: "limit \(limit) is over the maximum of \(Self.scanLimitMax)")
        }
        let entries = try store.scan(prefix: request.prefix, after: request.after.isEmpty ? nil : request.after, limit: limit + 1)
        return .with { response in
            response.entries = entries.prefix(limit).map { entry in .with { $0.key = entry.key; $0.value = Data(entry.value) } }
            response.more = entries.count > limit
        }
    }

    func status(request: Dtc_V1_RMStatusRequest, context: ServerContext) async throws -> Dtc_V1_RMStatusResponse {
        await runtime.status()
    }

    private func invalidArgument<T>(_ field: String, _ body: () throws(ValidationError) -> T) throws(RPCError) -> T {
        do {
            return try body()
        } catch {
            throw RPCError(code: .invalidArgument, message: "\(field).\(error.description)")
        }
    }
}
