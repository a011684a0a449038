import DTCCore
import DTCNode
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore
import Logging
import Synchronization
import Testing

/// A real node in this process, serving gRPC on loopback, with no RMs: requests that fail
/// validation must never reach an RM or the log.
struct LiveNode {
    let config: ClusterConfig
    let connections = Connections()
    let task: Task<Void, any Error>
    let directory: String

    static func start() async throws -> LiveNode {
        let directory = NSTemporaryDirectory() + "dtc-node-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Each node of this process gets ports of its own: a node just stopped may still hold
        // its port while the next one starts. 20000–26000: below the kernel's ephemeral ports
        // (32768+), which busy outgoing connections may hold, and below the scripts' (27100+).
        let base = 20_000 + Int(getpid() % 300) * 20 + instances.add(1, ordering: .relaxed).oldValue % 6 * 3
        let json = """
            {"partitions": 16, "replicationFactor": 1, "virtualNodes": 64,
             "nodes": [{"name": "n1", "host": "127.0.0.1", "port": \(base), "dataDir": "n1"},
                       {"name": "n2", "host": "127.0.0.1", "port": \(base + 1), "dataDir": "n2"}],
             "rms": [{"name": "inventory", "service": "inventory", "host": "127.0.0.1", "port": \(base + 2), "dataDir": "i"},
                     {"name": "orders", "service": "orders", "host": "127.0.0.1", "port": \(base + 2), "dataDir": "o"},
                     {"name": "accounts", "service": "accounts", "host": "127.0.0.1", "port": \(base + 2), "dataDir": "a"}],
             "seed": {"skus": 1, "unitsPerSku": 1, "users": 1, "centsPerUser": 1},
             "timing": {"tickMs": 20, "prepareTimeoutMs": 500, "lockWaitTimeoutMs": 100, "decisionRetryInitialMs": 50,
                        "decisionRetryMaxMs": 500, "inquiryAfterMs": 1000, "rpcTimeoutMs": 2000,
                        "heartbeatMs": 50, "suspicionTimeoutMs": 500, "logRetentionMs": 60000}}
            """
        try json.write(toFile: directory + "/cluster.json", atomically: true, encoding: .utf8)
        let config = try ClusterConfig.load(path: directory + "/cluster.json")
        let task = Task { try await runNode(config: config, name: "n1", logger: Logger(label: "test")) }
        let node = LiveNode(config: config, task: task, directory: directory)
        try await node.waitUntilServing()
        return node
    }

    var address: String { config.node(named: "n1")!.address }

    func client() throws -> Dtc_V1_Coordinator.Client<Transport> { try connections.coordinator(address) }

    func status() async throws -> Dtc_V1_StatusResponse { try await client().status(Dtc_V1_StatusRequest()) }

    /// Polls Status until the node leads its partitions (bounded): with its one peer down, it
    /// takes them over once the suspicion timeout has passed.
    private func waitUntilServing() async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let status = try? await status(), !status.partitions.isEmpty { return }
            try await Task.sleep(for: .milliseconds(25))
        }
        Issue.record("node did not start leading its partitions")
    }

    private static let instances = Atomic<Int>(0)

    /// The test's connections close first: a server cancelled while a client's connection is
    /// open can trap in NIO when that connection then ends ("Deinited NIOAsyncWriter without
    /// calling finish()", apple/swift-nio#3481).
    func stop() async {
        await connections.close()
        task.cancel()
        _ = await task.result
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A txn ID that the node leads (or, with `ledBy: "n2"`, that it does not).
    func txnID(ledBy node: String) -> String {
        let map = config.partitionMap
        return (0...).lazy.map { "t-\($0)" }.first { map.homeLeader(of: map.partition(of: TxnID($0))) == node }!
    }
}

/// A branch with an opaque payload: the node never reads it.
func branch(_ rm: String = "inventory", kind: String = "reserve", payload: [UInt8] = Array("o1 sku-0 1".utf8)) -> Dtc_V1_Branch {
    .with {
        $0.rm = rm
        $0.kind = kind
        $0.payload = Data(payload)
    }
}

