import DTCCore
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

@testable import DTCNode

/// A backlog of PREPAREs goes to a participant in messages it accepts, in order.
@Suite struct RMLinkTests {
    private func prepare(_ id: Int, payloadBytes: Int) -> RMLink.Outgoing {
        let branch = Branch(rm: "tickets", kind: "book", payload: [UInt8](repeating: 1, count: payloadBytes))
        return .prepare(PrepareMessage(
            txnID: TxnID("t\(id)"), stamp: UInt64(id), sender: Sender(partition: 0, epoch: .zero, node: "n1"), branch: branch,
            participants: ["tickets"]))
    }

    @Test func aLargeBacklogIsSplitIntoBoundedMessagesInOrder() {
        let batch = (0..<200).map { prepare($0, payloadBytes: 65_536) }
        let requests = RMLink.requests(batch)
        #expect(requests.count > 1)
        #expect(requests.allSatisfy { $0.prepares.reduce(0) { $0 + $1.branch.payload.count } <= RMLink.requestPayloadBytesMax })
        #expect(requests.flatMap(\.prepares).map(\.txnID) == (0..<200).map { "t\($0)" })
    }

    @Test func aSmallBatchIsOneMessage() {
        let batch = (0..<100).map { prepare($0, payloadBytes: 64) }
        #expect(RMLink.requests(batch).count == 1)
        #expect(RMLink.requests([]).isEmpty)
    }
}

/// A participant whose stream stays open and answers nothing: the link must give the stream up
/// and report it broken (so its PREPAREs count as NO) instead of waiting for it for good.
@Suite struct RMLinkSilenceTests {
    /// Accepts the stream and never reads from it or answers.
    struct SilentParticipant: Dtc_V1_ResourceManager.SimpleServiceProtocol {
        func exchange(
            request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
        ) async throws {
            try await Task.sleep(for: .seconds(600))
        }

        func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse {
            throw RPCError(code: .unimplemented, message: "silent")
        }

        func status(request: Dtc_V1_RMStatusRequest, context: ServerContext) async throws -> Dtc_V1_RMStatusResponse {
            throw RPCError(code: .unimplemented, message: "silent")
        }
    }

    actor Replies: RMReplyHandler {
        var broken: [String] = []
        func votesReceived(_ votes: [VoteReply], from rm: String) {}
        func acksReceived(_ acks: [AckReply], from rm: String) {}
        func streamBroken(to rm: String, reason: String) { broken.append(reason) }
    }

    @Test func aStreamThatAnswersNothingIsGivenUpAndReportedBroken() async throws {
        let port = 20_000 + Int(getpid() % 300) * 20 + 19
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: port), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [SilentParticipant()])
        let serving = Task { try await server.serve() }
        _ = try await transport.listeningAddress
        let connections = Connections()
        let link = RMLink(rm: "silent", address: "127.0.0.1:\(port)", connections: connections, silenceMax: .milliseconds(300))
        let replies = Replies()
        let running = Task { await link.run(replies: replies) }
        let decision = DecisionMessage(txnID: TxnID("t1"), outcome: .abort, sender: Sender(partition: 0, epoch: .zero, node: "n1"))
        link.send([], [decision])
        let deadline = ContinuousClock.now + .seconds(20)
        while await !replies.broken.contains(where: { $0.contains("no answer from silent") }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let broken = await replies.broken
        #expect(broken.contains { $0.contains("no answer from silent") }, "reasons: \(broken)")
        running.cancel()
        _ = await running.value
        await connections.close()
        server.beginGracefulShutdown()
        serving.cancel()
        _ = await serving.result
    }
}
