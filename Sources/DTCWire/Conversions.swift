import DTCCore
import Foundation

/// Conversions between the wire types and the core's types. Decoding validates: a message
/// from the network is untrusted until it has been through here.

extension Branch {
    /// The branch as sent; `validateSubmission` checks names, sizes and duplicates.
    public init(wire: Dtc_V1_Branch) {
        self.init(rm: wire.rm, kind: wire.kind, payload: [UInt8](wire.payload))
    }

    public var wire: Dtc_V1_Branch {
        .with {
            $0.rm = rm
            $0.kind = kind
            $0.payload = Data(payload)
        }
    }
}

extension Sender {
    public init(wire: Dtc_V1_Sender) {
        self.init(partition: wire.partition, epoch: Epoch(counter: wire.epochCounter, node: wire.epochNode), node: wire.node)
    }

    public var wire: Dtc_V1_Sender {
        .with {
            $0.partition = partition
            $0.epochCounter = epoch.counter
            $0.epochNode = epoch.node
            $0.node = node
        }
    }
}

extension PrepareMessage {
    public init(wire: Dtc_V1_Prepare) throws(ValidationError) {
        let id = try TxnID(validating: wire.txnID)
        guard !wire.branch.kind.isEmpty else { throw .invalid(field: "branch.kind", reason: "is empty") }
        self.init(
            txnID: id, stamp: wire.startStamp, attempt: wire.attempt, sender: Sender(wire: wire.sender), branch: Branch(wire: wire.branch),
            participants: wire.participants)
    }

    public var wire: Dtc_V1_Prepare {
        .with {
            $0.txnID = txnID.rawValue
            $0.startStamp = stamp
            $0.attempt = attempt
            $0.sender = sender.wire
            $0.branch = branch.wire
            $0.participants = participants
        }
    }
}

extension DecisionMessage {
    public init(wire: Dtc_V1_Decision) throws(ValidationError) {
        let id = try TxnID(validating: wire.txnID)
        if wire.hasRolledBackAttempt && wire.commit {
            throw .invalid(field: "rolled_back_attempt", reason: "is set on a COMMIT (only a rollback names an attempt)")
        }
        self.init(
            txnID: id, outcome: wire.commit ? .commit : .abort, sender: Sender(wire: wire.sender),
            rolledBackAttempt: wire.hasRolledBackAttempt ? wire.rolledBackAttempt : nil)
    }

    public var wire: Dtc_V1_Decision {
        .with {
            $0.txnID = txnID.rawValue
            $0.commit = outcome == .commit
            $0.sender = sender.wire
            if let rolledBackAttempt { $0.rolledBackAttempt = rolledBackAttempt }
        }
    }
}

extension Vote {
    public init(wire: Dtc_V1_Vote) {
        // A participant that names no cause refused for its own reasons.
        let cause = AbortCause(wire: wire.cause)
        self = wire.yes ? .yes : .no(reason: AbortReason(cause == .none ? .refused : cause, wire.reason))
    }
}

extension AbortCause {
    public init(wire: Dtc_V1_AbortCause) {
        switch wire {
        case .none, .UNRECOGNIZED: self = .none
        case .refused: self = .refused
        case .contention: self = .contention
        case .timeout: self = .timeout
        case .unavailable: self = .unavailable
        case .leaderChanged: self = .leaderChanged
        case .unknownTxn: self = .unknownTxn
        }
    }

    public var wire: Dtc_V1_AbortCause {
        switch self {
        case .none: .none
        case .refused: .refused
        case .contention: .contention
        case .timeout: .timeout
        case .unavailable: .unavailable
        case .leaderChanged: .leaderChanged
        case .unknownTxn: .unknownTxn
        }
    }
}

extension VoteReply {
    public init(wire: Dtc_V1_Vote) {
        self.init(txnID: TxnID(wire.txnID), vote: Vote(wire: wire), attempt: wire.attempt)
    }

    public var wire: Dtc_V1_Vote {
        .with {
            $0.txnID = txnID.rawValue
            $0.attempt = attempt
            switch vote {
            case .yes: $0.yes = true
            case .no(let reason):
                $0.reason = reason.text
                $0.cause = reason.cause.wire
            }
        }
    }
}

extension AckReply {
    public init(wire: Dtc_V1_Ack) {
        self.init(
            txnID: TxnID(wire.txnID), accepted: wire.accepted, reason: wire.reason,
            rolledBackAttempt: wire.hasRolledBackAttempt ? wire.rolledBackAttempt : nil)
    }

    public var wire: Dtc_V1_Ack {
        .with {
            $0.txnID = txnID.rawValue
            $0.accepted = accepted
            $0.reason = reason
            if let rolledBackAttempt { $0.rolledBackAttempt = rolledBackAttempt }
        }
    }
}

extension TxnStatus {
    public var wireState: Dtc_V1_TxnState {
        switch self {
        case .preparing: .preparing
        case .committed: .committed
        case .aborted: .aborted
        }
    }

    public var reason: AbortReason {
        switch self {
        case .preparing, .committed: .none
        case .aborted(let reason): reason
        }
    }

    public init?(wire: Dtc_V1_TxnOutcome) {
        switch wire.state {
        case .preparing: self = .preparing
        case .committed: self = .committed
        case .aborted: self = .aborted(reason: AbortReason(AbortCause(wire: wire.abortCause), wire.reason))
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}

extension BranchProgress {
    public var wireState: Dtc_V1_BranchState {
        switch self {
        case .awaitingVote: .preparing
        case .votedYes: .votedYes
        case .votedNo: .votedNo
        case .awaitingAck: .deciding
        case .acknowledged(let outcome): outcome == .commit ? .committed : .rolledBack
        }
    }
}

extension Dtc_V1_TxnState {
    public var name: String {
        switch self {
        case .unspecified, .UNRECOGNIZED: "UNKNOWN"
        case .preparing: "PREPARING"
        case .committed: "COMMITTED"
        case .aborted: "ABORTED"
        }
    }
}

extension Dtc_V1_BranchState {
    public var name: String {
        switch self {
        case .unspecified, .UNRECOGNIZED: "UNKNOWN"
        case .preparing: "PREPARING"
        case .votedYes: "VOTED_YES"
        case .votedNo: "VOTED_NO"
        case .deciding: "DECIDING"
        case .committed: "COMMITTED"
        case .rolledBack: "ROLLED_BACK"
        }
    }
}

extension Dtc_V1_RMRequest {
    /// The PREPAREs and decisions of one Exchange message, each checked; the error names the
    /// first bad field (`prepares[0].txn_id is empty`), and nothing of the message is taken.
    public func validated() throws(ValidationError) -> (prepares: [PrepareMessage], decisions: [DecisionMessage]) {
        var checkedPrepares: [PrepareMessage] = []
        for (index, wire) in prepares.enumerated() {
            do throws(ValidationError) {
                checkedPrepares.append(try PrepareMessage(wire: wire))
            } catch {
                throw error.within("prepares[\(index)]")
            }
        }
        var checkedDecisions: [DecisionMessage] = []
        for (index, wire) in decisions.enumerated() {
            do throws(ValidationError) {
                checkedDecisions.append(try DecisionMessage(wire: wire))
            } catch {
                throw error.within("decisions[\(index)]")
            }
        }
        return (checkedPrepares, checkedDecisions)
    }
}

extension ValidationError {
    /// The same error, its field named inside `parent` (`prepares[0].txn_id`).
    fileprivate func within(_ parent: String) -> ValidationError {
        switch self {
        case .invalid(let field, let reason): .invalid(field: "\(parent).\(field)", reason: reason)
        }
    }
}
