import DTCCore

/// Everything a checker reads from the RMs once the cluster is quiet: the business state of
/// each service and each RM's ledger and prepared txns.
public struct ClusterSnapshot: Sendable {
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

    public var stock: [String: Int64] = [:]
    public var reservations: [String: (sku: String, qty: Int64)] = [:]
    public var orders: [String: Order] = [:]
    /// Per account: its balance. With more than one accounts participant the key is
    /// "participant/user" (each participant keeps its own accounts), else the user.
    public var balances: [String: Int64] = [:]
    public var debits: [String: (user: String, amount: Int64)] = [:]
    /// Per transfer: the credit of its destination account.
    public var credits: [String: (user: String, amount: Int64)] = [:]
    /// Participants that run the accounts service, each seeded with every user's money.
    public var accountsRMs = 1
    /// Per RM: txnID → how the txn ended there.
    public var ledgers: [String: [String: LedgerEntry]] = [:]
    /// Per RM: prepared txnIDs.
    public var prepared: [String: [String]] = [:]
    /// The RMs that run the shop's orders service.
    public var orderRMs: Set<String> = []

    public init() {}

    /// The participants `txn` involves: those its ledger entries name and those that have an
    /// entry; every RM when no ledger knows the txn.
    func participants(of txn: String) -> [String] {
        let entries = ledgers.compactMapValues { $0[txn] }
        let named = Set(entries.values.flatMap(\.participants)).filter { ledgers[$0] != nil }.union(entries.keys)
        return (named.isEmpty ? Set(ledgers.keys) : named).sorted()
    }

    /// Whether `txn` has a branch at an orders RM, by the participants its ledger entries name.
    /// A txn whose entries name no participants (written before they were recorded) counts as
    /// an order.
    func isOrder(_ txn: String) -> Bool {
        let named = Set(ledgers.values.compactMap { $0[txn] }.flatMap(\.participants))
        return named.isEmpty || !named.isDisjoint(with: orderRMs)
    }

    /// Whether any RM has a record of `txn` having any effect in the business state.
    func hasEffects(_ txn: String) -> Bool {
        orders[txn] != nil || reservations[txn] != nil || debits[txn] != nil || credits[txn] != nil
    }
}

/// How the RMs were seeded: what stock and money must add up to.
public struct InitialState: Sendable {
    public var skus: Int
    public var unitsPerSku: Int64
    public var users: Int
    public var centsPerUser: Int64

    public init(skus: Int, unitsPerSku: Int64, users: Int, centsPerUser: Int64) {
        self.skus = skus
        self.unitsPerSku = unitsPerSku
        self.users = users
        self.centsPerUser = centsPerUser
    }
}
