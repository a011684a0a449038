/// Exclusive locks for strict two-phase locking, with wait-die deadlock prevention: an older
/// txn (smaller stamp) may wait for a younger holder; a younger requester dies at once. Every
/// wait edge goes from older to younger, so the waits-for graph can have no cycle.
public struct LockTable: Sendable, Equatable {
    public enum Acquisition: Equatable, Sendable {
        case granted
        case waiting(for: TxnID)
        case died(holder: TxnID)
    }

    private struct Holder: Equatable, Sendable {
        var txnID: TxnID
        var stamp: StartStamp
    }

    private struct Waiter: Equatable, Sendable {
        var txnID: TxnID
        var stamp: StartStamp
        var keys: [String]
    }

    private var holders: [String: Holder] = [:]
    private var heldKeys: [TxnID: Set<String>] = [:]
    /// Waiters per key, oldest first.
    private var waiters: [String: [Waiter]] = [:]
    private var waitingOn: [TxnID: String] = [:]

    public init() {}

    public var lockCount: Int { holders.count }
    public var waiterCount: Int { waitingOn.count }

    public func holder(of key: String) -> TxnID? { holders[key]?.txnID }

    /// The txn that `txnID` waits for, if any (for tests of the waits-for graph).
    public func blocker(of txnID: TxnID) -> TxnID? {
        waitingOn[txnID].flatMap { holders[$0]?.txnID }
    }

    public func stamp(ofHolder txnID: TxnID) -> StartStamp? {
        heldKeys[txnID]?.first.flatMap { holders[$0]?.stamp }
    }

    /// Takes every key or none. Keys already held by `txnID` count as granted.
    public mutating func acquire(_ keys: [String], for txnID: TxnID, stamp: StartStamp) -> Acquisition {
        precondition(waitingOn[txnID] == nil, "\(txnID) asked for locks while it waits")
        let conflicts = keys.compactMap { key in holders[key].flatMap { $0.txnID == txnID ? nil : (key, $0) } }
        guard let first = conflicts.first else {
            grant(keys, to: txnID, stamp: stamp)
            return .granted
        }
        if let older = conflicts.first(where: { $0.1.stamp < stamp }) {
            return .died(holder: older.1.txnID)
        }
        enqueue(Waiter(txnID: txnID, stamp: stamp, keys: keys), on: first.0)
        return .waiting(for: first.1.txnID)
    }

    /// Releases every lock `txnID` holds, or withdraws it from a wait queue. Returns the waiters
    /// that now hold their locks, and those that died on retry (a younger txn got in between).
    public mutating func release(_ txnID: TxnID) -> (granted: [TxnID], died: [(TxnID, holder: TxnID)]) {
        withdraw(txnID)
        let keys = heldKeys.removeValue(forKey: txnID) ?? []
        for key in keys { holders[key] = nil }
        var granted: [TxnID] = []
        var died: [(TxnID, holder: TxnID)] = []
        for key in keys.sorted() {
            for waiter in waiters.removeValue(forKey: key) ?? [] {
                waitingOn[waiter.txnID] = nil
                switch acquire(waiter.keys, for: waiter.txnID, stamp: waiter.stamp) {
                case .granted: granted.append(waiter.txnID)
                case .waiting: break
                case .died(let holder): died.append((waiter.txnID, holder))
                }
            }
        }
        return (granted, died)
    }

    /// Removes `txnID` from the queue it waits in (its wait timed out).
    public mutating func withdraw(_ txnID: TxnID) {
        guard let key = waitingOn.removeValue(forKey: txnID) else { return }
        waiters[key]?.removeAll { $0.txnID == txnID }
        if waiters[key]?.isEmpty == true { waiters[key] = nil }
    }

    private mutating func grant(_ keys: [String], to txnID: TxnID, stamp: StartStamp) {
        for key in keys { holders[key] = Holder(txnID: txnID, stamp: stamp) }
        heldKeys[txnID, default: []].formUnion(keys)
    }

    private mutating func enqueue(_ waiter: Waiter, on key: String) {
        var queue = waiters[key] ?? []
        let index = queue.firstIndex { $0.stamp > waiter.stamp } ?? queue.count
        queue.insert(waiter, at: index)
        waiters[key] = queue
        waitingOn[waiter.txnID] = key
    }
}
