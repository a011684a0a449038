// An application makes a Router from DTCRuntime's ClusterConfig and Connections and submits
// DTCCore's Branches, so `import DTCRouter` brings both.
@_exported import DTCCore
@_exported import DTCRuntime
import DTCWire
import GRPCCore
import Synchronization

/// What a client finally learns about a txn.
public struct SubmitOutcome: Sendable {
    public var status: TxnStatus
    public var node: String
    public var partition: UInt32
    /// How many times the txn was sent (1 = no retry).
    public var attempts: Int
    /// Attempts the coordinator made to prepare it (0: not known).
    public var coordinatorAttempts: UInt32 = 0
}

public enum RouterError: Error, CustomStringConvertible, Sendable {
    /// The request itself is wrong; retrying cannot help.
    case rejected(code: RPCError.Code, message: String)
    /// The outcome is unknown after every retry (node down, timeouts).
    case unknownOutcome(lastError: String)

    public var description: String {
        switch self {
        case .rejected(let code, let message): "\(code): \(message)"
        case .unknownOutcome(let lastError): "outcome unknown: \(lastError)"
        }
    }
}

/// Sends client requests to the node that leads a txn's partition, follows redirects and
/// retries with the same txnID when the outcome is unknown: resubmitting is idempotent, so a
/// retried order is never applied twice.
public struct Router: Sendable {
    public let config: ClusterConfig
    public let connections: Connections
    private let map: PartitionMap
    /// The leader address last seen per partition (from redirects and answers), so that after
    /// a takeover requests go straight to the new leader.
    private let leaders: LeaderCache
    /// Submits go on one long-lived stream per node instead of a unary call each.
    private let streams: SubmitStreams?

    /// With `submitStreams`, submits travel on one long-lived SubmitStream per node, many per
    /// message (less CPU per txn on both sides); without, each is a unary Submit.
    public init(config: ClusterConfig, connections: Connections, submitStreams: Bool = false) {
        self.config = config
        self.connections = connections
        self.map = config.partitionMap
        self.leaders = LeaderCache()
        self.streams = submitStreams ? SubmitStreams(connections: connections) : nil
    }

    public func partition(of txnID: TxnID) -> UInt32 { map.partition(of: txnID) }

    /// Ends the router's submit streams (if it uses them) once what was sent is answered; call
    /// it before closing the connections, which wait for open calls to end.
    public func finish() {
        streams?.finish()
    }

    /// Submits until the outcome is known or `retryFor` has passed.
    public func submit(_ txnID: TxnID, branches: [Branch], retryFor: Duration = .seconds(60)) async throws(RouterError) -> SubmitOutcome {
        var request = Dtc_V1_SubmitRequest()
        request.txnID = txnID.rawValue
        request.branches = branches.map(\.wire)
        let result = try await retrying(txnID, for: retryFor) { address -> Answer<Dtc_V1_TxnOutcome> in
            let response = if let streams {
                try await streams.submit(request, to: address, timeout: .milliseconds(config.timing.rpcTimeoutMs))
            } else {
                try await connections.coordinator(address).submit(request, options: callOptions)
            }
            switch response.result {
            case .outcome(let outcome): return .value(outcome)
            case .redirect(let redirect): return .redirect(redirect)
            case nil: return .empty
            }
        }
        let outcome = result.value
        guard let status = TxnStatus(wire: outcome) else {
            throw .unknownOutcome(lastError: "answer without a state from \(outcome.node)")
        }
        return SubmitOutcome(
            status: status, node: outcome.node, partition: outcome.partition, attempts: result.attempts, coordinatorAttempts: outcome.attempts)
    }

    public func txn(_ txnID: TxnID) async throws(RouterError) -> Dtc_V1_TxnDetail {
        var request = Dtc_V1_GetTxnRequest()
        request.txnID = txnID.rawValue
        return try await retrying(txnID, for: .seconds(5)) { address -> Answer<Dtc_V1_TxnDetail> in
            switch try await connections.coordinator(address).getTxn(request, options: callOptions).result {
            case .txn(let detail): .value(detail)
            case .redirect(let redirect): .redirect(redirect)
            case nil: .empty
            }
        }.value
    }

