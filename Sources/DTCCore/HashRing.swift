/// A stable 64-bit hash (FNV-1a with a murmur finaliser). Swift's `Hasher` is seeded per
/// process, so it cannot place keys on a ring that several processes must agree on.
public func stableHash(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    hash ^= hash >> 33
    hash = hash &* 0xff51_afd7_ed55_8ccd
    hash ^= hash >> 33
    hash = hash &* 0xc4ce_b9fe_1a85_ec53
    hash ^= hash >> 33
    return hash
}

/// A consistent-hash ring with virtual nodes: adding or removing a node moves only about 1/N
/// of the key space.
public struct HashRing: Sendable, Equatable {
    private struct Point: Sendable, Equatable {
        var position: UInt64
        var node: String
    }

    public let nodes: [String]
    private let points: [Point]

    public init(nodes: [String], virtualNodes: Int = 256) {
        precondition(!nodes.isEmpty, "a ring needs at least one node")
        precondition(virtualNodes > 0, "virtualNodes must be positive, got \(virtualNodes)")
        // `successors` looks for `nodes.count` distinct nodes: a repeated name would loop forever.
        precondition(Set(nodes).count == nodes.count, "ring nodes must be distinct, got \(nodes)")
        self.nodes = nodes
        var points: [Point] = []
        points.reserveCapacity(nodes.count * virtualNodes)
        for node in nodes {
            for replica in 0..<virtualNodes {
                points.append(Point(position: stableHash("\(node)#\(replica)"), node: node))
            }
        }
        self.points = points.sorted { ($0.position, $0.node) < ($1.position, $1.node) }
    }

    /// The node that owns `key`: the first point clockwise from the key's hash.
    public func owner(ofKey key: String) -> String {
        successors(of: stableHash(key), count: 1)[0]
    }

    /// The first `count` distinct nodes clockwise from `position`.
    public func successors(of position: UInt64, count: Int) -> [String] {
        let wanted = min(count, nodes.count)
        var result: [String] = []
        var index = firstIndex(atOrAfter: position)
        while result.count < wanted {
            let node = points[index % points.count].node
            if !result.contains(node) { result.append(node) }
            index += 1
        }
        return result
    }

    private func firstIndex(atOrAfter position: UInt64) -> Int {
        var low = 0
        var high = points.count
        while low < high {
            let mid = (low + high) / 2
            if points[mid].position < position { low = mid + 1 } else { high = mid }
        }
        return low
    }
}

/// Maps txnIDs to partitions and partitions to replica groups. The first member of a group is
/// the partition's home leader.
public struct PartitionMap: Sendable, Equatable {
    public let partitionCount: UInt32
    public let replicationFactor: Int
    public let ring: HashRing
    private let groups: [[String]]

    public init(nodes: [String], partitionCount: UInt32, replicationFactor: Int, virtualNodes: Int = 256) {
        precondition(partitionCount > 0, "partitionCount must be positive")
        precondition(replicationFactor > 0, "replicationFactor must be positive")
        self.partitionCount = partitionCount
        self.replicationFactor = replicationFactor
        let ring = HashRing(nodes: nodes, virtualNodes: virtualNodes)
        self.ring = ring
        self.groups = (0..<partitionCount).map { partition in
            ring.successors(of: UInt64(partition) &* (UInt64.max / UInt64(partitionCount)), count: replicationFactor)
        }
    }

    public func partition(of txnID: TxnID) -> UInt32 {
        UInt32(stableHash(txnID.rawValue) % UInt64(partitionCount))
    }

    public func replicaGroup(of partition: UInt32) -> [String] {
        groups[Int(partition)]
    }

    /// The node that leads `partition` while every node is up.
    public func homeLeader(of partition: UInt32) -> String {
        groups[Int(partition)][0]
    }

    public func partitions(ledBy node: String) -> [UInt32] {
        (0..<partitionCount).filter { homeLeader(of: $0) == node }
    }
}
