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

    /// One coordinator's stream: its batches go to the runtime as they arrive; replies gather
    /// in a queue and go back many per message as they become ready.
    func exchange(
        request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
    ) async throws {
        let runtime = runtime
        try await serveExchange(
            request: request, response: response, open: { await runtime.open($0) },
            receive: { await runtime.receive(prepares: $0, decisions: $1, from: $2) }, close: { await runtime.close($0) })
    }

    func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse {
        let limit = try request.checkedLimit()
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
}
