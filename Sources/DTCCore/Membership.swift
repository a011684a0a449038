/// The failure detector and what this node knows of who leads each partition. A peer is
/// alive while it was heard from (a heartbeat either way) within the suspicion timeout.
/// Times are the caller's milliseconds: the core reads no clock.
public struct Membership: Sendable {
    public struct Leader: Hashable, Sendable {
        public var node: String
        public var epoch: Epoch
    }

    public let me: String
    public let peers: [String]
    public let suspicionTimeout: UInt64
    public let startedAt: UInt64
    /// Peers to hear from, with itself a majority of a replica group.
    public let peersForMajority: Int
    public private(set) var now: UInt64
    public private(set) var lastHeard: [String: UInt64] = [:]
    public private(set) var isReady = false
    private var leaders: [UInt32: Leader] = [:]
    private var observedEpochs: [UInt32: Epoch] = [:]

    public init(me: String, peers: [String], replicationFactor: Int, suspicionTimeout: UInt64, startedAt: UInt64) {
        self.peersForMajority = replicationFactor / 2
        self.me = me
        self.peers = peers
        self.suspicionTimeout = suspicionTimeout
        self.startedAt = startedAt
        self.now = startedAt
        updateReadiness()
    }

    public func isAlive(_ node: String) -> Bool {
        if node == me { return true }
        guard let heard = lastHeard[node] else { return false }
        return now < heard + suspicionTimeout
    }

    public func leader(of partition: UInt32) -> Leader? { leaders[partition] }

    /// The highest epoch seen for the partition from any source.
    public func observed(_ partition: UInt32) -> Epoch? { observedEpochs[partition] }

    public mutating func heard(_ peer: String, at time: UInt64, isReady peerIsReady: Bool) {
        now = max(now, time)
        lastHeard[peer] = time
        updateReadiness()
    }

    /// After this node itself stalled: every peer it knew counts as just heard from.
    public mutating func assumeAlive(at time: UInt64) {
        now = max(now, time)
        for peer in lastHeard.keys { lastHeard[peer] = time }
    }

    public mutating func tick(now time: UInt64) {
        now = max(now, time)
        updateReadiness()
    }

    /// `leader` leads `partition` at `epoch`, unless a higher epoch is already known.
    public mutating func learn(_ partition: UInt32, leader: String, epoch: Epoch) {
        observe(partition, epoch: epoch)
        if let known = leaders[partition], known.epoch > epoch { return }
        leaders[partition] = Leader(node: leader, epoch: epoch)
    }

    /// A peer's full list of what it leads: learns each, and forgets the peer as the leader of
    /// any partition it no longer lists (it stepped down or restarted). Otherwise a leader
    /// that restarted before anyone suspected it would still count as the live leader of
    /// partitions it has dropped, and nobody would take them over.
    public mutating func peerLeads(_ peer: String, _ leads: [UInt32: Epoch]) {
        for (partition, epoch) in leads { learn(partition, leader: peer, epoch: epoch) }
        for (partition, leader) in leaders where leader.node == peer && leads[partition] == nil {
            leaders[partition] = nil
        }
    }

    /// `leader` no longer leads `partition` (it stepped down); who does is not known yet.
    public mutating func forget(_ partition: UInt32, leader: String) {
        if leaders[partition]?.node == leader { leaders[partition] = nil }
    }

    public mutating func observe(_ partition: UInt32, epoch: Epoch) {
        observedEpochs[partition] = max(observedEpochs[partition] ?? .zero, epoch)
    }

    /// A node takes part (promises, accepts, takes over) only once it has heard what its peers
    /// lead and have promised: from every peer, or after the suspicion timeout from enough
    /// peers to make a replica-group majority with itself. A restarted node so never acts on
    /// stale epochs.
    private mutating func updateReadiness() {
        guard !isReady else { return }
        let heardFrom = peers.filter { lastHeard[$0] != nil }.count
        if heardFrom == peers.count || (now >= startedAt + suspicionTimeout && heardFrom >= peersForMajority) {
            isReady = true
        }
    }

    /// Whether this node should fence `partition` now: it is not led by a live leader this
    /// node knows of, and this node is the first live member of its replica group.
    public func shouldTakeOver(_ partition: UInt32, members: [String]) -> Bool {
        if let leader = leaders[partition], leader.node != me, isAlive(leader.node) { return false }
        return members.first { isAlive($0) } == me
    }
}
