import DTCCore

/// The shop: dtc's example domain, three services that every order spans (reserve stock,
/// create the order, debit the account). It is an ordinary participant logic on top of
/// `DTCParticipant`; nothing in dtc's coordinator knows it.

/// The shop's services. An RM in cluster.json runs one of them (its `service` field).
public enum ShopService: String, Sendable, CaseIterable, Codable {
    case inventory
    case orders
    case accounts

    /// The branch kind each service runs.
    public var kind: String {
        switch self {
        case .inventory: ShopOperation.reserveKind
        case .orders: ShopOperation.createOrderKind
        case .accounts: ShopOperation.debitKind
        }
    }
}

/// A value in a shop RM's committed state (the shop's own binary encoding).
public enum StateValue: Hashable, Sendable {
    /// Units in stock (inventory) or cents on an account (accounts).
    case count(Int64)
    case reservation(sku: String, qty: Int64)
    case order(userID: String, sku: String, qty: Int64, amount: Int64)
    case debit(userID: String, amount: Int64)
    case credit(userID: String, amount: Int64)

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .count(let value): writer.write(UInt8(1)); writer.write(value)
        case .reservation(let sku, let qty): writer.write(UInt8(2)); writer.write(sku); writer.write(qty)
        case .order(let userID, let sku, let qty, let amount):
            writer.write(UInt8(3)); writer.write(userID); writer.write(sku); writer.write(qty); writer.write(amount)
        case .debit(let userID, let amount): writer.write(UInt8(4)); writer.write(userID); writer.write(amount)
        case .credit(let userID, let amount): writer.write(UInt8(5)); writer.write(userID); writer.write(amount)
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
        case 5: self = .credit(userID: try reader.readString(), amount: try reader.readInt64())
        case let tag: throw .badTag(tag, at: 0)
        }
    }
}

/// Key names of the services' state. The checker reads them back by prefix.
public enum StateKey {
    public static let stockPrefix = "stock/"
    public static let reservationPrefix = "resv/"
    public static let orderPrefix = "order/"
    public static let balancePrefix = "bal/"
    public static let debitPrefix = "debit/"
    public static let creditPrefix = "credit/"

    public static func stock(_ sku: String) -> String { stockPrefix + sku }
    public static func reservation(_ orderID: String) -> String { reservationPrefix + orderID }
    public static func order(_ orderID: String) -> String { orderPrefix + orderID }
    public static func balance(_ userID: String) -> String { balancePrefix + userID }
    public static func debit(_ orderID: String) -> String { debitPrefix + orderID }
    public static func credit(_ transferID: String) -> String { creditPrefix + transferID }
}

