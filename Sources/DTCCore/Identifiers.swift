/// A client-chosen transaction name. Submitting the same ID twice is the same transaction.
public struct TxnID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Validates the ID against `limits`; the error names the field, as the API promises.
    public init(validating rawValue: String, limits: Limits = .standard) throws(ValidationError) {
        guard !rawValue.isEmpty else { throw .invalid(field: "txn_id", reason: "is empty") }
        guard rawValue.utf8.count <= limits.txnIDBytesMax else {
            throw .invalid(
                field: "txn_id",
                reason: "is \(rawValue.utf8.count) bytes, over the limit of \(limits.txnIDBytesMax)")
        }
        self.rawValue = rawValue
    }

    /// For values that were validated before they were stored (log records, tests).
    public init(_ rawValue: String) {
        self.rawValue = rawValue
    }

    public var description: String { rawValue }

    public static func < (lhs: TxnID, rhs: TxnID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A node's place in the cluster config's node list, from 0. It fills the low bits of the
/// node's start stamps. (A node's *name* is a String everywhere; this is not a name.)
public struct NodeIndex: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public let rawValue: UInt32

    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    public init(integerLiteral value: UInt32) { rawValue = value }

    /// The node's id inside epochs.
    public var id: NodeID { NodeID(rawValue + 1) }

    public static func < (lhs: NodeIndex, rhs: NodeIndex) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "#\(rawValue)" }
}

/// A node's id inside epochs, from 1: epoch 7.2 is ballot 7 claimed by the node with id 2
/// (index 1). 0 names no node (`Epoch.zero`).
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public let rawValue: UInt32

    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    public init(integerLiteral value: UInt32) { rawValue = value }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "\(rawValue)" }
}

/// A partition's ballot number, ordered as (counter, node). Persisted; strictly increasing.
public struct Epoch: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var counter: UInt64
    /// The claiming node's `NodeID`, raw (it is stored and sent as a number).
    public var node: UInt32

    public init(counter: UInt64, node: UInt32) {
        self.counter = counter
        self.node = node
    }

    public static let zero = Epoch(counter: 0, node: 0)

    public static func < (lhs: Epoch, rhs: Epoch) -> Bool {
        (lhs.counter, lhs.node) < (rhs.counter, rhs.node)
    }

    /// The next epoch that node `id` may claim, above every epoch seen so far.
    public func next(for id: NodeID) -> Epoch {
        Epoch(counter: counter + 1, node: id.rawValue)
    }

    public var description: String { "\(counter).\(node)" }
}

/// A txn's start timestamp, used by the RMs' wait-die: a smaller stamp is an older txn.
public typealias StartStamp = UInt64

/// An error in what a caller sent; the message names the field.
public enum ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(field: String, reason: String)

    public var description: String {
        switch self {
        case .invalid(let field, let reason): "\(field) \(reason)"
        }
    }
}