    /// Termination protocol: how `txnID` ended, asked of its partition's leader.
    public func resolve(_ txnID: TxnID, partition: UInt32) async throws(RouterError) -> TxnStatus {
        var request = Dtc_V1_ResolveRequest()
        request.txnID = txnID.rawValue
        request.partition = partition
        let outcome = try await retrying(txnID, for: .seconds(2)) { address -> Answer<Dtc_V1_TxnOutcome> in
            switch try await connections.coordinator(address).resolve(request, options: callOptions).result {
            case .outcome(let outcome): .value(outcome)
            case .redirect(let redirect): .redirect(redirect)
            case nil: .empty
            }
        }.value
        guard let status = TxnStatus(wire: outcome) else { throw .unknownOutcome(lastError: "answer without a state") }
        return status
    }

    public func status(ofNode address: String) async throws -> Dtc_V1_StatusResponse {
        try await connections.coordinator(address).status(Dtc_V1_StatusRequest(), options: callOptions)
    }

    public var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .milliseconds(config.timing.rpcTimeoutMs)
        options.waitForReady = false
        return options
    }

    // MARK: - Retry and redirect

    private enum Answer<Value: Sendable>: Sendable {
        case value(Value)
        case redirect(Dtc_V1_Redirect)
        case empty
    }

    /// Calls the txn's home node, follows redirects, and retries with capped backoff on errors
    /// that leave the outcome unknown, until `budget` has passed.
    private func retrying<Value: Sendable>(
        _ txnID: TxnID, for budget: Duration, _ call: (String) async throws -> Answer<Value>
    ) async throws(RouterError) -> (value: Value, attempts: Int) {
        let clock = ContinuousClock()
        let deadline = clock.now + budget
        // The partition's replica group, home leader first: when a node is down or has lost the
        // partition, the next member is asked (and redirects to the leader it knows).
        let partition = partition(of: txnID)
        let group = map.replicaGroup(of: partition).compactMap { config.node(named: $0)?.address }
        var next = 1
        var address = leaders.leader(of: partition) ?? group[0]
        var attempts = 0
        var backoff = Duration.milliseconds(25)
        var lastError = "no attempt made"
        // What a live node said (e.g. "partition 7 has no quorum") is worth more than the
        // connection error of the last node tried.
        var lastRefusal: String?
        repeat {
            attempts += 1
            do {
                switch try await call(address) {
                case .value(let value):
                    leaders.remember(address, for: partition)
                    return (value, attempts)
                case .redirect(let redirect) where redirect.address != address:
                    // Following a redirect is not a retry.
                    address = redirect.address
                    attempts -= 1
                    continue
                case .redirect(let redirect):
                    lastError = "\(redirect.node) redirects to itself"
                case .empty:
                    lastError = "empty answer from \(address)"
                }
            } catch let error as RPCError where !Self.isRetriable(error.code) {
                throw .rejected(code: error.code, message: error.message)
            } catch {
                lastError = "\(address): \(shortDescription(of: error))"
                if let rpc = error as? RPCError, rpc.message.hasPrefix("partition ") { lastRefusal = lastError }
                leaders.forget(partition)
                address = group[next % group.count]
                next += 1
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, Self.backoffMax)
        } while clock.now < deadline
        throw .unknownOutcome(lastError: lastRefusal ?? lastError)
    }

    /// The longest pause between retries. A takeover takes the suspicion timeout (800 ms by
    /// default) and a few hundred ms more; with a cap of a second, a txn whose leader died was
    /// retried 0.8 s and then 1.6 s after the kill and so came back a second late. A retry
    /// that finds no leader yet costs one refusal.
    static let backoffMax = Duration.milliseconds(200)

    static func isRetriable(_ code: RPCError.Code) -> Bool {
        switch code {
        case .unavailable, .deadlineExceeded, .resourceExhausted, .cancelled, .unknown, .aborted, .internalError: true
        default: false
        }
    }
}

/// Partition → leader address, shared by all of a router's requests.
final class LeaderCache: Sendable {
    private let addresses = Mutex<[UInt32: String]>([:])

    func leader(of partition: UInt32) -> String? { addresses.withLock { $0[partition] } }
    func remember(_ address: String, for partition: UInt32) { addresses.withLock { $0[partition] = address } }
    func forget(_ partition: UInt32) { _ = addresses.withLock { $0.removeValue(forKey: partition) } }
}
