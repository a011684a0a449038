import DTCCore
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore

/// dtc-pg's gRPC API: the participant contract's Exchange stream, Scan (the ledger from the
/// database, the prepared branches from memory; its state is the database itself, which
/// `dtc check` reads with SQL, so the state space is empty) and Status.
struct PostgresService: Dtc_V1_ResourceManager.SimpleServiceProtocol {
    let participant: PostgresParticipant

    func exchange(
        request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
    ) async throws {
        let participant = participant
        try await serveExchange(
            request: request, response: response, open: { await participant.open($0) },
            receive: { await participant.receive(prepares: $0, decisions: $1, from: $2) }, close: { await participant.close($0) })
    }

    func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse {
        let limit = try request.checkedLimit()
        let after = request.after.isEmpty ? nil : request.after
        var entries: [(key: String, value: [UInt8])]
        switch request.space {
        case .state:
            entries = []
        case .ledger:
            do {
                entries = try await participant.ledgerPage(prefix: request.prefix, after: after, limit: limit + 1)
                    .map { ($0.0.rawValue, $0.1.encoded()) }
            } catch {
                throw RPCError(code: .unavailable, message: "postgres unavailable: \(PostgresPool.describe(error))")
            }
        case .prepared:
            entries = await participant.preparedTxns.lazy
                .map { (key: $0.0.rawValue, value: Array($0.1.utf8)) }
                .filter { entry in entry.key.hasPrefix(request.prefix) && Self.sorts(entry.key, after: after) }
                .prefix(limit + 1).map { $0 }
        case .UNRECOGNIZED(let value):
            throw RPCError(code: .invalidArgument, message: "space \(value) is not a scan space (0 state, 1 ledger, 2 prepared)")
        }
        return .with { response in
            response.entries = entries.prefix(limit).map { entry in .with { $0.key = entry.key; $0.value = Data(entry.value) } }
            response.more = entries.count > limit
        }
    }

    /// Byte order of UTF-8, as Scan promises; every key sorts after no key.
    private static func sorts(_ key: String, after: String?) -> Bool {
        guard let after else { return true }
        return after.utf8.lexicographicallyPrecedes(key.utf8)
    }

    func status(request: Dtc_V1_RMStatusRequest, context: ServerContext) async throws -> Dtc_V1_RMStatusResponse {
        let counters = await participant.counters
        let prepared = await participant.preparedCount
        let active = await participant.activeCount
        let cached = await participant.cachedFinishedCount
        return .with {
            $0.service = participant.name
            $0.prepared = UInt64(prepared)
            $0.committed = counters.committed
            $0.aborted = counters.aborted
            $0.refused = counters.refused
            $0.staleEpochRefusals = counters.staleEpochRefusals
            $0.conflictingDecisions = counters.conflictingDecisions
            $0.logSyncs = counters.syncs
            $0.messagesSent = MessageCounter.shared.messagesSent
            $0.active = UInt64(active)
            $0.cachedFinished = UInt64(cached)
            $0.ledgerLookups = counters.ledgerLookups
        }
    }
}
