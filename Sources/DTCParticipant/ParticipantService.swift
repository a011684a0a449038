import DTCCore
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore

/// A participant's gRPC API (docs/participant-protocol.md): batches of PREPAREs and decisions
/// from coordinators on the Exchange stream, reads of its state, ledger and prepared txns for
/// checkers, and its counters.
struct ParticipantService: Dtc_V1_ResourceManager.SimpleServiceProtocol {
    let runtime: ParticipantRuntime
    let store: ParticipantStore
    static let scanLimitMax = 10_000

    /// One coordinator's stream: its batches go to the runtime as they arrive; replies gather
    /// in a queue and go back many per message as they become ready.
    func exchange(
        request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
    ) async throws {
        let replies = BatchQueue<ParticipantReply>()
        let route = await runtime.open(replies)
        defer { Task { await runtime.close(route) } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let batch = await replies.next() { try await response.write(Self.response(batch)) }
            }
            for try await message in request {
                let (prepares, decisions) = try Self.validated(message)
                await runtime.receive(prepares: prepares, decisions: decisions, from: route)
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

    private static func response(_ batch: [ParticipantReply]) -> Dtc_V1_RMResponse {
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
        let space: ScanSpace
        switch request.space {
        case .state: space = .state
        case .ledger: space = .ledger
        case .prepared: space = .prepared
        case .UNRECOGNIZED(let value): throw RPCError(code: .invalidArgument, message: "space \(value) is not a scan space (0 state, 1 ledger, 2 prepared)")
        }
        let entries = try store.scan(space, prefix: request.prefix, after: request.after.isEmpty ? nil : request.after, limit: limit + 1)
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
