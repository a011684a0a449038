import DTCRuntime
import DTCWire
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// A FENCE's answer carries a member's rows of every partition fenced, and passed gRPC's 4 MiB
/// default in a 60-minute chaos run: never delivered, the takeover was retried for ever. Calls
/// between nodes allow `peerMessageBytesMax`; here a 6 MiB answer arrives with that allowance
/// and fails without it, over real HTTP/2 on loopback.
@Suite struct PeerMessageSizeTests {
    /// Answers every Scan with one entry of `bytes` bytes.
    struct BigAnswers: Dtc_V1_ResourceManager.SimpleServiceProtocol {
        let bytes: Int

        func exchange(
            request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
        ) async throws {}

        func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse {
            .with { $0.entries = [.with { $0.key = "rows"; $0.value = Data(repeating: 7, count: bytes) }] }
        }

        func status(request: Dtc_V1_RMStatusRequest, context: ServerContext) async throws -> Dtc_V1_RMStatusResponse { .init() }
    }

    @Test func anAnswerOverFourMiBArrivesBetweenNodesAndNotWithGRPCsDefault() async throws {
        let bytes = 6 << 20
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [BigAnswers(bytes: bytes)])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }
            let port = try #require(try await transport.listeningAddress.ipv4?.port)
            let connections = Connections()
            let client = try connections.resourceManager("127.0.0.1:\(port)")

            var peer = CallOptions.defaults
            peer.allowPeerSizedMessages()
            let answer = try await client.scan(Dtc_V1_ScanRequest(), options: peer)
            #expect(answer.entries.first?.value.count == bytes)

            let error = await #expect(throws: RPCError.self) { try await client.scan(Dtc_V1_ScanRequest()) }
            #expect(error?.message.contains("maximum payload size") == true, "\(String(describing: error))")

            await connections.close()
            server.beginGracefulShutdown()
            try await group.waitForAll()
        }
    }
}
