import DTCCore
import DTCRuntime
import DTCWire
import GRPCCore

/// Node-to-node API: heartbeats, fencing for takeovers, and the replication stream.
struct ReplicaService: Dtc_V1_Replica.SimpleServiceProtocol {
    let runtime: NodeRuntime
    let config: ClusterConfig

    func heartbeat(request: Dtc_V1_HeartbeatRequest, context: ServerContext) async throws -> Dtc_V1_HeartbeatResponse {
        try checkPeer(request.node, field: "node")
        return await runtime.heartbeatReceived(request)
    }

    func fence(request: Dtc_V1_FenceRequest, context: ServerContext) async throws -> Dtc_V1_FenceResponse {
        try checkPeer(request.candidate, field: "candidate")
        if let bad = request.partitions.first(where: { $0.partition >= config.partitions }) {
            throw RPCError(code: .invalidArgument, message: "partitions: \(bad.partition) does not exist (\(config.partitions) partitions)")
        }
        return await runtime.fenceRequested(request)
    }

    /// One leader's stream of session messages; acks go back as the records become durable.
    func replicate(
        request: RPCAsyncSequence<Dtc_V1_AppendBatch, any Error>, response: RPCWriter<Dtc_V1_AppendAcks>, context: ServerContext
    ) async throws {
        let acks = BatchQueue<Dtc_V1_AppendAck>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while let batch = await acks.next() { try await response.write(.with { $0.acks = batch }) }
            }
            var opened: (leader: String, stream: UInt64)?
            defer { acks.close() }
            for try await batch in request {
                try checkPeer(batch.leader, field: "leader")
                if opened == nil { opened = (batch.leader, await runtime.openedStream(from: batch.leader, acks: acks)) }
                let message: AppendMessage
                do {
                    message = try AppendMessage(wire: batch)
                } catch {
                    throw RPCError(code: .invalidArgument, message: "appends: a record does not decode: \(error)")
                }
                await runtime.appendsReceived(message, from: batch.leader, stream: opened!.stream, acks: acks)
            }
            if let opened { await runtime.closedStream(opened.stream, from: opened.leader) }
            acks.close()
            try await group.waitForAll()
        }
    }

    private func checkPeer(_ node: String, field: String) throws {
        guard config.node(named: node) != nil else {
            throw RPCError(code: .invalidArgument, message: "\(field): node '\(node)' is not in the cluster config")
        }
    }
}
