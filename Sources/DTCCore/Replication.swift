/// The leader's side of one partition's log replication. Every batch of records appended to
/// the partition gets the next ticket; each member reports the highest ticket it holds
/// durably (the leader itself included). What depends on the records (messages to RMs,
/// replies to clients) is held until a quorum of the replica group holds every ticket issued
/// before it: a decision is made only once a quorum has it (DESIGN.md, "Words").
///
/// Tickets of a tenure start above every ticket of the partition's earlier tenures (they are
/// numbered from the epoch's counter), so an ack that arrives late from an earlier tenure
/// counts for nothing.
///
/// `Release` is whatever the shell holds back; the core only orders it.
public struct ReplicationLeader<Release> {
    public let members: [String]
    /// The ticket before this tenure's first.
    public let base: UInt64
    public private(set) var issued: UInt64
    private var durable: [String: UInt64] = [:]
    private var held: [(ticket: UInt64, release: Release)] = []

    /// Members whose acks count only once they have acked a catch-up of this tenure.
    private var awaitingCatchUp: Set<String>

    /// `needsCatchUp` are members that did not promise the epoch: they may lack what the
    /// promisers hold (the ENDs a takeover does not append again), so their acks count only
    /// from their first catch-up on.
    public init(members: [String], epoch: Epoch, needsCatchUp: Set<String> = []) {
        precondition(epoch.counter < 1 << 31, "epoch counter \(epoch.counter) leaves no room for tickets")
        self.members = members
        self.base = epoch.counter << 32
        self.issued = base
        self.awaitingCatchUp = needsCatchUp
    }

    /// Whether `member`'s acks do not count yet: it must get a catch-up first.
    public func awaitsCatchUp(_ member: String) -> Bool { awaitingCatchUp.contains(member) }

    public var quorum: Int { members.count / 2 + 1 }

    /// The highest ticket that a quorum of members holds durably.
    public var quorumDurable: UInt64 {
        let acked = members.map { durable[$0] ?? base }.sorted(by: >)
        return acked[quorum - 1]
    }

    /// The highest ticket that every member holds durably.
    public var allDurable: UInt64 {
        members.map { durable[$0] ?? base }.min()!
    }

    /// The ticket for the next batch of records.
    public mutating func issue() -> UInt64 {
        precondition(issued - base < UInt64(UInt32.max), "a tenure ran out of tickets")
        issued += 1
        return issued
    }

    /// Returns `release` if everything issued so far is on a quorum; otherwise keeps it until
    /// `acknowledged` releases it.
    public mutating func hold(_ release: Release) -> Release? {
        if quorumDurable >= issued { return release }
        held.append((issued, release))
        return nil
    }

    /// `member` holds every ticket up to `ticket` durably; returns what that releases.
    public mutating func acknowledged(_ ticket: UInt64, by member: String) -> [Release] {
        precondition(members.contains(member), "ack from \(member), not a member of \(members)")
        guard !awaitingCatchUp.contains(member) else { return [] }
        durable[member] = max(durable[member] ?? base, ticket)
        let ready = quorumDurable
        let released = held.prefix { $0.ticket <= ready }
        held.removeFirst(released.count)
        return released.map(\.release)
    }

    /// Whether `member` has not acknowledged everything issued: a leader that hears nothing
    /// from a member that is behind sends it a catch-up, since an append may have been lost.
    public func isBehind(_ member: String) -> Bool {
        (durable[member] ?? base) < issued
    }

    /// `member` (re)connected and gets the partition's active records again: its acks count
    /// from that catch-up on, since it may have lost what it held before.
    public mutating func catchUp(_ member: String) {
        durable[member] = base
        awaitingCatchUp.remove(member)
    }

    /// What is still held; a leader that steps down must send none of it.
    public var pending: [Release] { held.map(\.release) }
}

extension ReplicationLeader: Sendable where Release: Sendable {}