func reserve() -> Dtc_V1_Branch { branch() }

func debit() -> Dtc_V1_Branch { branch("accounts", kind: "debit", payload: Array("o1 user-0 1".utf8)) }

@Suite(.serialized) struct CoordinatorAPITests {
    @Test func invalidSubmissionsGetInvalidArgumentNamingTheFieldAndLogNothing() async throws {
        let node = try await LiveNode.start()
        let id = node.txnID(ledBy: "n1")
        let cases: [(String, [Dtc_V1_Branch], String)] = [
            (id, [], "branches is empty"),
            ("", [reserve()], "txn_id is empty"),
            (String(repeating: "x", count: 129), [reserve()], "txn_id is 129 bytes"),
            (id, [branch("payments")], "branches[0].rm names unknown participant 'payments'"),
            (id, [reserve(), reserve()], "branches[1].rm duplicates the branch for participant 'inventory'"),
            (id, [reserve(), branch("orders", kind: "")], "branches[1].kind is empty"),
            (id, [branch(kind: String(repeating: "k", count: 65))], "branches[0].kind is 65 bytes, over the limit of 64"),
            (id, [branch(payload: [])], "branches[0].payload is empty"),
            (id, [reserve(), branch("orders", payload: [UInt8](repeating: 7, count: 65_537))], "branches[1].payload is 65537 bytes, over the limit of 65536"),
            (id, (0..<17).map { branch("rm\($0)") }, "branches has 17 entries, over 16"),
        ]
        for (txnID, branches, expected) in cases {
            let request = Dtc_V1_SubmitRequest.with { $0.txnID = txnID; $0.branches = branches }
            let error = await #expect(throws: RPCError.self) { try await node.client().submit(request) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(expected) == true, "message '\(error?.message ?? "")' should contain '\(expected)'")
        }
        let status = try await node.status()
        #expect(status.logRecords == 0)
        #expect(status.inFlight == 0)
        await node.stop()
    }

    @Test func unknownTxnIsNotFoundAndForeignTxnIsRedirectedToItsLeader() async throws {
        let node = try await LiveNode.start()
        let error = await #expect(throws: RPCError.self) {
            try await node.client().getTxn(.with { $0.txnID = node.txnID(ledBy: "n1") })
        }
        #expect(error?.code == .notFound)

