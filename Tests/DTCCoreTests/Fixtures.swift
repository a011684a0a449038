import Testing

@testable import DTCCore

/// The three built-in RMs and one order's branches: reserve stock, create the order, debit.
enum RM {
    static let inventory = "inventory"
    static let orders = "orders"
    static let accounts = "accounts"
}

extension Branch {
    static let inventory = Branch(rm: RM.inventory, op: .reserve(orderID: "o1", sku: "apple", qty: 2))
    static let orders = Branch(
        rm: RM.orders, op: .createOrder(orderID: "o1", userID: "ada", sku: "apple", qty: 2, amount: 300))
    static let accounts = Branch(rm: RM.accounts, op: .debit(orderID: "o1", userID: "ada", amount: 300))
}

/// A 3-branch order, the shape of most transcripts.
let order: [Branch] = [.inventory, .orders, .accounts]
let allRMs = order.map(\.rm)

/// The epoch n1 holds for partition 0 in the fixtures.
let epoch1 = Epoch(counter: 1, node: 1)
let n1Sender = Sender(partition: 0, epoch: epoch1, node: "n1")

extension Coordinator {
    /// n1 leading partition 0 at `epoch1`.
    static func fixture(node: String = "n1", nodeIndex: UInt32 = 1, limits: Limits = .standard) -> Coordinator {
        Coordinator(node: node, nodeIndex: nodeIndex, epochs: [0: epoch1], limits: limits)
    }

    /// Submits to partition 0 and fails the test if the coordinator is overloaded.
    mutating func submit(
        _ id: String, _ branches: [Branch] = order, now: UInt64 = 0, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> CoordinatorOutput {
        let result = submit(TxnID(id), branches: branches, partition: 0, now: now)
        guard case .accepted(let output) = result else {
            Issue.record("submit of \(id) was not accepted: \(result)", sourceLocation: sourceLocation)
            throw FixtureError.notAccepted
        }
        return output
    }

    /// Every branch votes `.yes`, in order; returns the output of the last vote.
    mutating func allVoteYes(_ id: String, _ branches: [Branch] = order, now: UInt64 = 0) -> CoordinatorOutput {
        var output = CoordinatorOutput()
        for branch in branches { output = voteReceived(.yes, txn: TxnID(id), from: branch.rm, now: now) }
        return output
    }

    /// Every RM acks; returns the output of the last ack.
    mutating func allAck(_ id: String, _ rms: [String] = allRMs) -> CoordinatorOutput {
        var output = CoordinatorOutput()
        for rm in rms { output = ackReceived(txn: TxnID(id), from: rm) }
        return output
    }

    func status(of id: String) -> TxnStatus? { snapshot(of: TxnID(id))?.status }
}

enum FixtureError: Error { case notAccepted, noStartRecord }

/// The stamp in the START record `output` appends.
func startStamp(in output: CoordinatorOutput) throws -> StartStamp {
    for entry in output.recordsToAppend {
        if case .start(_, _, let stamp, _) = entry.record { return stamp }
    }
    throw FixtureError.noStartRecord
}

func startRecord(_ id: String, stamp: StartStamp, branches: [Branch] = order, epoch: Epoch = epoch1) -> PartitionRecord {
    PartitionRecord(partition: 0, record: .start(txnID: TxnID(id), epoch: epoch, stamp: stamp, branches: branches))
}

func decisionRecord(_ id: String, _ outcome: Outcome, reason: String = "", epoch: Epoch = epoch1) -> PartitionRecord {
    PartitionRecord(partition: 0, record: .decision(txnID: TxnID(id), outcome: outcome, reason: reason, epoch: epoch))
}

func endRecord(_ id: String) -> PartitionRecord {
    PartitionRecord(partition: 0, record: .end(txnID: TxnID(id)))
}

func prepares(_ id: String, stamp: StartStamp, _ branches: [Branch] = order, sender: Sender = n1Sender) -> [Envelope] {
    branches.map { .prepare(rm: $0.rm, PrepareMessage(txnID: TxnID(id), stamp: stamp, sender: sender, branch: $0)) }
}

func decisions(_ id: String, _ outcome: Outcome, to rms: [String] = allRMs, sender: Sender = n1Sender) -> [Envelope] {
    rms.map { .decision(rm: $0, DecisionMessage(txnID: TxnID(id), outcome: outcome, sender: sender)) }
}

func reply(_ id: String, _ status: TxnStatus) -> ClientReply { ClientReply(txnID: TxnID(id), status: status) }

extension TxnStatus {
    /// The reason of an abort, nil otherwise.
    var abortReason: String? {
        if case .aborted(let reason) = self { return reason }
        return nil
    }
}

extension ClientReply {
    var abortReason: String? { status.abortReason }
}

/// A node's coordinator and the log it has appended so far: what survives a crash.
struct CoordinatorNode {
    var coordinator: Coordinator
    private(set) var log: [PartitionRecord] = []
    private var restarts: UInt64 = 0

