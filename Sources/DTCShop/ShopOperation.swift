import DTCCore

/// One branch of an order, as the shop's payloads carry it.
public enum ShopOperation: Hashable, Sendable {
    case reserve(orderID: String, sku: String, qty: Int64)
    case createOrder(orderID: String, userID: String, sku: String, qty: Int64, amount: Int64)
    case debit(orderID: String, userID: String, amount: Int64)
    /// The other half of a transfer (whose first half is a debit with the transfer's ID).
    case credit(transferID: String, userID: String, amount: Int64)

    public static let reserveKind = "reserve"
    public static let createOrderKind = "create-order"
    public static let debitKind = "debit"
    public static let creditKind = "credit"

    /// Field bounds, checked where a branch is built and again where it is planned.
    public static let fieldBytesMax = 256
    public static let quantityMax: Int64 = 1_000_000_000
    public static let amountMax: Int64 = 1_000_000_000_000

    public var service: ShopService {
        switch self {
        case .reserve: .inventory
        case .createOrder: .orders
        case .debit, .credit: .accounts
        }
    }

    public var kind: String {
        switch self {
        case .credit: Self.creditKind
        default: service.kind
        }
    }

    /// The branch for the RM `rm`: kind and flat-JSON payload.
    public func branch(rm: String) -> Branch {
        Branch(rm: rm, kind: kind, payload: payload)
    }

    public var payload: [UInt8] {
        switch self {
        case .reserve(let orderID, let sku, let qty):
            FlatJSON.encode([("order_id", .string(orderID)), ("sku", .string(sku)), ("qty", .integer(qty))])
        case .createOrder(let orderID, let userID, let sku, let qty, let amount):
            FlatJSON.encode([
                ("order_id", .string(orderID)), ("user_id", .string(userID)), ("sku", .string(sku)),
                ("qty", .integer(qty)), ("amount", .integer(amount)),
            ])
        case .debit(let orderID, let userID, let amount):
            FlatJSON.encode([("order_id", .string(orderID)), ("user_id", .string(userID)), ("amount", .integer(amount))])
        case .credit(let transferID, let userID, let amount):
            FlatJSON.encode([("transfer_id", .string(transferID)), ("user_id", .string(userID)), ("amount", .integer(amount))])
        }
    }

    /// Decodes and checks a branch's payload; the error says what is wrong, for the NO vote.
    public init(branch: Branch) throws(PlanRefusal) {
        let fields: [String: FlatJSON.Value]
        do {
            fields = try FlatJSON.decode(branch.payload)
        } catch {
            throw PlanRefusal("cannot decode the \(branch.kind) payload: \(error.description)")
        }
        var reader = FieldReader(fields: fields, kind: branch.kind)
        switch branch.kind {
        case Self.reserveKind:
            self = .reserve(orderID: try reader.text("order_id"), sku: try reader.text("sku"), qty: try reader.positive("qty", max: Self.quantityMax))
        case Self.createOrderKind:
            self = .createOrder(
                orderID: try reader.text("order_id"), userID: try reader.text("user_id"), sku: try reader.text("sku"),
                qty: try reader.positive("qty", max: Self.quantityMax), amount: try reader.positive("amount", max: Self.amountMax))
        case Self.debitKind:
            self = .debit(orderID: try reader.text("order_id"), userID: try reader.text("user_id"), amount: try reader.positive("amount", max: Self.amountMax))
        case Self.creditKind:
            self = .credit(
                transferID: try reader.text("transfer_id"), userID: try reader.text("user_id"), amount: try reader.positive("amount", max: Self.amountMax))
        default:
            throw PlanRefusal(
                "unknown kind '\(branch.kind)' (the shop runs \(Self.reserveKind), \(Self.createOrderKind), \(Self.debitKind), \(Self.creditKind))")
        }
        try reader.finish()
    }

    /// Reads required fields and refuses unknown ones, naming the field.
    private struct FieldReader {
        var fields: [String: FlatJSON.Value]
        let kind: String

        mutating func text(_ name: String) throws(PlanRefusal) -> String {
            guard case .string(let value)? = fields.removeValue(forKey: name) else {
                throw PlanRefusal("\(kind) payload: field '\(name)' is missing or not a string")
            }
            guard !value.isEmpty else { throw PlanRefusal("\(kind) payload: field '\(name)' is empty") }
            guard value.utf8.count <= ShopOperation.fieldBytesMax else {
                throw PlanRefusal("\(kind) payload: field '\(name)' is over \(ShopOperation.fieldBytesMax) bytes")
            }
            return value
        }

        mutating func positive(_ name: String, max: Int64) throws(PlanRefusal) -> Int64 {
            guard case .integer(let value)? = fields.removeValue(forKey: name) else {
                throw PlanRefusal("\(kind) payload: field '\(name)' is missing or not an integer")
            }
            guard value > 0, value <= max else { throw PlanRefusal("\(kind) payload: field '\(name)' must be in 1...\(max), got \(value)") }
            return value
        }

        func finish() throws(PlanRefusal) {
            guard fields.isEmpty else { throw PlanRefusal("\(kind) payload: unknown field '\(fields.keys.sorted()[0])'") }
        }
    }
}

/// The business rules of one shop service, as a participant's logic.
public struct ShopLogic: ParticipantLogic {
    public let service: ShopService

    public init(service: ShopService) {
        self.service = service
    }

