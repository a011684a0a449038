/// Proof from the participants' ledgers that the committed txns are serializable.
///
/// Participants run strict two-phase locking: a txn holds its exclusive locks until its decision
/// is durable, so at one participant the committed txns that locked a key held that lock one
/// after the other, in the order their decisions were applied there (`LedgerEntry.sequence`).
/// Each such pair is an edge of the precedence graph: the earlier txn comes before the later in
/// any equivalent serial order. The committed txns are (conflict-)serializable if the graph,
/// over every participant and key, is acyclic; a cycle names txns that no serial order fits.
///
/// Pure and deterministic: the same ledgers give the same verdict and the same cycle, whatever
/// order the caller's dictionaries iterate in. Iterative (no recursion), linear in the entries
/// after sorting each key's lockers, for ledgers of any size.
public enum Serializability {
    /// One committed txn at one participant: where its decision stands in the participant's order
    /// of applied decisions (0: unknown), and the keys it locked there.
    public struct Application: Hashable, Sendable {
        public var txnID: TxnID
        public var sequence: UInt64
        public var keys: [String]

        public init(txnID: TxnID, sequence: UInt64, keys: [String]) {
            self.txnID = txnID
            self.sequence = sequence
            self.keys = keys
        }
    }

    /// `from` held `key`'s lock at `participant` before `to` did (the two were consecutive).
    public struct Edge: Hashable, Sendable, CustomStringConvertible {
        public var from: TxnID
        public var to: TxnID
        public var participant: String
        public var key: String

        public init(from: TxnID, to: TxnID, participant: String, key: String) {
            self.from = from
            self.to = to
            self.participant = participant
            self.key = key
        }

        public var description: String { "\(from) → \(to) (\(participant): \(key))" }
    }

    public struct Verdict: Equatable, Sendable {
        /// Committed txns with at least one entry that has an order.
        public var txns = 0
        /// Distinct ordered pairs of txns: a pair ordered by several keys or participants counts once.
        public var edges = 0
        /// Committed entries left out because they carry no order (sequence 0).
        public var unorderedEntries = 0
        /// One cycle if the graph has any: each edge's `to` is the next edge's `from`, and the
        /// last edge's `to` is the first edge's `from`. It starts at its lowest txn ID.
        public var cycle: [Edge]?

        public var isAcyclic: Bool { cycle == nil }

        /// The cycle's txns in order, back to the first: "t1 → t2 (inventory: a) → t1 (accounts: b)".
        public var cycleDescription: String? {
            guard let cycle, let first = cycle.first else { return nil }
            return cycle.reduce(first.from.rawValue) { text, edge in "\(text) → \(edge.to) (\(edge.participant): \(edge.key))" }
        }
    }

    /// The verdict over the commits of every participant's ledger (aborts lock nothing that
    /// stays: they are left out).
    public static func check(ledgers: [String: [TxnID: LedgerEntry]]) -> Verdict {
        check(ledgers.mapValues { ledger in
            ledger.compactMap { txnID, entry in
                entry.outcome == .commit ? Application(txnID: txnID, sequence: entry.sequence, keys: entry.keys) : nil
            }
        })
    }

    /// The verdict over each participant's committed applications.
    public static func check(_ applications: [String: [Application]]) -> Verdict {
        var verdict = Verdict()
        let ordered = applications.mapValues { $0.filter { $0.sequence != 0 } }
        verdict.unorderedEntries = applications.values.reduce(0) { $0 + $1.count } - ordered.values.reduce(0) { $0 + $1.count }
        var graph = PrecedenceGraph(txns: Set(ordered.values.flatMap { $0.map(\.txnID) }).sorted())
        for participant in ordered.keys.sorted() {
            graph.addEdges(ordering: ordered[participant]!, at: participant)
        }
        verdict.txns = graph.txns.count
        verdict.edges = graph.edgeCount
        verdict.cycle = graph.cycle()
        return verdict
    }
}

