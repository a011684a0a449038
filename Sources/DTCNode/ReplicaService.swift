import DTCClient
import DTCCore
import DTCWire
import GRPCCore

/// Node-to-node API: heartbeats, fencing for takeovers, and the replication stream.
struct ReplicaService: Dtc_V1_Replica.SimpleServiceProtocol {
    let runtime: NodeRuntime
    let config: ClusterConfig

    func heartbeat(request: Dtc_V1_HeartbeatRequest, context: ServerContext) async throws -> Dtc_V1_HeartbeatResponse {
        guard config.node(named: request.node) != nil else {
            throw RPCError(code: .invalidArgument, message: "node '\(request.node)' is not in the cluster config")
        }
        return await runtime.heartbeatReceived(request)
    }

    func fence(request: Dtc_V1_FenceRequest, context: ServerContext) async throws -> Dtc_V1_FenceResponse {
        if let bad = request.partitions.first(where: { $0.partition >= config.partitions }) {
            throw RPCError(code: .invalidArgument, message: "partitions: \(bad.partition) does not exist (\(config.partitions) partitions)")
        }
        return await runtime.fenceRequested(request)
    }

    /// One leader's stream of appends; acks go back as the records become durable.
    func replicate(
        request: RPCAsyncSequence<Dtc_V1_AppendBatch, any Error>, response: RPCWriter<Dtc_V1_AppendAcks>, context: ServerContext
    ) async throws {
        let acks = BatchQueue<Dtc_V1_AppendAck>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let batch = await acks.next() { try await response.write(.with { $0.acks = batch }) }
            }
            var refused = false
            stream: for try await message in request {
                for (leader, appends) in Dictionary(grouping: message.appends, by: { $0.epochNode }) {
                    let name = config.nodes.indices.contains(Int(leader) - 1) ? config.nodes[Int(leader) - 1].name : "node \(leader)"
                    refused = await runtime.appendsReceived(appends, from: name, replyTo: acks) == .refusedSome
                    if refused { break stream }
                }
            }
            acks.close()
            try await group.waitForAll()
            // Acks are cumulative per partition: after refusing an append, acking a later one
            // would claim the refused records too. The stream ends instead; the leader
            // reconnects and sends a catch-up.
            if refused { throw RPCError(code: .unavailable, message: "refused an append; reconnect to catch up") }
        }
    }
}
