/// The business rules of the built-in services, as pure functions over committed values.

/// A value in an RM's committed state.
public enum StateValue: Hashable, Sendable {
    /// Units in stock (inventory) or cents on an account (accounts).
    case count(Int64)
    case reservation(sku: String, qty: Int64)
    case order(userID: String, sku: String, qty: Int64, amount: Int64)
    case debit(userID: String, amount: Int64)

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .count(let value): writer.write(UInt8(1)); writer.write(value)
        case .reservation(let sku, let qty): writer.write(UInt8(2)); writer.write(sku); writer.write(qty)
        case .order(let userID, let sku, let qty, let amount):
            writer.write(UInt8(3)); writer.write(userID); writer.write(sku); writer.write(qty); writer.write(amount)
        case .debit(let userID, let amount): writer.write(UInt8(4)); writer.write(userID); writer.write(amount)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        switch try reader.readByte() {
        case 1: self = .count(try reader.readInt64())
        case 2: self = .reservation(sku: try reader.readString(), qty: try reader.readInt64())
        case 3:
            self = .order(userID: try reader.readString(), sku: try reader.readString(), qty: try reader.readInt64(), amount: try reader.readInt64())
        case 4: self = .debit(userID: try reader.readString(), amount: try reader.readInt64())
        case let tag: throw .badTag(tag, at: 0)
        }
    }
}

/// One key's new value, applied at COMMIT.
public struct Write: Hashable, Sendable {
    public var key: String
    public var value: StateValue

    public init(key: String, value: StateValue) {
        self.key = key
        self.value = value
    }
}

/// Key names of the services' state. The checker reads them back by prefix.
public enum StateKey {
    public static let stockPrefix = "stock/"
    public static let reservationPrefix = "resv/"
    public static let orderPrefix = "order/"
    public static let balancePrefix = "bal/"
    public static let debitPrefix = "debit/"

    public static func stock(_ sku: String) -> String { stockPrefix + sku }
    public static func reservation(_ orderID: String) -> String { reservationPrefix + orderID }
    public static func order(_ orderID: String) -> String { orderPrefix + orderID }
    public static func balance(_ userID: String) -> String { balancePrefix + userID }
    public static func debit(_ orderID: String) -> String { debitPrefix + orderID }
}

public enum ServiceLogic {
    /// The keys an operation reads or writes: its locks.
    public static func keys(of op: Operation) -> [String] {
        switch op {
        case .reserve(let orderID, let sku, _): [StateKey.stock(sku), StateKey.reservation(orderID)]
        case .createOrder(let orderID, _, _, _, _): [StateKey.order(orderID)]
        case .debit(let orderID, let userID, _): [StateKey.balance(userID), StateKey.debit(orderID)]
        }
    }

    /// Checks the operation against the committed values of its keys and returns its writes,
    /// or the reason for a NO vote.
    public static func plan(_ op: Operation, committed: [String: StateValue]) -> Result<[Write], PlanRefusal> {
        switch op {
        case .reserve(let orderID, let sku, let qty):
            guard committed[StateKey.reservation(orderID)] == nil else { return .failure("order \(orderID) already has a reservation") }
            guard case .count(let stock) = committed[StateKey.stock(sku)] else { return .failure("unknown sku \(sku)") }
            guard stock >= qty else { return .failure("insufficient stock for \(sku): \(stock) < \(qty)") }
            return .success([
                Write(key: StateKey.stock(sku), value: .count(stock - qty)),
                Write(key: StateKey.reservation(orderID), value: .reservation(sku: sku, qty: qty)),
            ])
        case .createOrder(let orderID, let userID, let sku, let qty, let amount):
            guard committed[StateKey.order(orderID)] == nil else { return .failure("order \(orderID) already exists") }
            return .success([Write(key: StateKey.order(orderID), value: .order(userID: userID, sku: sku, qty: qty, amount: amount))])
        case .debit(let orderID, let userID, let amount):
            guard committed[StateKey.debit(orderID)] == nil else { return .failure("order \(orderID) was already debited") }
            guard case .count(let balance) = committed[StateKey.balance(userID)] else { return .failure("unknown user \(userID)") }
            guard balance >= amount else { return .failure("insufficient balance for \(userID): \(balance) < \(amount)") }
            return .success([
                Write(key: StateKey.balance(userID), value: .count(balance - amount)),
                Write(key: StateKey.debit(orderID), value: .debit(userID: userID, amount: amount)),
            ])
        }
    }
}

/// Why a branch cannot be prepared (the reason in a NO vote).
public struct PlanRefusal: Error, Hashable, Sendable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    public var reason: String
    public init(stringLiteral value: String) { reason = value }
    public init(_ reason: String) { self.reason = reason }
}

extension StateKey {
    public static let txnPrefix = "txn/"
    public static let preparedPrefix = "prep/"

    public static func txn(_ txnID: TxnID) -> String { txnPrefix + txnID.rawValue }
    public static func prepared(_ txnID: TxnID) -> String { preparedPrefix + txnID.rawValue }
}

/// An RM's durable record of how a txn ended there: the ledger the checker compares across
/// RMs. `epoch` decided it; `seenEpoch` is the highest epoch the RM had seen for the txn
/// before (a decision with `epoch < seenEpoch` came from a fenced leader: invariant 2 at the
/// participant); `applications` counts how many times a decision was written for the txn
/// (more than one means an effect was applied twice: invariant 5).
public struct LedgerEntry: Hashable, Sendable {
    public var outcome: Outcome
    public var epoch: Epoch
    public var seenEpoch: Epoch
    public var applications: UInt32

    /// The first byte of every entry, so that any other layout is refused, not misread.
    static let formatTag: UInt8 = 0x4c

    public init(outcome: Outcome, epoch: Epoch, seenEpoch: Epoch = .zero, applications: UInt32 = 1) {
        self.outcome = outcome
        self.epoch = epoch
        self.seenEpoch = seenEpoch
        self.applications = applications
    }

    public var isFromStaleEpoch: Bool { epoch < seenEpoch }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.formatTag)
        writer.write(outcome == .commit ? UInt8(1) : UInt8(2))
        writer.write(epoch)
        writer.write(seenEpoch)
        writer.write(applications)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        let tag = try reader.readByte()
        guard tag == Self.formatTag else { throw .badTag(tag, at: 0) }
        switch try reader.readByte() {
        case 1: outcome = .commit
        case 2: outcome = .abort
        case let other: throw .badTag(other, at: 1)
        }
        epoch = try reader.readEpoch()
        seenEpoch = try reader.readEpoch()
        applications = try reader.readUInt32()
        guard reader.isAtEnd else { throw .trailingBytes(at: reader.offset) }
    }
}
