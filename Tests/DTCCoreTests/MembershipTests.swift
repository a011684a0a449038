import Testing

@testable import DTCCore

/// What a node believes about who leads each partition decides whether it takes one over.
@Suite struct MembershipTests {
    @Test func aPartitionAPeerNoLongerListsAsLedIsNoLongerBelievedLedByIt() {
        var membership = Membership(me: "n1", peers: ["n2", "n3"], replicationFactor: 3, suspicionTimeout: 800, startedAt: 0)
        membership.heard("n2", at: 10, isReady: true)
        membership.learn(7, leader: "n2", epoch: Epoch(counter: 3, node: 2))
        membership.learn(9, leader: "n2", epoch: Epoch(counter: 3, node: 2))
        membership.learn(8, leader: "n3", epoch: Epoch(counter: 2, node: 3))

        // n2 stepped down from 7 (it promised a candidate whose takeover failed) and still leads 9.
        membership.peerLeads("n2", [9: Epoch(counter: 3, node: 2)])
        #expect(membership.leader(of: 7) == nil, "a live peer that gave a partition up must not block its takeover forever")
        #expect(membership.leader(of: 9)?.node == "n2")
        #expect(membership.leader(of: 8)?.node == "n3", "what other peers lead is untouched")
        #expect(membership.observed(7) == Epoch(counter: 3, node: 2), "the epoch seen is kept: a new leader must go above it")
    }
}
