/// The built-in services and their business operations.
public enum ServiceKind: String, Sendable, CaseIterable, Codable {
    case inventory
    case orders
    case accounts
}

/// One branch's business operation.
public enum Operation: Hashable, Sendable {
    case reserve(orderID: String, sku: String, qty: Int64)
    case createOrder(orderID: String, userID: String, sku: String, qty: Int64, amount: Int64)
    case debit(orderID: String, userID: String, amount: Int64)

    /// The service that can run this operation.
    public var service: ServiceKind {
        switch self {
        case .reserve: .inventory
        case .createOrder: .orders
        case .debit: .accounts
        }
    }

    public var name: String {
        switch self {
        case .reserve: "inventory.reserve"
        case .createOrder: "orders.create"
        case .debit: "accounts.debit"
        }
    }

    /// Rejects missing, negative and oversize fields; the error names the field.
    public func validate(limits: Limits, field prefix: String) throws(ValidationError) {
        switch self {
        case .reserve(let orderID, let sku, let qty):
            try Self.text(orderID, "\(prefix).order_id", limits)
            try Self.text(sku, "\(prefix).sku", limits)
            try Self.positive(qty, "\(prefix).qty", max: limits.quantityMax)
        case .createOrder(let orderID, let userID, let sku, let qty, let amount):
            try Self.text(orderID, "\(prefix).order_id", limits)
            try Self.text(userID, "\(prefix).user_id", limits)
            try Self.text(sku, "\(prefix).sku", limits)
            try Self.positive(qty, "\(prefix).qty", max: limits.quantityMax)
            try Self.positive(amount, "\(prefix).amount", max: limits.amountMax)
        case .debit(let orderID, let userID, let amount):
            try Self.text(orderID, "\(prefix).order_id", limits)
            try Self.text(userID, "\(prefix).user_id", limits)
            try Self.positive(amount, "\(prefix).amount", max: limits.amountMax)
        }
    }

    private static func text(_ value: String, _ field: String, _ limits: Limits) throws(ValidationError) {
        guard !value.isEmpty else { throw .invalid(field: field, reason: "is missing") }
        guard value.utf8.count <= limits.fieldBytesMax else {
            throw .invalid(field: field, reason: "is over \(limits.fieldBytesMax) bytes")
        }
        guard !value.utf8.contains(0) else { throw .invalid(field: field, reason: "contains a NUL byte") }
    }

    private static func positive(_ value: Int64, _ field: String, max: Int64) throws(ValidationError) {
        guard value > 0 else { throw .invalid(field: field, reason: "must be positive, got \(value)") }
        guard value <= max else { throw .invalid(field: field, reason: "is over the limit of \(max)") }
    }
}

/// One RM's part of a txn: the RM's name plus its operation.
public struct Branch: Hashable, Sendable {
    public var rm: String
    public var op: Operation

    public init(rm: String, op: Operation) {
        self.rm = rm
        self.op = op
    }
}

/// Validates a whole submission: ID, branch count, duplicates, each RM and operation.
/// `services` maps each known RM name to the service it runs.
public func validateSubmission(
    txnID: String, branches: [Branch], services: [String: ServiceKind], limits: Limits
) throws(ValidationError) -> TxnID {
    let id = try TxnID(validating: txnID, limits: limits)
    guard !branches.isEmpty else { throw .invalid(field: "branches", reason: "is empty") }
    guard branches.count <= limits.branchesPerTxnMax else {
        throw .invalid(field: "branches", reason: "has \(branches.count) entries, over \(limits.branchesPerTxnMax)")
    }
    var seen = Set<String>()
    for (index, branch) in branches.enumerated() {
        let field = "branches[\(index)]"
        guard let service = services[branch.rm] else {
            throw .invalid(field: "\(field).rm", reason: "names unknown RM '\(branch.rm)'")
        }
        guard seen.insert(branch.rm).inserted else {
            throw .invalid(field: "\(field).rm", reason: "duplicates the branch for RM '\(branch.rm)'")
        }
        guard branch.op.service == service else {
            throw .invalid(field: "\(field).op", reason: "\(branch.op.name) is not an operation of RM '\(branch.rm)' (\(service.rawValue))")
        }
        try branch.op.validate(limits: limits, field: field)
    }
    return id
}