    init(_ coordinator: Coordinator = .fixture()) { self.coordinator = coordinator }

    /// Appends what `output` asks to append (as a shell would, before sending) and returns it.
    @discardableResult
    mutating func apply(_ output: CoordinatorOutput) -> CoordinatorOutput {
        log += output.recordsToAppend
        return output
    }

    /// Loses the in-memory state; a fresh coordinator takes partition 0 over at a higher
    /// epoch with the rows of its own log, as a restarted dtc-node does.
    mutating func crashAndRecover(now: UInt64) -> CoordinatorOutput {
        restarts += 1
        coordinator = Coordinator(node: coordinator.node, nodeIndex: coordinator.nodeIndex, epochs: [:], limits: coordinator.limits)
        var rows: [TxnID: TxnRow] = [:]
        for entry in log { rows[entry.record.txnID, default: TxnRow(txnID: entry.record.txnID)].apply(entry.record) }
        let epoch = Epoch(counter: 1 + restarts, node: 1)
        return apply(coordinator.takeOver(partition: 0, epoch: epoch, rows: rows.values.sorted { $0.txnID < $1.txnID }, now: now))
    }
}

// MARK: - Participant

/// An inventory RM's committed state: 10 apples.
let appleStock: [String: StateValue] = [StateKey.stock("apple"): .count(10)]

/// A PREPARE for an inventory reservation; orders with different IDs on the same SKU share the
/// stock key, so they conflict.
func prepareMessage(
    _ id: String, stamp: StartStamp, orderID: String = "o1", sku: String = "apple", qty: Int64 = 2,
    epoch: Epoch = epoch1
) -> PrepareMessage {
    PrepareMessage(
        txnID: TxnID(id), stamp: stamp, sender: Sender(partition: 0, epoch: epoch, node: "n1"),
        branch: Branch(rm: RM.inventory, op: .reserve(orderID: orderID, sku: sku, qty: qty)))
}

func decisionMessage(_ id: String, _ outcome: Outcome, epoch: Epoch = epoch1) -> DecisionMessage {
    DecisionMessage(txnID: TxnID(id), outcome: outcome, sender: Sender(partition: 0, epoch: epoch, node: "n1"))
}

extension Participant {
    /// Runs PREPARE → read → plan against `committed` → prepared durable, as the RM shell does,
    /// and returns the prepared txn. Fails the test if any step does not go that way.
    mutating func prepared(
        _ message: PrepareMessage, committed: [String: StateValue] = appleStock, now: UInt64 = 0
    ) throws -> PreparedTxn {
        let asked = prepare(message, now: now)
        let keys = try #require(asked.reads[message.txnID])
        let plan = ServiceLogic.plan(message.branch.op, committed: committed.filter { keys.contains($0.key) })
        let persisted = planned(message.txnID, plan, now: now)
        guard case .prepared(let txn) = try #require(persisted.recordsToPersist.first) else {
            Issue.record("expected a prepared record, got \(persisted)")
            throw FixtureError.notAccepted
        }
        let voted = preparedDurable(message.txnID, now: now)
        #expect(voted.votes == [VoteReply(txnID: message.txnID, vote: .yes)])
        return txn
    }
}

extension Vote {
    var noReason: String? {
        if case .no(let reason) = self { return reason }
        return nil
    }
}

