import DTCClient
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

    /// One coordinator's stream: its batches go to the runtime as they arrive; replies gather
    /// in a queue and go back many per message as they become ready.
    func exchange(
        request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
    ) async throws {
        let replies = BatchQueue<ReplySink.Reply>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let batch = await replies.next() { try await response.write(Self.response(batch)) }
            }
            for try await message in request {
                let (prepares, decisions) = try Self.validated(message)
                await runtime.receive(prepares: prepares, decisions: decisions, replyTo: ReplySink(queue: replies))
            }
            replies.close()
            try await group.waitForAll()
        }
    }

    private static func validated(_ message: Dtc_V1_RMRequest) throws -> ([PrepareMessage], [DecisionMessage]) {
        let prepares = try message.prepares.enumerated().map { index, wire in
            try invalidArgument("prepares[\(index)]") { () throws(ValidationError) in try PrepareMessage(wire: wire) }
        }
        let decisions = try message.decisions.enumerated().map { index, wire in
            try invalidArgument("decisions[\(index)]") { () throws(ValidationError) in try DecisionMessage(wire: wire) }
        }
        return (prepares, decisions)
    }

    private static func response(_ batch: [ReplySink.Reply]) -> Dtc_V1_RMResponse {
        var response = Dtc_V1_RMResponse()
        for reply in batch {
            switch reply {
            case .vote(let vote): response.votes.append(vote.wire)
            case .ack(let ack): response.acks.append(ack.wire)
            }
        }
        return response
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

    private static func invalidArgument<T>(_ field: String, _ body: () throws(ValidationError) -> T) throws(RPCError) -> T {
        do {
            return try body()
        } catch {
            throw RPCError(code: .invalidArgument, message: "\(field).\(error.description)")
        }
    }
}
