import DTCClient
import DTCCore
import DTCFaults
import DTCWire
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Seed data for an RM's first start: units per SKU and cents per user.
public struct SeedData: Codable, Sendable {
    public var stock: [String: Int64]
    public var balances: [String: Int64]

    /// The seed that cluster.json describes: `skus` SKUs `sku-0`… and `users` users `user-0`….
    public init(_ seed: ClusterConfig.Seed) {
        stock = Dictionary(uniqueKeysWithValues: (0..<seed.skus).map { ("sku-\($0)", seed.unitsPerSku) })
        balances = Dictionary(uniqueKeysWithValues: (0..<seed.users).map { ("user-\($0)", seed.centsPerUser) })
    }

    public init(stock: [String: Int64], balances: [String: Int64]) {
        self.stock = stock
        self.balances = balances
    }

    func values(for service: ServiceKind) -> [(String, StateValue)] {
        switch service {
        case .inventory: stock.sorted { $0.key < $1.key }.map { (StateKey.stock($0.key), .count($0.value)) }
        case .accounts: balances.sorted { $0.key < $1.key }.map { (StateKey.balance($0.key), .count($0.value)) }
        case .orders: []
        }
    }
}

/// Starts one RM: opens its store, seeds it on first start, reloads prepared txns and their
/// locks, then serves until the process is killed. With `allowFaultInjection` its links can be
/// told to misbehave through the admin RPC.
public func runResourceManager(
    config: ClusterConfig, name: String, seed: SeedData, allowFaultInjection: Bool = false, logger: Logger
) async throws {
    guard let me = config.rm(named: name), let service = me.service else {
        throw ConfigError("no rm named '\(name)' in the cluster config (rms: \(config.rms.map(\.name).joined(separator: ", ")))")
    }
    let store = try RMStore(path: config.dataDirectory(of: me))
    if try await store.seedIfEmpty(seed.values(for: service)) {
        logger.info("\(name): seeded \(service.rawValue) state")
    }
    let faults = allowFaultInjection ? FaultInjector(process: name, addresses: config.processNames) : nil
    if faults != nil { logger.notice("\(name): fault injection enabled (admin RPC)") }
    let connections = Connections(sender: name, faults: faults)
    let router = Router(config: config, connections: connections)
    let participant = Participant(limits: config.limits, inquiryAfter: UInt64(config.timing.inquiryAfterMs))
    let runtime = RMRuntime(name: name, service: service, participant: participant, store: store, logger: logger) { prepared in
        await askOutcome(router, prepared)
    }
    try await runtime.recover()

    let transport = HTTP2ServerTransport.Posix(
        address: .ipv4(host: me.host, port: me.port), transportSecurity: .plaintext,
        config: .defaults { $0.rpc.maxRequestPayloadSize = 16 << 20 })
    let services: [any RegistrableRPCService] = [
        ResourceManagerService(runtime: runtime, store: store),
        AdminService(process: name, faults: faults),
    ]
    let server = GRPCServer(transport: transport, services: services, interceptors: faults.map { [FaultServerInterceptor(faults: $0)] } ?? [])
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        group.addTask {
            while true {
                try await Task.sleep(for: .milliseconds(config.timing.tickMs))
                await runtime.tick()
            }
        }
        if let address = try await transport.listeningAddress.ipv4 {
            logger.info("\(name): serving \(service.rawValue) on \(address.host):\(address.port)")
        }
    }
}

/// The termination protocol's question; nil while the coordinator is unreachable or undecided.
private func askOutcome(_ router: Router, _ prepared: PreparedTxn) async -> Outcome? {
    guard let status = try? await router.resolve(prepared.txnID, partition: prepared.sender.partition) else { return nil }
    switch status {
    case .preparing: return nil
    case .committed: return .commit
    case .aborted: return .abort
    }
}
