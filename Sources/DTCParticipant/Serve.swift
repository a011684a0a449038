@_exported import DTCCore
import DTCFaults
import DTCRouter
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Turns a service's `ParticipantLogic` into a dtc participant: the process serving the
/// participant `name` of the cluster config at `configPath`. It opens (or creates) its LMDB
/// store in the participant's `dataDir`, writes `initialState` on the first start, reloads
/// prepared txns and re-takes their locks, then serves the Exchange stream, Scan and Status
/// until the process ends. Errors in the config or the store are thrown before it serves.
/// `allowFaultInjection` serves the admin RPC that makes its links misbehave (`dtc fault`),
/// for tests only. It logs to standard error.
public func serveParticipant(
    _ logic: some ParticipantLogic, name: String, configPath: String = "cluster.json",
    initialState: [(key: String, value: [UInt8])] = [], allowFaultInjection: Bool = false
) async throws {
    let config = try ClusterConfig.load(path: configPath)
    try await serveParticipant(
        logic, config: config, name: name, initialState: initialState, allowFaultInjection: allowFaultInjection,
        logger: Logger(label: "dtc-participant.\(name)"))
}

/// The same, with a loaded config and a logger; `allowFaultInjection` serves the admin RPC
/// that makes the participant's links misbehave (`dtc fault`), for tests.
public func serveParticipant(
    _ logic: some ParticipantLogic, config: ClusterConfig, name: String, initialState: [(key: String, value: [UInt8])] = [],
    allowFaultInjection: Bool = false, logger: Logger
) async throws {
    guard let me = config.rm(named: name) else {
        throw ConfigError("no rm named '\(name)' in the cluster config (rms: \(config.rms.map(\.name).joined(separator: ", ")))")
    }
    let store = try ParticipantStore(path: config.dataDirectory(of: me))
    if try await store.seedIfEmpty(initialState), !initialState.isEmpty {
        logger.info("\(name): wrote the initial state (\(initialState.count) keys)")
    }
    let faults = allowFaultInjection ? FaultInjector(process: name, addresses: config.processNames) : nil
    if faults != nil { logger.notice("\(name): fault injection enabled (admin RPC)") }
    let router = Router(config: config, connections: Connections(sender: name, faults: faults))
    let machine = ParticipantMachine(limits: config.limits, inquiryAfter: UInt64(config.timing.inquiryAfterMs))
    let runtime = ParticipantRuntime(name: name, logic: logic, machine: machine, store: store, logger: logger) { prepared in
        await askOutcome(router, prepared)
    }
    try await runtime.recover()

    let transport = HTTP2ServerTransport.Posix(
        address: .ipv4(host: me.host, port: me.port), transportSecurity: .plaintext,
        config: .defaults { $0.rpc.maxRequestPayloadSize = 16 << 20 })
    let services: [any RegistrableRPCService] = [
        ParticipantService(runtime: runtime, store: store),
        AdminService(process: name, faults: faults),
    ]
    let server = GRPCServer(transport: transport, services: services, interceptors: [MessageCounter.shared.serverInterceptor] + (faults.map { [FaultServerInterceptor(faults: $0)] } ?? []))
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        group.addTask {
            while true {
                try await Task.sleep(for: .milliseconds(config.timing.tickMs))
                await runtime.tick()
            }
        }
        if let address = try await transport.listeningAddress.ipv4 {
            logger.info("\(name): serving participant on \(address.host):\(address.port)")
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