/// The precedence graph over txns numbered in txn ID order, so that every choice below (which
/// label an edge keeps, where the cycle search starts, which predecessor it follows) depends on
/// the txn IDs, never on the caller's iteration order.
private struct PrecedenceGraph {
    let txns: [TxnID]
    private let index: [TxnID: Int]
    /// Per edge: its ends and the participant and key that ordered it (the first found).
    private var edges: [(from: Int, to: Int, participant: String, key: String)] = []
    private var seen: Set<UInt64> = []
    /// Per txn: the edges leaving it and the edges entering it.
    private var outgoing: [[Int]]
    private var incoming: [[Int]]

    init(txns: [TxnID]) {
        self.txns = txns
        index = Dictionary(uniqueKeysWithValues: txns.enumerated().map { ($0.element, $0.offset) })
        outgoing = Array(repeating: [], count: txns.count)
        incoming = Array(repeating: [], count: txns.count)
    }

    var edgeCount: Int { edges.count }

    /// Per key: the txns that locked it at `participant`, in apply order; an edge between each
    /// two consecutive ones. Equal sequences (a damaged ledger) are ordered by txn ID.
    mutating func addEdges(ordering applications: [Serializability.Application], at participant: String) {
        var lockers: [String: [(sequence: UInt64, txn: Int)]] = [:]
        for application in applications {
            let txn = index[application.txnID]!
            for key in Set(application.keys) { lockers[key, default: []].append((application.sequence, txn)) }
        }
        for key in lockers.keys.sorted() {
            let sorted = lockers[key]!.sorted { ($0.sequence, $0.txn) < ($1.sequence, $1.txn) }
            for (earlier, later) in zip(sorted, sorted.dropFirst()) {
                addEdge(from: earlier.txn, to: later.txn, participant: participant, key: key)
            }
        }
    }

    private mutating func addEdge(from: Int, to: Int, participant: String, key: String) {
        // A txn listed twice at one participant orders nothing against itself.
        guard from != to, seen.insert(UInt64(from) << 32 | UInt64(to)).inserted else { return }
        outgoing[from].append(edges.count)
        incoming[to].append(edges.count)
        edges.append((from, to, participant, key))
    }

    /// One cycle, or nil if the graph is acyclic. Kahn's algorithm removes every txn that is on
    /// no cycle and has no predecessor left; each txn that remains has a predecessor that also
    /// remains, so walking back from one along remaining predecessors must come round to a txn
    /// already on the walk: the walk from there is a cycle.
    func cycle() -> [Serializability.Edge]? {
        let remaining = txnsLeftByKahn()
        guard let start = remaining.firstIndex(of: true) else { return nil }
        var stepAt = Array(repeating: -1, count: txns.count)
        var walk: [Int] = []  // edges, each entering the txn the walk was at
        var current = start
        while stepAt[current] < 0 {
            stepAt[current] = walk.count
            let edge = incoming[current].first { remaining[edges[$0].from] }!
            walk.append(edge)
            current = edges[edge].from
        }
        // The walk ran backwards: reversed, the edges from where it closed run forwards.
        var loop = Array(walk[stepAt[current]...].reversed())
        let lowest = loop.indices.min { edges[loop[$0]].from < edges[loop[$1]].from }!
        loop = Array(loop[lowest...] + loop[..<lowest])
        return loop.map { edge in
            let (from, to, participant, key) = edges[edge]
            return Serializability.Edge(from: txns[from], to: txns[to], participant: participant, key: key)
        }
    }

    /// Per txn: whether it is left once Kahn's algorithm has removed, again and again, every txn
    /// with no predecessor left. None left: the graph is acyclic.
    private func txnsLeftByKahn() -> [Bool] {
        var predecessorsLeft = incoming.map(\.count)
        var ready = predecessorsLeft.indices.filter { predecessorsLeft[$0] == 0 }
        var remaining = Array(repeating: true, count: txns.count)
        while let txn = ready.popLast() {
            remaining[txn] = false
            for edge in outgoing[txn] {
                let next = edges[edge].to
                predecessorsLeft[next] -= 1
                if predecessorsLeft[next] == 0 { ready.append(next) }
            }
        }
        return remaining
    }
}
