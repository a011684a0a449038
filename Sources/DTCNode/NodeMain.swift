import DTCClient
import DTCCore
import DTCStorage
import DTCWire
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// Starts one coordinator node: opens its log, claims a new epoch for each partition it leads,
/// recovers unfinished txns, then serves until the process is killed.
public func runNode(config: ClusterConfig, name: String, logger: Logger) async throws {
    guard let me = config.node(named: name), let index = config.nodeIndex(of: name) else {
        throw ConfigError("no node named '\(name)' in the cluster config (nodes: \(config.nodes.map(\.name).joined(separator: ", ")))")
    }
    let environment = try LMDBEnvironment(path: config.dataDirectory(of: me))
    let committer = GroupCommitter(environment: environment)
    let log = try DurableLog(environment: environment, committer: committer)

    let entries = try log.allEntries()
    let records = try entries.map { entry in
        do {
            return PartitionRecord(partition: entry.partition, record: try LogRecord(decoding: entry.payload))
        } catch {
            throw StorageError.corruption(database: "log", key: "partition \(entry.partition) sequence \(entry.sequence): \(error)")
        }
    }
    let led = Set(config.partitionMap.partitions(ledBy: name)).union(records.map(\.partition))
    let epochs = try await claimEpochs(led, nodeID: UInt32(index + 1), log: log)
    logger.info("\(name): leading \(epochs.count) partitions, log has \(entries.count) records")

    let connections = Connections()
    let links = Dictionary(uniqueKeysWithValues: config.rms.map {
        ($0.name, RMLink(rm: $0.name, address: $0.address, connections: connections))
    })
    let coordinator = Coordinator(node: name, nodeIndex: UInt32(index), epochs: epochs, limits: config.limits)
    let runtime = NodeRuntime(name: name, config: config, coordinator: coordinator, log: log, links: links, clock: NodeClock(), logger: logger)
    await runtime.start(recoveredFrom: records)

    let service = CoordinatorService(runtime: runtime, services: config.services, limits: config.limits)
    let transport = HTTP2ServerTransport.Posix(
        address: .ipv4(host: me.host, port: me.port), transportSecurity: .plaintext,
        config: .defaults { $0.rpc.maxRequestPayloadSize = 1 << 20 })
    let server = GRPCServer(transport: transport, services: [service])
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        group.addTask { try await tickForever(runtime, every: .milliseconds(config.timing.tickMs)) }
        for link in links.values {
            group.addTask { await link.run(replies: runtime) }
        }
        if let address = try await transport.listeningAddress.ipv4 {
            logger.info("\(name): serving on \(address.host):\(address.port)")
        }
    }
}

/// Each led partition gets an epoch above the last one this node persisted, written durably
/// before the node serves: messages from before a restart carry a lower epoch.
func claimEpochs(_ partitions: Set<UInt32>, nodeID: UInt32, log: DurableLog) async throws -> [UInt32: Epoch] {
    var epochs: [UInt32: Epoch] = [:]
    for partition in partitions.sorted() {
        let previous = try log.meta("epoch/\(partition)").map(decodeEpoch) ?? .zero
        epochs[partition] = previous.next(for: nodeID)
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (partition, epoch) in epochs {
            group.addTask { try await log.putMeta("epoch/\(partition)", encodeEpoch(epoch)) }
        }
        try await group.waitForAll()
    }
    return epochs
}

func encodeEpoch(_ epoch: Epoch) -> [UInt8] {
    var writer = ByteWriter()
    writer.write(epoch)
    return writer.bytes
}

func decodeEpoch(_ bytes: [UInt8]) throws -> Epoch {
    var reader = ByteReader(bytes)
    return try reader.readEpoch()
}

private func tickForever(_ runtime: NodeRuntime, every interval: Duration) async throws {
    while true {
        try await Task.sleep(for: interval)
        await runtime.tick()
    }
}
