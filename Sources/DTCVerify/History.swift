import Foundation

/// One line of a client history: an `invoke` before an order is submitted, then one
/// completion for that attempt (`ok` committed, `fail` aborted with the reason, `unknown` when
/// the client gave up not knowing). A retry with the same txn ID is its own attempt, with its
/// own invoke and completion. Times are wall-clock seconds (Unix time, fractional).
public struct HistoryEvent: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case invoke
        case ok
        case fail
        case unknown
    }

    /// What was submitted, on `invoke` lines: the order the txn places.
    public struct Order: Hashable, Sendable {
        public var user: String
        public var sku: String
        public var qty: Int64
        public var amount: Int64

        public init(user: String, sku: String, qty: Int64, amount: Int64) {
            self.user = user
            self.sku = sku
            self.qty = qty
            self.amount = amount
        }
    }

    public var kind: Kind
    public var txn: String
    public var attempt: Int
    public var time: Double
    public var order: Order?
    /// What was submitted, on `invoke` lines of the transfer workload (instead of an order).
    public var transfer: Transfer?
    /// Why the txn aborted (`fail`) or why the outcome is unknown (`unknown`).
    public var reason: String?

    /// A transfer of `amount` cents from `from` at the accounts participant `fromRM` to `to`
    /// at `toRM`.
    public struct Transfer: Hashable, Sendable {
        public var from: String
        public var fromRM: String
        public var to: String
        public var toRM: String
        public var amount: Int64

        public init(from: String, fromRM: String, to: String, toRM: String, amount: Int64) {
            self.from = from
            self.fromRM = fromRM
            self.to = to
            self.toRM = toRM
            self.amount = amount
        }
    }

    public init(kind: Kind, txn: String, attempt: Int, time: Double, order: Order? = nil, transfer: Transfer? = nil, reason: String? = nil) {
        self.kind = kind
        self.txn = txn
        self.attempt = attempt
        self.time = time
        self.order = order
        self.transfer = transfer
        self.reason = reason
    }

    public static func invoke(_ txn: String, attempt: Int, at time: Double, _ transfer: Transfer) -> HistoryEvent {
        HistoryEvent(kind: .invoke, txn: txn, attempt: attempt, time: time, transfer: transfer)
    }

    public static func invoke(_ txn: String, attempt: Int, at time: Double, _ order: Order) -> HistoryEvent {
        HistoryEvent(kind: .invoke, txn: txn, attempt: attempt, time: time, order: order)
    }

    /// The line written to a history file (no newline).
    public var jsonLine: String {
        var fields = ["\"type\":\"\(kind.rawValue)\"", "\"txn\":\(Self.quoted(txn))", "\"attempt\":\(attempt)", String(format: "\"time\":%.6f", time)]
        switch kind {
        case .invoke: break
        case .ok: fields.append("\"outcome\":\"committed\"")
        case .fail: fields.append("\"outcome\":\"aborted\"")
        case .unknown: fields.append("\"outcome\":\"unknown\"")
        }
        if let order {
            fields += ["\"user\":\(Self.quoted(order.user))", "\"sku\":\(Self.quoted(order.sku))", "\"qty\":\(order.qty)", "\"amount\":\(order.amount)"]
        }
        if let transfer {
            fields += [
                "\"from\":\(Self.quoted(transfer.from))", "\"fromRm\":\(Self.quoted(transfer.fromRM))", "\"to\":\(Self.quoted(transfer.to))",
                "\"toRm\":\(Self.quoted(transfer.toRM))", "\"amount\":\(transfer.amount)",
            ]
        }
        if let reason { fields.append("\"reason\":\(Self.quoted(reason))") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// A history file read back: its events in file order, and every line that could not be read
/// (each one is a violation: a checker that skips what it cannot read proves nothing).
public struct History: Sendable {
    public struct Malformed: Hashable, Sendable {
        public var line: Int
        public var problem: String
    }

    public var events: [HistoryEvent] = []
    public var malformed: [Malformed] = []

    public init(events: [HistoryEvent] = [], malformed: [Malformed] = []) {
        self.events = events
        self.malformed = malformed
    }

    public init(parsing text: String) {
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            switch Self.parse(line) {
            case .success(let event): events.append(event)
            case .failure(let problem): malformed.append(Malformed(line: index + 1, problem: problem.message))
            }
        }
    }

    struct LineProblem: Error {
        var message: String
    }

    static func parse(_ line: Substring) -> Result<HistoryEvent, LineProblem> {
        let excerpt = line.count > 80 ? line.prefix(80) + "…" : line
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            return .failure(LineProblem(message: "not a JSON object: \(excerpt)"))
        }
        func fail(_ why: String) -> Result<HistoryEvent, LineProblem> { .failure(LineProblem(message: "\(why): \(excerpt)")) }
        guard let type = object["type"] as? String else { return fail("no \"type\"") }
        guard let kind = HistoryEvent.Kind(rawValue: type) else { return fail("unknown type \"\(type)\"") }
        guard let txn = object["txn"] as? String, !txn.isEmpty else { return fail("no \"txn\"") }
        guard let attempt = (object["attempt"] as? NSNumber)?.intValue, attempt >= 1 else { return fail("no \"attempt\" ≥ 1") }
        guard let time = (object["time"] as? NSNumber)?.doubleValue, time.isFinite, time > 0 else { return fail("no \"time\"") }
        var event = HistoryEvent(kind: kind, txn: txn, attempt: attempt, time: time, reason: object["reason"] as? String)
        switch kind {
        case .invoke where object["from"] != nil:
            guard let from = object["from"] as? String, let fromRM = object["fromRm"] as? String, let to = object["to"] as? String,
                let toRM = object["toRm"] as? String, let amount = (object["amount"] as? NSNumber)?.int64Value
            else { return fail("a transfer's invoke without its fields (from, fromRm, to, toRm, amount)") }
            event.transfer = HistoryEvent.Transfer(from: from, fromRM: fromRM, to: to, toRM: toRM, amount: amount)
        case .invoke:
            guard let user = object["user"] as? String, let sku = object["sku"] as? String,
                let qty = (object["qty"] as? NSNumber)?.int64Value, let amount = (object["amount"] as? NSNumber)?.int64Value
            else { return fail("an invoke without its order (user, sku, qty, amount)") }
            event.order = HistoryEvent.Order(user: user, sku: sku, qty: qty, amount: amount)
        case .ok, .fail, .unknown:
            let expected = kind == .ok ? "committed" : kind == .fail ? "aborted" : "unknown"
            guard object["outcome"] as? String == expected else { return fail("\"\(type)\" needs \"outcome\":\"\(expected)\"") }
        }
        return .success(event)
    }
}
