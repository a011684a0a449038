import Testing

@testable import DTCCore

/// Routing: a consistent-hash ring with virtual nodes, and the partition map built on it.
@Suite struct RingTests {
    static let keys = (0..<100_000).map { "key-\($0)" }

    @Test func threeNodesEachOwnAThirdOfTheKeysWithinFifteenPercent() {
        let ring = HashRing(nodes: ["n1", "n2", "n3"], virtualNodes: 256)
        var owned: [String: Int] = [:]
        for key in Self.keys { owned[ring.owner(ofKey: key), default: 0] += 1 }
        let fair = Double(Self.keys.count) / 3
        for node in ring.nodes {
            let share = Double(owned[node, default: 0])
            #expect(abs(share - fair) <= 0.15 * fair, "\(node) owns \(Int(share)) keys, fair is \(Int(fair))")
        }
    }

    @Test func addingAFourthNodeMovesAboutAQuarterOfTheKeysAllToIt() {
        let before = HashRing(nodes: ["n1", "n2", "n3"], virtualNodes: 256)
        let after = HashRing(nodes: ["n1", "n2", "n3", "n4"], virtualNodes: 256)
        var moved = 0
        for key in Self.keys {
            let owner = after.owner(ofKey: key)
            guard owner != before.owner(ofKey: key) else { continue }
            moved += 1
            #expect(owner == "n4", "\(key) moved between old nodes")
        }
        #expect(moved > 0)
        #expect(Double(moved) <= (0.25 + 0.05) * Double(Self.keys.count), "\(moved) keys moved")
    }

    @Test func everyReplicaGroupHasRDistinctNodesLedByItsFirst() {
        let map = PartitionMap(nodes: ["n1", "n2", "n3", "n4", "n5"], partitionCount: 64, replicationFactor: 3)
        for partition in 0..<map.partitionCount {
            let group = map.replicaGroup(of: partition)
            #expect(group.count == 3 && Set(group).count == 3, "partition \(partition): \(group)")
            #expect(map.homeLeader(of: partition) == group[0])
        }
        let small = PartitionMap(nodes: ["n1", "n2"], partitionCount: 4, replicationFactor: 3)
        #expect(small.replicaGroup(of: 0).sorted() == ["n1", "n2"], "R above the node count takes every node once")
    }

    @Test func everyPartitionIsLedByExactlyOneNode() {
        let nodes = ["n1", "n2", "n3", "n4"]
        let map = PartitionMap(nodes: nodes, partitionCount: 128, replicationFactor: 3)
        let led = nodes.flatMap { map.partitions(ledBy: $0) }
        #expect(led.sorted() == Array(0..<128))
        #expect(nodes.allSatisfy { !map.partitions(ledBy: $0).isEmpty }, "every node leads some partitions")
    }

    @Test func aTxnAlwaysMapsToTheSamePartition() {
        let map = PartitionMap(nodes: ["n1", "n2", "n3"], partitionCount: 32, replicationFactor: 3)
        let again = PartitionMap(nodes: ["n1", "n2", "n3"], partitionCount: 32, replicationFactor: 3)
        #expect(map == again)
        for index in 0..<1_000 {
            let id = TxnID("txn-\(index)")
            #expect(map.partition(of: id) == again.partition(of: id))
            #expect(map.partition(of: id) < 32)
        }
    }

    /// Processes must agree on placement: the hash is fixed, not Swift's per-process `Hasher`.
    /// If this constant changes, every deployed ring and partition map moves.
    @Test func stableHashIsTheSameInEveryProcess() {
        #expect(stableHash("txn-42") == 0x8f67_3f18_7a3b_4f62)
        #expect(stableHash("") == 0xefd0_1f60_ba99_2926)
    }
}