    public func keys(for branch: Branch) throws -> [String] {
        switch try operation(branch) {
        case .reserve(let orderID, let sku, _): [StateKey.stock(sku), StateKey.reservation(orderID)]
        case .createOrder(let orderID, _, _, _, _): [StateKey.order(orderID)]
        case .debit(let orderID, let userID, _): [StateKey.balance(userID), StateKey.debit(orderID)]
        case .credit(let transferID, let userID, _): [StateKey.balance(userID), StateKey.credit(transferID)]
        }
    }

    public func plan(_ branch: Branch, committed: [String: [UInt8]]) throws -> [Write] {
        let values = try committed.mapValues { try StateValue(decoding: $0) }
        return try Self.plan(try operation(branch), committed: values).map { Write(key: $0.key, value: $0.value.encoded()) }
    }

    private func operation(_ branch: Branch) throws(PlanRefusal) -> ShopOperation {
        let op = try ShopOperation(branch: branch)
        guard op.service == service else {
            throw PlanRefusal("\(branch.kind) is not an operation of the \(service.rawValue) service")
        }
        return op
    }

    /// Checks the operation against the committed values of its keys and returns its writes,
    /// or the reason for a NO vote.
    static func plan(_ op: ShopOperation, committed: [String: StateValue]) throws(PlanRefusal) -> [(key: String, value: StateValue)] {
        switch op {
        case .reserve(let orderID, let sku, let qty):
            guard committed[StateKey.reservation(orderID)] == nil else { throw "order \(orderID) already has a reservation" }
            guard case .count(let stock) = committed[StateKey.stock(sku)] else { throw "unknown sku \(sku)" }
            guard stock >= qty else { throw "insufficient stock for \(sku): \(stock) < \(qty)" }
            return [(StateKey.stock(sku), .count(stock - qty)), (StateKey.reservation(orderID), .reservation(sku: sku, qty: qty))]
        case .createOrder(let orderID, let userID, let sku, let qty, let amount):
            guard committed[StateKey.order(orderID)] == nil else { throw "order \(orderID) already exists" }
            return [(StateKey.order(orderID), .order(userID: userID, sku: sku, qty: qty, amount: amount))]
        case .debit(let orderID, let userID, let amount):
            guard committed[StateKey.debit(orderID)] == nil else { throw "order \(orderID) was already debited" }
            guard case .count(let balance) = committed[StateKey.balance(userID)] else { throw "unknown user \(userID)" }
            guard balance >= amount else { throw "insufficient balance for \(userID): \(balance) < \(amount)" }
            return [(StateKey.balance(userID), .count(balance - amount)), (StateKey.debit(orderID), .debit(userID: userID, amount: amount))]
        case .credit(let transferID, let userID, let amount):
            guard committed[StateKey.credit(transferID)] == nil else { throw "transfer \(transferID) was already credited" }
            guard case .count(let balance) = committed[StateKey.balance(userID)] else { throw "unknown user \(userID)" }
            guard balance <= Int64.max - amount else { throw "balance of \(userID) would overflow" }
            return [(StateKey.balance(userID), .count(balance + amount)), (StateKey.credit(transferID), .credit(userID: userID, amount: amount))]
        }
    }
}

/// The branches of one order across the three services.
public func orderBranches(
    orderID: String, user: String, sku: String, qty: Int64, amount: Int64, inventory: String, orders: String, accounts: String
) -> [Branch] {
    [
        ShopOperation.reserve(orderID: orderID, sku: sku, qty: qty).branch(rm: inventory),
        ShopOperation.createOrder(orderID: orderID, userID: user, sku: sku, qty: qty, amount: amount).branch(rm: orders),
        ShopOperation.debit(orderID: orderID, userID: user, amount: amount).branch(rm: accounts),
    ]
}

/// The branches of a transfer of `amount` cents from `from` at the accounts participant
/// `fromRM` to `to` at `toRM`: a debit and a credit under the transfer's ID.
public func transferBranches(transferID: String, from: String, fromRM: String, to: String, toRM: String, amount: Int64) -> [Branch] {
    [
        ShopOperation.debit(orderID: transferID, userID: from, amount: amount).branch(rm: fromRM),
        ShopOperation.credit(transferID: transferID, userID: to, amount: amount).branch(rm: toRM),
    ]
}

/// Seed data for a shop RM's first start: units per SKU and cents per user.
public struct ShopSeed: Codable, Sendable {
    public var stock: [String: Int64]
    public var balances: [String: Int64]

    public init(stock: [String: Int64], balances: [String: Int64]) {
        self.stock = stock
        self.balances = balances
    }

    /// `skus` SKUs `sku-0`… with `unitsPerSku` each and `users` users `user-0`… with
    /// `centsPerUser` each.
    public init(skus: Int, unitsPerSku: Int64, users: Int, centsPerUser: Int64) {
        stock = Dictionary(uniqueKeysWithValues: (0..<skus).map { ("sku-\($0)", unitsPerSku) })
        balances = Dictionary(uniqueKeysWithValues: (0..<users).map { ("user-\($0)", centsPerUser) })
    }

    /// The committed values a fresh RM of `service` starts with.
    public func values(for service: ShopService) -> [(key: String, value: [UInt8])] {
        switch service {
        case .inventory: stock.sorted { $0.key < $1.key }.map { (StateKey.stock($0.key), StateValue.count($0.value).encoded()) }
        case .accounts: balances.sorted { $0.key < $1.key }.map { (StateKey.balance($0.key), StateValue.count($0.value).encoded()) }
        case .orders: []
        }
    }
}
