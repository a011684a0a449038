import DTCCore

/// The failure detector and what this node knows of who leads each partition. A peer is
/// alive while it was heard from (a heartbeat either way) within the suspicion timeout.
struct Membership {
    let me: String
    let peers: [String]
    let suspicionTimeout: UInt64
    let startedAt: UInt64
    /// Peers to hear from, with itself a majority of a replica group.
    let peersForMajority: Int
    private(set) var now: UInt64
    private(set) var lastHeard: [String: UInt64] = [:]
    private(set) var isReady = false
    private var leaders: [UInt32: (node: String, epoch: Epoch)] = [:]
    private var observedEpochs: [UInt32: Epoch] = [:]

    init(me: String, peers: [String], replicationFactor: Int, suspicionTimeout: UInt64, startedAt: UInt64) {
        self.peersForMajority = replicationFactor / 2
        self.me = me
        self.peers = peers
        self.suspicionTimeout = suspicionTimeout
        self.startedAt = startedAt
        self.now = startedAt
        updateReadiness()
    }

    func isAlive(_ node: String) -> Bool {
        if node == me { return true }
        guard let heard = lastHeard[node] else { return false }
        return now < heard + suspicionTimeout
    }

    func leader(of partition: UInt32) -> (node: String, epoch: Epoch)? { leaders[partition] }

    /// The highest epoch seen for the partition from any source.
    func observed(_ partition: UInt32) -> Epoch? { observedEpochs[partition] }

    mutating func heard(_ peer: String, at time: UInt64, isReady peerIsReady: Bool) {
        now = max(now, time)
        lastHeard[peer] = time
        updateReadiness()
    }

    /// After this node itself stalled: every peer it knew counts as just heard from.
    mutating func assumeAlive(at time: UInt64) {
        now = max(now, time)
        for peer in lastHeard.keys { lastHeard[peer] = time }
    }

    mutating func tick(now time: UInt64) {
        now = max(now, time)
        updateReadiness()
    }

    /// `leader` leads `partition` at `epoch`, unless a higher epoch is already known.
    mutating func learn(_ partition: UInt32, leader: String, epoch: Epoch) {
        observe(partition, epoch: epoch)
        if let known = leaders[partition], known.epoch > epoch { return }
        leaders[partition] = (leader, epoch)
    }

    /// `peer` says (in a heartbeat) that it leads exactly `partitions`: a partition recorded as
    /// led by it and missing from the list was given up (it stepped down, e.g. after promising
    /// a candidate whose takeover then failed). Nobody is known to lead it any more, so its
    /// first live member may take it over; a stale entry naming a live peer would stop every
    /// member from ever doing so (invariant 6: after faults stop, every txn finishes).
    mutating func peer(_ peer: String, leadsOnly partitions: Set<UInt32>) {
        for (partition, leader) in leaders where leader.node == peer && !partitions.contains(partition) {
            leaders[partition] = nil
        }
    }

    /// `leader` no longer leads `partition` (it stepped down); who does is not known yet.
    mutating func forget(_ partition: UInt32, leader: String) {
        if leaders[partition]?.node == leader { leaders[partition] = nil }
    }

    mutating func observe(_ partition: UInt32, epoch: Epoch) {
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
}
