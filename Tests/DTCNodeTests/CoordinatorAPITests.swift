import DTCClient
import DTCCore
import DTCNode
import DTCWire
import Foundation
import GRPCCore
import Logging
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
        let base = 30_000 + Int(getpid() % 10_000) * 3 % 30_000
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

    func stop() async {
        task.cancel()
        await connections.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A txn ID that the node leads (or, with `ledBy: "n2"`, that it does not).
    func txnID(ledBy node: String) -> String {
        let map = config.partitionMap
        return (0...).lazy.map { "t-\($0)" }.first { map.homeLeader(of: map.partition(of: TxnID($0))) == node }!
    }
}

func reserve(_ rm: String = "inventory", qty: Int64 = 1) -> Dtc_V1_Branch {
    .with {
        $0.rm = rm
        $0.reserve = .with { $0.orderID = "o1"; $0.sku = "sku-0"; $0.qty = qty }
    }
}

func debit(amount: Int64 = 1) -> Dtc_V1_Branch {
    .with {
        $0.rm = "accounts"
        $0.debit = .with { $0.orderID = "o1"; $0.userID = "user-0"; $0.amount = amount }
    }
}

@Suite(.serialized) struct CoordinatorAPITests {
    @Test func invalidSubmissionsGetInvalidArgumentNamingTheFieldAndLogNothing() async throws {
        let node = try await LiveNode.start()
        let id = node.txnID(ledBy: "n1")
        let cases: [(String, [Dtc_V1_Branch], String)] = [
            (id, [], "branches is empty"),
            ("", [reserve()], "txn_id is empty"),
            (String(repeating: "x", count: 129), [reserve()], "txn_id is 129 bytes"),
            (id, [reserve("payments")], "branches[0].rm names unknown RM 'payments'"),
            (id, [reserve("accounts")], "branches[0].op inventory.reserve is not an operation of RM 'accounts'"),
            (id, [reserve(qty: -3)], "branches[0].qty must be positive"),
            (id, [reserve(), debit(amount: 0)], "branches[1].amount must be positive"),
            (id, [reserve(), reserve()], "branches[1].rm duplicates"),
            (id, [.with { $0.rm = "orders" }], "branches[0].op is missing"),
            (id, [.with { $0.rm = "inventory"; $0.reserve = .with { $0.orderID = "o"; $0.sku = String(repeating: "s", count: 10_000); $0.qty = 1 } }],
             "branches[0].sku is over 256 bytes"),
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
        let again = try await node.client().submit(request)
        #expect(again.outcome == outcome)
        #expect(try await node.status().aborted == 1)
        await node.stop()
    }
}
