import Testing

@testable import DTCCore

/// Three participants and one txn's branches. The core never reads a payload, so these are
/// just bytes; `StockLogic` below reads the inventory's.
enum RM {
    static let inventory = "inventory"
    static let orders = "orders"
    static let accounts = "accounts"
}

extension Branch {
    static let inventory = Branch(rm: RM.inventory, kind: "reserve", payload: Array("o1 apple 2".utf8))
    static let orders = Branch(rm: RM.orders, kind: "create-order", payload: Array("o1 ada apple 2 300".utf8))
    static let accounts = Branch(rm: RM.accounts, kind: "debit", payload: Array("o1 ada 300".utf8))
}

/// A 3-branch order, the shape of most transcripts.
let order: [Branch] = [.inventory, .orders, .accounts]
let allRMs = order.map(\.rm)

/// The epoch n1 holds for partition 0 in the fixtures.
let epoch1 = Epoch(counter: 1, node: 1)
let n1Sender = Sender(partition: 0, epoch: epoch1, node: "n1")

extension Coordinator {
    /// n1 leading partition 0 at `epoch1`.
    static func fixture(node: String = "n1", nodeIndex: NodeIndex = 1, limits: Limits = .standard) -> Coordinator {
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

func decisionRecord(_ id: String, _ outcome: Outcome, reason: AbortReason = .none, epoch: Epoch = epoch1) -> PartitionRecord {
    PartitionRecord(partition: 0, record: .decision(txnID: TxnID(id), outcome: outcome, reason: reason, epoch: epoch))
}

func endRecord(_ id: String) -> PartitionRecord {
    PartitionRecord(partition: 0, record: .end(txnID: TxnID(id)))
}

func prepares(_ id: String, stamp: StartStamp, _ branches: [Branch] = order, sender: Sender = n1Sender) -> [Envelope] {
    branches.map { .prepare(rm: $0.rm, PrepareMessage(txnID: TxnID(id), stamp: stamp, sender: sender, branch: $0, participants: branches.map(\.rm))) }
}

func decisions(_ id: String, _ outcome: Outcome, to rms: [String] = allRMs, sender: Sender = n1Sender) -> [Envelope] {
    rms.map { .decision(rm: $0, DecisionMessage(txnID: TxnID(id), outcome: outcome, sender: sender)) }
}

/// A reply after `attempts` attempts (1 unless retried; 0 where the coordinator does not know).
func reply(_ id: String, _ status: TxnStatus, attempts: Attempt = 1) -> ClientReply { ClientReply(txnID: TxnID(id), status: status, attempts: attempts) }

extension TxnStatus {
    /// The reason of an abort, nil otherwise.
    var abortReason: AbortReason? {
        if case .aborted(let reason) = self { return reason }
        return nil
    }
}

extension ClientReply {
    var abortReason: AbortReason? { status.abortReason }
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

/// A participant's logic for the transcripts: a payload "ORDER SKU QTY" reserves QTY units of
/// SKU for ORDER; stock counts are decimal text under "stock/SKU", reservations "resv/ORDER".
struct StockLogic: ParticipantLogic {
    struct Malformed: Error, CustomStringConvertible {
        var description: String { "payload is not 'ORDER SKU QTY'" }
    }

    func parse(_ branch: Branch) throws -> (order: String, sku: String, qty: Int) {
        let words = String(decoding: branch.payload, as: UTF8.self).split(separator: " ").map(String.init)
        guard words.count == 3, let qty = Int(words[2]) else { throw Malformed() }
        return (words[0], words[1], qty)
    }

    func keys(for branch: Branch) throws -> [String] {
        let (order, sku, _) = try parse(branch)
        return ["stock/\(sku)", "resv/\(order)"]
    }

    func plan(_ branch: Branch, committed: [String: [UInt8]]) throws -> [Write] {
        let (order, sku, qty) = try parse(branch)
        guard committed["resv/\(order)"] == nil else { throw PlanRefusal("order \(order) already has a reservation") }
        guard let bytes = committed["stock/\(sku)"], let stock = Int(String(decoding: bytes, as: UTF8.self)) else {
            throw PlanRefusal("unknown sku \(sku)")
        }
        guard stock >= qty else { throw PlanRefusal("insufficient stock for \(sku): \(stock) < \(qty)") }
        return [Write(key: "stock/\(sku)", value: Array(String(stock - qty).utf8)), Write(key: "resv/\(order)", value: Array(String(qty).utf8))]
    }
}

let stockLogic = StockLogic()

/// An inventory's committed state: 10 apples.
let appleStock: [String: [UInt8]] = ["stock/apple": Array("10".utf8)]

func stock(_ units: Int) -> [UInt8] { Array(String(units).utf8) }

/// A PREPARE for an inventory reservation; orders with different IDs on the same SKU share the
/// stock key, so they conflict.
func prepareMessage(
    _ id: String, stamp: StartStamp, orderID: String = "o1", sku: String = "apple", qty: Int64 = 2,
    epoch: Epoch = epoch1
) -> PrepareMessage {
    PrepareMessage(
        txnID: TxnID(id), stamp: stamp, sender: Sender(partition: 0, epoch: epoch, node: "n1"),
        branch: Branch(rm: RM.inventory, kind: "reserve", payload: Array("\(orderID) \(sku) \(qty)".utf8)),
        participants: [RM.inventory, RM.accounts])
}

func decisionMessage(_ id: String, _ outcome: Outcome, epoch: Epoch = epoch1) -> DecisionMessage {
    DecisionMessage(txnID: TxnID(id), outcome: outcome, sender: Sender(partition: 0, epoch: epoch, node: "n1"))
}

/// The route every transcript's coordinator stream has.
let coordinatorRoute: ReplyRoute = 1

extension ParticipantMachine {
    /// PREPARE from the coordinator's stream, with `StockLogic`'s keys; `ledger` is the durable
    /// ledger the shell would read.
    mutating func prepare(_ message: PrepareMessage, now: UInt64, ledger: [TxnID: LedgerEntry] = [:]) -> ParticipantOutput {
        prepare(message, keys: stockLogic.lockKeys(for: message.branch), replyTo: coordinatorRoute, now: now) { ledger[$0] }
    }

    mutating func decide(_ message: DecisionMessage, now: UInt64, ledger: [TxnID: LedgerEntry] = [:]) -> ParticipantOutput {
        decide(message, replyTo: coordinatorRoute, now: now) { ledger[$0] }
    }

    /// The shell reports the prepared record of `txnID` durable (the machine reads only its ID).
    mutating func preparedDurable(_ txnID: TxnID, now: UInt64) -> ParticipantOutput {
        let record = PreparedTxn(txnID: txnID, stamp: 0, sender: n1Sender, kind: "", keys: [], writes: [], participants: [])
        return recordsDurable([.prepared(record)], now: now)
    }

    mutating func decisionDurable(_ txnID: TxnID, now: UInt64) -> ParticipantOutput {
        recordsDurable([.aborted(txnID: txnID, attempt: .max, epoch: .zero, seenEpoch: .zero, participants: [])], now: now)
    }

    /// Runs PREPARE → plan against `committed` → prepared durable, as the library's shell does,
    /// and returns the prepared txn. Fails the test if any step does not go that way.
    mutating func prepared(
        _ message: PrepareMessage, committed: [String: [UInt8]] = appleStock, now: UInt64 = 0
    ) throws -> PreparedTxn {
        let asked = prepare(message, now: now)
        let request = try #require(asked.plans.first { $0.txnID == message.txnID })
        let plan = stockLogic.planned(request.branch, committed: committed.filter { request.keys.contains($0.key) })
        let persisted = planned(message.txnID, plan, now: now)
        guard case .prepared(let txn) = try #require(persisted.recordsToPersist.first) else {
            Issue.record("expected a prepared record, got \(persisted)")
            throw FixtureError.notAccepted
        }
        let voted = preparedDurable(message.txnID, now: now)
        #expect(voted.votes == [VoteReply(txnID: message.txnID, vote: .yes, attempt: message.attempt)])
        return txn
    }
}

extension ParticipantOutput {
    /// Votes and acks, whatever their route (every transcript has one coordinator).
    var votes: [VoteReply] {
        replies.compactMap { if case .vote(let vote) = $0.reply { return vote } else { return nil } }
    }

    var acks: [AckReply] {
        replies.compactMap { if case .ack(let ack) = $0.reply { return ack } else { return nil } }
    }

    /// The keys of each txn the machine asks the shell to plan.
    var reads: [TxnID: [String]] {
        Dictionary(uniqueKeysWithValues: plans.map { ($0.txnID, $0.keys) })
    }
}

extension Vote {
    var noReason: String? {
        if case .no(let reason) = self { return reason.text }
        return nil
    }
}


extension AbortReason {
    /// A business NO with `text`, for transcripts.
    static func refused(_ text: String) -> AbortReason { AbortReason(.refused, text) }
}
