import DTCWire
import GRPCCore
import GRPCInProcessTransport
import Synchronization
import Testing

@testable import DTCFaults

/// The interceptors over a real gRPC client and server (in-process transport): node n1 calls
/// the RM "rm", each with its own faults.
@Suite struct FaultInterceptorTests {
    @Test func aDuplicatedUnaryRequestRunsTwiceAndAnswersOnce() async throws {
        let n1 = injector("n1")
        try n1.set(link: (0, 0, 0, 1, 1), cutOff: nil)
        let rm = FakeRM()
        try await run(client: n1, server: injector("rm"), rm) { client in
            let status = try await client.status(Dtc_V1_RMStatusRequest(), options: timeout(.seconds(30)))
            #expect(status.service == "inventory")
        }
        #expect(rm.statusCalls.value == 2)
        #expect(n1.state.counters.duplicated == 1)
    }

    @Test func aLostUnaryRequestNeverRunsAndTheCallerTimesOut() async throws {
        for lossAtClient in [true, false] {
            let n1 = injector("n1")
            let server = injector("rm")
            try (lossAtClient ? n1 : server).set(link: (1, 0, 0, 0, 1), cutOff: nil)
            let rm = FakeRM()
            try await run(client: n1, server: server, rm) { client in
                let error = await #expect(throws: RPCError.self) {
                    try await client.status(Dtc_V1_RMStatusRequest(), options: timeout(.milliseconds(200)))
                }
                #expect(error?.code == .deadlineExceeded)
            }
            #expect(rm.statusCalls.value == 0)
            #expect((lossAtClient ? n1 : server).state.counters.dropped == 1)
        }
    }

    @Test func aCutOffPeerCannotOpenAStreamButAnotherCan() async throws {
        let server = injector("rm")
        try server.set(link: nil, cutOff: (["n1"], .in))
        let rm = FakeRM()
        try await run(client: injector("n1"), server: server, rm) { client in
            let error = await #expect(throws: RPCError.self) { _ = try await exchange(client, messages: 1) }
            #expect(error?.code == .unavailable)
        }
        #expect(rm.received.value == 0)
        #expect(server.state.counters.cut >= 1)
        try await run(client: injector("n2"), server: server, FakeRM()) { client in
            let replies = try await exchange(client, messages: 2)
            #expect(replies == 2)
        }
    }

    @Test func aDuplicatedStreamMessageArrivesTwiceInOrder() async throws {
        let n1 = injector("n1")
        try n1.set(link: (0, 0, 0, 1, 1), cutOff: nil)
        let rm = FakeRM()
        try await run(client: n1, server: injector("rm"), rm) { client in
            // Each request is written twice, and each of the two replies is received twice.
            let replies = try await exchange(client, messages: 3)
            #expect(replies == 12)
        }
        #expect(rm.received.value == 6)
        #expect(rm.order.withLock { $0 } == ["t0", "t0", "t1", "t1", "t2", "t2"])
    }

    @Test func aLostStreamMessageBreaksTheStream() async throws {
        let server = injector("rm")
        try server.set(link: (1, 0, 0, 0, 1), cutOff: nil)
        let rm = FakeRM()
        try await run(client: injector("n1"), server: server, rm) { client in
            let error = await #expect(throws: RPCError.self) { _ = try await exchange(client, messages: 3) }
            #expect(error?.code == .unavailable)
        }
        #expect(rm.received.value == 0)
        #expect(server.state.counters.dropped == 1)
    }

    @Test func aCallerThatNamesNoProcessIsNeverFaulted() async throws {
        let server = injector("rm")
        try server.set(link: (1, 0, 0, 1, 1), cutOff: (["n1", "n2"], .both))
        let rm = FakeRM()
        try await run(client: nil, server: server, rm) { client in
            _ = try await client.status(Dtc_V1_RMStatusRequest(), options: timeout(.seconds(30)))
            let replies = try await exchange(client, messages: 2)
            #expect(replies == 2)
        }
        #expect(rm.statusCalls.value == 1)
        #expect(server.state.counters == FaultCounters())
    }
}

// MARK: - Fixtures

private func injector(_ name: String) -> FaultInjector {
    FaultInjector(process: name, addresses: ["rm:1": "rm", "n1:1": "n1", "n2:1": "n2"])
}

private func timeout(_ duration: Duration) -> CallOptions {
    var options = CallOptions.defaults
    options.timeout = duration
    return options
}

/// A server for `server`'s faults and a client for `client`'s (nil: a client that names no
/// process, like the CLI), connected in process; `body` runs with the RM's client.
private func run(
    client: FaultInjector?, server: FaultInjector, _ rm: FakeRM,
    _ body: @Sendable (Dtc_V1_ResourceManager.Client<InProcessTransport.Client>) async throws -> Void
) async throws {
    let transport = InProcessTransport()
    let grpcServer = GRPCServer(transport: transport.server, services: [rm], interceptors: [FaultServerInterceptor(faults: server)])
    let interceptors: [any ClientInterceptor] = client.map { [FaultClientInterceptor(faults: $0, target: "rm")] } ?? []
    let grpcClient = GRPCClient(transport: transport.client, interceptors: interceptors)
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await grpcServer.serve() }
        group.addTask { try await grpcClient.runConnections() }
        defer {
            grpcClient.beginGracefulShutdown()
            grpcServer.beginGracefulShutdown()
        }
        try await body(Dtc_V1_ResourceManager.Client(wrapping: grpcClient))
    }
}

/// Writes `messages` requests of one PREPARE each, then counts the replies.
private func exchange(_ client: Dtc_V1_ResourceManager.Client<InProcessTransport.Client>, messages: Int) async throws -> Int {
    try await client.exchange { writer in
        for i in 0..<messages {
            try await writer.write(.with { $0.prepares = [.with { $0.txnID = "t\(i)" }] })
        }
    } onResponse: { response in
        var count = 0
        for try await _ in response.messages { count += 1 }
        return count
    }
}

final class Count: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

/// Counts Status calls and stream messages; answers each stream message with one vote per
/// PREPARE.
final class FakeRM: Dtc_V1_ResourceManager.SimpleServiceProtocol {
    let statusCalls = Count()
    let received = Count()
    let order = Mutex<[String]>([])

    func exchange(
        request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
    ) async throws {
        for try await message in request {
            received.add()
            order.withLock { $0 += message.prepares.map(\.txnID) }
            try await response.write(.with { $0.votes = message.prepares.map { prepare in .with { $0.txnID = prepare.txnID; $0.yes = true } } })
        }
    }

    func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse {
        Dtc_V1_ScanResponse()
    }

    func status(request: Dtc_V1_RMStatusRequest, context: ServerContext) async throws -> Dtc_V1_RMStatusResponse {
        statusCalls.add()
        return .with { $0.service = "inventory" }
    }
}