/// The epochs a node has promised, per partition, and the rules that fence a stale leader:
/// a member accepts appends only at or above its promise, and promises a candidate only an
/// epoch above every epoch it has promised or led.
public struct PartitionPromises: Sendable {
    public private(set) var promised: [UInt32: Epoch]

    public init(_ promised: [UInt32: Epoch] = [:]) {
        self.promised = promised
    }

    public subscript(_ partition: UInt32) -> Epoch { promised[partition] ?? .zero }

    public enum AppendVerdict: Equatable, Sendable {
        /// Accept; `promise` is a higher epoch to persist with the records (nil if unchanged).
        case accept(promise: Epoch?, stepDown: Bool)
        /// Refuse; the leader learns the epoch promised here.
        case refuse(promised: Epoch)
    }

    /// A leader's append at `epoch`. `led` is the epoch at which this node itself leads the
    /// partition, if it does: an append at a higher epoch makes it step down.
    public mutating func append(partition: UInt32, epoch: Epoch, led: Epoch?, isReady: Bool) -> AppendVerdict {
        let current = self[partition]
        guard isReady else { return .refuse(promised: .zero) }
        guard epoch >= current, led.map({ epoch > $0 }) ?? true else { return .refuse(promised: current) }
        guard epoch > current else { return .accept(promise: nil, stepDown: led != nil) }
        promised[partition] = epoch
        return .accept(promise: epoch, stepDown: led != nil)
    }

    /// A candidate's FENCE at `epoch`: granted (to persist before answering) or refused with
    /// the epoch that beats it. The epoch promised already is granted again to the candidate
    /// that claimed it (`epoch.node` is its id): a repeated FENCE, or a member that adopted the
    /// candidate's epoch from its heartbeat reply before the FENCE arrived. Refusing it would
    /// fail the candidate's takeover at its own ballot.
    public mutating func fence(partition: UInt32, epoch: Epoch, led: Epoch?, isReady: Bool, candidate: NodeID? = nil) -> Result<Epoch, Refusal> {
        let current = max(self[partition], led ?? .zero)
        let again = epoch == self[partition] && epoch.node == candidate?.rawValue && epoch > (led ?? .zero)
        guard isReady, epoch > current || again else { return .failure(Refusal(promised: current)) }
        promised[partition] = epoch
        return .success(epoch)
    }

    public struct Refusal: Error, Equatable, Sendable {
        public var promised: Epoch
    }

    /// Adopts a higher epoch learned from a peer: it only makes this node refuse more.
    public mutating func adopt(_ partition: UInt32, _ epoch: Epoch) {
        promised[partition] = max(self[partition], epoch)
    }
}

/// One takeover attempt of a set of partitions: the candidate's new epochs, the members that
/// promised them, and the rows they returned. A partition is won with promises from a quorum
/// of its replica group (the candidate's own included); its merged rows then go to
/// `Coordinator.takeOver`.
public struct Takeover: Sendable {
    public let candidate: String
    public let epochs: [UInt32: Epoch]
    private let groups: [UInt32: [String]]
    private var promisedBy: [UInt32: Set<String>] = [:]
    private var rows: [UInt32: [TxnRow]] = [:]
    /// Epochs that refusals showed to be above the candidate's.
    public private(set) var refusedAt: [UInt32: Epoch] = [:]
    private var refusedBy: [UInt32: Set<String>] = [:]

    /// `seen` is the highest epoch the candidate knows of per partition (promised, led by a
    /// peer or observed); each new epoch is above it. `groups` are the replica groups.
    public init(candidate: String, nodeID: NodeID, seen: [UInt32: Epoch], groups: [UInt32: [String]]) {
        self.candidate = candidate
        self.groups = groups
        self.epochs = seen.mapValues { $0.next(for: nodeID) }
    }

    /// The candidate's own promise and rows (persisted before any FENCE goes out).
    public mutating func promisedLocally(_ partition: UInt32, rows ownRows: [TxnRow]) {
        promised(partition, by: candidate, rows: ownRows)
    }

