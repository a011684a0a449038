import DTCCore
import DTCFaults
import DTCRuntime
import DTCStorage
import DTCWire
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Starts one coordinator node: opens its log, claims a new epoch for each partition it leads,
/// recovers unfinished txns, then serves until the process is killed. With
/// `allowFaultInjection` its links can be told to misbehave through the admin RPC.
public func runNode(config: ClusterConfig, name: String, allowFaultInjection: Bool = false, logger: Logger) async throws {
    guard let me = config.node(named: name) else {
        throw ConfigError("no node named '\(name)' in the cluster config (nodes: \(config.nodes.map(\.name).joined(separator: ", ")))")
    }
    if let crash = CrashPoints.shared.description { logger.warning("\(name): crash point armed: \(crash) (DTC_CRASH_AT)") }
    let store = try NodeStore(path: config.dataDirectory(of: me))
    let map = config.partitionMap
    let rowCount = try store.rows.rowCount()
    let groups = (0..<map.partitionCount).filter { map.replicaGroup(of: $0).contains(name) }.count
    logger.info("\(name): member of \(groups) partitions' replica groups, \(rowCount) rows in the log")

    let faults = allowFaultInjection ? FaultInjector(process: name, addresses: config.processNames) : nil
    if faults != nil { logger.notice("\(name): fault injection enabled (admin RPC)") }
    let connections = Connections(sender: name, faults: faults)
    // A participant answers every PREPARE within its lock wait and every decision at once; a
    // stream silent for much longer than that is given up (RMLink.watched).
    let timing = config.timing
    let rmSilenceMax = Duration.milliseconds(max(3_000, 4 * timing.lockWaitTimeoutMs, 2 * timing.rpcTimeoutMs))
    let rmLinks = Dictionary(uniqueKeysWithValues: config.rms.map {
        ($0.name, RMLink(rm: $0.name, address: $0.address, connections: connections, silenceMax: rmSilenceMax))
    })
    let peers = config.nodes.filter { $0.name != name }
    let peerLinks = Dictionary(uniqueKeysWithValues: peers.map {
        ($0.name, PeerLink(peer: $0.name, address: $0.address, connections: connections))
    })
    let runtime = try NodeRuntime(
        name: name, config: config, store: store, incarnation: try await store.nextIncarnation(), rmLinks: rmLinks,
        connections: connections, clock: ProcessClock(), logger: logger)
    await runtime.attach(peerLinks)

    let services: [any RegistrableRPCService] = [
        CoordinatorService(runtime: runtime, participants: Set(config.rms.map(\.name)), limits: config.limits),
        ReplicaService(runtime: runtime, config: config),
        AdminService(process: name, faults: faults),
    ]
    let transport = HTTP2ServerTransport.Posix(
        address: .ipv4(host: me.host, port: me.port), transportSecurity: .plaintext,
        config: .defaults { $0.rpc.maxRequestPayloadSize = peerMessageBytesMax })
    let server = GRPCServer(transport: transport, services: services, interceptors: [MessageCounter.shared.serverInterceptor] + (faults.map { [FaultServerInterceptor(faults: $0)] } ?? []))
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        group.addTask { try await every(.milliseconds(config.timing.tickMs)) { await runtime.tick() } }
        for link in rmLinks.values {
            group.addTask { await link.run(replies: runtime) }
        }
        for link in peerLinks.values {
            group.addTask { await link.run(replies: runtime) }
        }
        if let address = try await transport.listeningAddress.ipv4 {
            logger.info("\(name): serving on \(address.host):\(address.port)")
        }
    }
}

private func every(_ interval: Duration, _ body: () async -> Void) async throws {
    while true {
        try await Task.sleep(for: interval)
        await body()
    }
}