        let foreign = node.txnID(ledBy: "n2")
        let response = try await node.client().submit(.with { $0.txnID = foreign; $0.branches = [reserve()] })
        guard case .redirect(let redirect) = response.result else {
            Issue.record("expected a redirect, got \(response)")
            return
        }
        #expect(redirect.node == "n2")
        #expect(redirect.address == node.config.node(named: "n2")!.address)
        #expect(try await node.status().logRecords == 0)
        await node.stop()
    }

    @Test func aSubmitStreamAnswersEverySubmitByItsNumberAsUnarySubmitWould() async throws {
        let node = try await LiveNode.start()
        let led = node.txnID(ledBy: "n1")
        let foreign = node.txnID(ledBy: "n2")
        let batch = Dtc_V1_SubmitBatch.with {
            $0.submits = [
                .with { $0.id = 7; $0.request = .with { $0.txnID = led; $0.branches = [reserve(), debit()] } },
                .with { $0.id = 8; $0.request = .with { $0.txnID = ""; $0.branches = [reserve()] } },
                .with { $0.id = 9; $0.request = .with { $0.txnID = foreign; $0.branches = [reserve()] } },
            ]
        }
        let answers = try await node.client().submitStream { writer in
            try await writer.write(batch)
        } onResponse: { response in
            var answers: [UInt64: Dtc_V1_SubmitAnswer] = [:]
            for try await message in response.messages {
                for answer in message.answers { answers[answer.id] = answer }
            }
            return answers
        }
        #expect(Set(answers.keys) == [7, 8, 9], "one answer per submit, by its number")
        #expect(answers[7]?.errorCode == 0 && answers[7]?.response.outcome.state == .aborted, "RMs unreachable: \(String(describing: answers[7]))")
        #expect(answers[8]?.errorCode == Int32(RPCError.Code.invalidArgument.rawValue))
        #expect(answers[8]?.errorMessage.contains("txn_id is empty") == true)
        #expect(answers[9]?.response.redirect.node == "n2")
        let unary = try await node.client().submit(batch.submits[0].request)
        #expect(unary.outcome == answers[7]?.response.outcome, "the same answer as a unary Submit")
        await node.stop()
    }

    @Test func unreachableRMMakesTheTxnAbortWithTheReasonAndSubmitIsIdempotent() async throws {
        let node = try await LiveNode.start()
        let id = node.txnID(ledBy: "n1")
        let request = Dtc_V1_SubmitRequest.with { $0.txnID = id; $0.branches = [reserve(), debit()] }
        let first = try await node.client().submit(request)
        guard case .outcome(let outcome) = first.result else {
            Issue.record("expected an outcome, got \(first)")
            return
        }
        #expect(outcome.state == .aborted)
        #expect(outcome.reason.contains("unreachable") || outcome.reason.contains("prepare timeout"))
        #expect([.unavailable, .timeout].contains(outcome.abortCause), "abort cause \(outcome.abortCause)")
        let again = try await node.client().submit(request)
        #expect(again.outcome == outcome)
        #expect(try await node.status().aborted == 1)
        await node.stop()
    }

    @Test func aTxnIDSubmittedAgainWithOtherBranchesIsRefusedAndTheRecordedAnswerStays() async throws {
        let node = try await LiveNode.start()
        let id = node.txnID(ledBy: "n1")
        let request = Dtc_V1_SubmitRequest.with { $0.txnID = id; $0.branches = [reserve(), debit()] }
        let first = try await node.client().submit(request)
        let changes: [[Dtc_V1_Branch]] = [
            [reserve()],
            [reserve(), branch("accounts", kind: "debit", payload: Array("o1 user-0 2".utf8))],
            [reserve(), branch("orders", kind: "debit", payload: Array("o1 user-0 1".utf8))],
        ]
        for branches in changes {
            let error = await #expect(throws: RPCError.self) {
                try await node.client().submit(.with { $0.txnID = id; $0.branches = branches })
            }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message.contains("taken by a different txn") == true, "\(error?.message ?? "")")
        }
        #expect(try await node.client().submit(request).outcome == first.outcome, "the same branches get the recorded answer")
        await node.stop()
    }

    @Test func resolveNamingAnotherPartitionIsRefusedAtOnceAndRecordsNothing() async throws {
        let node = try await LiveNode.start()
        let id = node.txnID(ledBy: "n1")
        let own = node.config.partitionMap.partition(of: TxnID(id))
        let other = (own + 1) % UInt32(node.config.partitions)
        let error = await #expect(throws: RPCError.self) {
            try await node.client().resolve(.with { $0.txnID = id; $0.partition = other })
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("is not the partition of txn") == true, "\(error?.message ?? "")")
        let status = try await node.status()
        #expect(status.logRecords == 0 && status.aborted == 0)
        await node.stop()
    }

    @Test func getTxnShowsEachBranchsKindAndPayloadSizeButNotThePayload() async throws {
        let node = try await LiveNode.start()
        let id = node.txnID(ledBy: "n1")
        _ = try await node.client().submit(.with { $0.txnID = id; $0.branches = [reserve(), debit()] })
        guard case .txn(let detail) = try await node.client().getTxn(.with { $0.txnID = id }).result else {
            Issue.record("expected the txn")
            return
        }
        #expect(detail.branches.map(\.rm) == ["inventory", "accounts"])
        #expect(detail.branches.map(\.kind) == ["reserve", "debit"])
        #expect(detail.branches.map(\.payloadBytes) == [10, 11])
        await node.stop()
    }
}