    public mutating func promised(_ partition: UInt32, by member: String, rows memberRows: [TxnRow]) {
        guard let group = groups[partition], group.contains(member), epochs[partition] != nil else { return }
        promisedBy[partition, default: []].insert(member)
        rows[partition, default: []] += memberRows
    }

    public mutating func refused(_ partition: UInt32, promised: Epoch, by member: String? = nil) {
        refusedAt[partition] = max(refusedAt[partition] ?? .zero, promised)
        if let member { refusedBy[partition, default: []].insert(member) }
    }

    public func promisers(of partition: UInt32) -> [String] { (promisedBy[partition] ?? []).sorted() }

    /// The partitions won, each with its epoch, the members' rows merged, and the txns whose
    /// row every promiser holds ENDed (`Coordinator.takeOver`'s `settledEnds`).
    public func won() -> [(partition: UInt32, epoch: Epoch, rows: [TxnRow], endedAtEveryPromiser: Set<TxnID>)] {
        epochs.keys.sorted().compactMap { partition in
            guard let group = groups[partition], promisers(of: partition).count >= group.count / 2 + 1 else { return nil }
            let memberRows = rows[partition] ?? []
            return (partition, epochs[partition]!, mergeRows(memberRows), Self.ended(in: memberRows, by: promisers(of: partition).count))
        }
    }

    /// The txns ENDed (with their decision) in `promisers` of the rows: each promiser answers
    /// once, with one row per txn.
    private static func ended(in memberRows: [TxnRow], by promisers: Int) -> Set<TxnID> {
        var counts: [TxnID: Int] = [:]
        for row in memberRows where row.isEnded && row.decision != nil { counts[row.txnID, default: 0] += 1 }
        return Set(counts.filter { $0.value == promisers }.keys)
    }

    /// Whether every partition has a quorum of promises, or so many refusals that the members
    /// still to answer cannot make one: later answers cannot change what is won, so the
    /// candidate need not wait for members that are down. (One refusal alone does not settle
    /// a partition: the other members may still make a quorum.)
    public var isSettled: Bool {
        epochs.keys.allSatisfy { partition in
            let group = groups[partition] ?? []
            let quorum = group.count / 2 + 1
            return promisers(of: partition).count >= quorum || group.count - (refusedBy[partition]?.count ?? 0) < quorum
        }
    }

    public func lost() -> [UInt32] {
        let won = Set(won().map(\.partition))
        return epochs.keys.sorted().filter { !won.contains($0) }
    }
}

/// When a led partition's ENDed rows may leave the log: once every member of the replica
/// group holds the END durably and the retention period (the window in which a txnID is
/// deduplicated) has passed. A member that missed the END would otherwise keep an older row
/// of the txn, and a later takeover with that member could abort a txn that committed.
public struct TrimSchedule: Sendable {
    private var pending: [UInt32: [(ticket: UInt64, txnID: TxnID, due: UInt64)]] = [:]

    public init() {}

    /// `txnID`'s END went out in `ticket`; it may be trimmed from `due` on.
    public mutating func ended(_ txnID: TxnID, partition: UInt32, ticket: UInt64, due: UInt64) {
        pending[partition, default: []].append((ticket, txnID, due))
    }

    /// Txns ENDed but not yet trimmed: a catch-up carries their END, since the member it goes
    /// to may have missed it.
    public func ended(partition: UInt32) -> [TxnID] { (pending[partition] ?? []).map(\.txnID) }

    /// Takes the txns whose END every member holds (`allDurable`) and whose retention passed.
    public mutating func due(partition: UInt32, allDurable: UInt64, now: UInt64) -> [TxnID] {
        guard let queue = pending[partition] else { return [] }
        let ready = queue.prefix { $0.due <= now && $0.ticket <= allDurable }
        pending[partition]!.removeFirst(ready.count)
        return ready.map(\.txnID)
    }

    /// The node no longer leads the partition: the next leader trims.
    public mutating func forget(partition: UInt32) {
        pending[partition] = nil
    }
}
