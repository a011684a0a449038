import Testing

@testable import DTCCore

/// Quorum appends, promises and takeover: the rules that make a decision "made" and fence a
/// stale leader (DESIGN.md, "Failover").
@Suite struct ReplicationTests {
    let group = ["n1", "n2", "n3"]

    // MARK: - ReplicationLeader

    @Test func whatDependsOnRecordsWaitsUntilAQuorumHoldsThem() {
        var leader = ReplicationLeader<String>(members: group, epoch: epoch1)
        let ticket = leader.issue()
        #expect(leader.hold("commit t1") == nil)
        #expect(leader.acknowledged(ticket, by: "n1").isEmpty)
        #expect(leader.acknowledged(ticket, by: "n3") == ["commit t1"])
        #expect(leader.pending.isEmpty)
    }

    @Test func aReleaseWaitsForEveryTicketIssuedBeforeIt() {
        var leader = ReplicationLeader<String>(members: group, epoch: epoch1)
        let first = leader.issue()
        #expect(leader.hold("after 1") == nil)
        let second = leader.issue()
        #expect(leader.hold("after 2") == nil)
        _ = leader.acknowledged(first, by: "n1")
        #expect(leader.acknowledged(first, by: "n2") == ["after 1"])
        _ = leader.acknowledged(second, by: "n1")
        #expect(leader.pending == ["after 2"])
        #expect(leader.acknowledged(second, by: "n2") == ["after 2"])
    }

    @Test func nothingIsHeldWhenEverythingIssuedIsOnAQuorum() {
        var leader = ReplicationLeader<String>(members: group, epoch: epoch1)
        #expect(leader.hold("reply") == "reply")
        let ticket = leader.issue()
        _ = leader.acknowledged(ticket, by: "n1")
        _ = leader.acknowledged(ticket, by: "n2")
        #expect(leader.hold("reply") == "reply")
    }

    @Test func aMemberThatReconnectsCountsOnlyFromItsCatchUp() {
        var leader = ReplicationLeader<String>(members: group, epoch: epoch1)
        let first = leader.issue()
        _ = leader.acknowledged(first, by: "n1")
        _ = leader.acknowledged(first, by: "n2")
        leader.catchUp("n2")
        _ = leader.issue()
        #expect(leader.hold("after 2") == nil)
        #expect(leader.quorumDurable == leader.base)
    }

    @Test func aLateAckFromAnEarlierTenureCountsForNothing() {
        var earlier = ReplicationLeader<String>(members: group, epoch: epoch1)
        var lateTicket: UInt64 = 0
        for _ in 0..<5 { lateTicket = earlier.issue() }
        var leader = ReplicationLeader<String>(members: group, epoch: epoch2)
        _ = leader.issue()
        #expect(leader.hold("reply") == nil)
        #expect(leader.acknowledged(lateTicket, by: "n2").isEmpty)
        #expect(leader.acknowledged(lateTicket, by: "n3").isEmpty)
        #expect(leader.pending == ["reply"])
    }

    // MARK: - PartitionPromises

    @Test func aFollowerRefusesAppendsBelowItsPromiseAndPromisesHigherOnes() {
        var promises = PartitionPromises([7: epoch2])
        #expect(promises.append(partition: 7, epoch: epoch1, led: nil, isReady: true) == .refuse(promised: epoch2))
        #expect(promises.append(partition: 7, epoch: epoch2, led: nil, isReady: true) == .accept(promise: nil, stepDown: false))
        let higher = Epoch(counter: 3, node: 1)
        #expect(promises.append(partition: 7, epoch: higher, led: nil, isReady: true) == .accept(promise: higher, stepDown: false))
        #expect(promises[7] == higher)
    }

    @Test func aLeaderStepsDownOnlyForAHigherEpochsAppend() {
        var promises = PartitionPromises([7: epoch1])
        #expect(promises.append(partition: 7, epoch: epoch1, led: epoch1, isReady: true) == .refuse(promised: epoch1))
        #expect(promises.append(partition: 7, epoch: epoch2, led: epoch1, isReady: true) == .accept(promise: epoch2, stepDown: true))
    }

    @Test func aNodeThatIsNotReadyRefusesEverything() {
        var promises = PartitionPromises()
        #expect(promises.append(partition: 7, epoch: epoch2, led: nil, isReady: false) == .refuse(promised: .zero))
        #expect(promises.fence(partition: 7, epoch: epoch2, led: nil, isReady: false) == .failure(.init(promised: .zero)))
        #expect(promises[7] == .zero)
    }

    @Test func aFenceIsGrantedOnlyAboveEveryEpochPromisedOrLed() {
        var promises = PartitionPromises([7: epoch1])
        #expect(promises.fence(partition: 7, epoch: epoch1, led: nil, isReady: true) == .failure(.init(promised: epoch1)))
        #expect(promises.fence(partition: 7, epoch: epoch2, led: Epoch(counter: 5, node: 1), isReady: true) == .failure(.init(promised: Epoch(counter: 5, node: 1))))
        #expect(promises.fence(partition: 7, epoch: epoch2, led: nil, isReady: true) == .success(epoch2))
        #expect(promises.append(partition: 7, epoch: epoch1, led: nil, isReady: true) == .refuse(promised: epoch2))
    }

    @Test func theEpochPromisedIsGrantedAgainOnlyToTheCandidateWhoseBallotItIs() {
        let ballot = Epoch(counter: 9, node: 3)
        var promises = PartitionPromises([7: ballot])
        #expect(promises.fence(partition: 7, epoch: ballot, led: nil, isReady: true, candidate: 3) == .success(ballot))
        #expect(promises.fence(partition: 7, epoch: ballot, led: nil, isReady: true, candidate: 2) == .failure(.init(promised: ballot)))
        #expect(promises.fence(partition: 7, epoch: ballot, led: nil, isReady: true) == .failure(.init(promised: ballot)))
        #expect(promises.fence(partition: 7, epoch: ballot, led: ballot, isReady: true, candidate: 3) == .failure(.init(promised: ballot)))
        #expect(promises.fence(partition: 7, epoch: Epoch(counter: 8, node: 3), led: nil, isReady: true, candidate: 3) == .failure(.init(promised: ballot)))
    }

    // MARK: - Takeover

    @Test func oneRefusalDoesNotSettleATakeoverThatTheOtherMembersCanStillWin() {
        let group = ["n1", "n2", "n3"]
        var takeover = Takeover(candidate: "n2", nodeID: 2, seen: [7: epoch1], groups: [7: group])
        takeover.promisedLocally(7, rows: [])
        #expect(!takeover.isSettled)
        takeover.refused(7, promised: Epoch(counter: 9, node: 3), by: "n3")
        #expect(!takeover.isSettled, "n1 may still promise, which makes a quorum with n2")
        takeover.promised(7, by: "n1", rows: [])
        #expect(takeover.isSettled && takeover.won().map(\.partition) == [7])

        var refusedTwice = Takeover(candidate: "n2", nodeID: 2, seen: [7: epoch1], groups: [7: group])
        refusedTwice.promisedLocally(7, rows: [])
        refusedTwice.refused(7, promised: epoch2, by: "n1")
        refusedTwice.refused(7, promised: epoch2, by: "n3")
        #expect(refusedTwice.isSettled && refusedTwice.lost() == [7])
    }

    @Test func aTakeoverWinsWithAQuorumAndMergesWhatTheMembersReturned() {
        var takeover = Takeover(candidate: "n2", nodeID: 2, seen: [7: epoch1], groups: [7: group])
        #expect(takeover.epochs[7] == epoch1.next(for: 2))
        takeover.promisedLocally(7, rows: [])
        #expect(takeover.won().isEmpty && takeover.lost() == [7])

        var committed = TxnRow(txnID: TxnID("t1"))
        committed.apply(startRecord("t1", stamp: 5).record)
        committed.apply(decisionRecord("t1", .commit, epoch: epoch1).record)
        takeover.promised(7, by: "n3", rows: [committed])
        let won = takeover.won()
        #expect(won.count == 1 && won[0].partition == 7 && won[0].epoch == epoch1.next(for: 2))
        #expect(won[0].rows == [committed])
        #expect(takeover.lost().isEmpty)
    }

    @Test func aTxnCountsAsEndedAtEveryPromiserOnlyIfEachPromiserReturnedItEnded() {
        var takeover = Takeover(candidate: "n2", nodeID: 2, seen: [7: epoch1], groups: [7: group])
        let endedEverywhere = row("t1", stamp: 5, branches: order, decision: (.commit, "", epoch1), ended: true)
        let endedHere = row("t2", stamp: 6, branches: order, decision: (.commit, "", epoch1), ended: true)
        let decidedThere = row("t2", stamp: 6, branches: order, decision: (.commit, "", epoch1))
        takeover.promisedLocally(7, rows: [endedEverywhere, endedHere])
        takeover.promised(7, by: "n3", rows: [endedEverywhere, decidedThere])
        let won = takeover.won()
        #expect(won.count == 1 && won[0].endedAtEveryPromiser == [TxnID("t1")])
        #expect(won[0].rows.map(\.txnID) == [TxnID("t1"), TxnID("t2")] && won[0].rows.allSatisfy(\.isEnded))
    }

    @Test func promisesFromOutsideTheReplicaGroupDoNotCount() {
        var takeover = Takeover(candidate: "n2", nodeID: 2, seen: [7: epoch1], groups: [7: group])
        takeover.promisedLocally(7, rows: [])
        takeover.promised(7, by: "n4", rows: [])
        takeover.promised(8, by: "n3", rows: [])
        #expect(takeover.won().isEmpty)
        #expect(takeover.promisers(of: 7) == ["n2"])
    }

    // MARK: - Membership

    @Test func theFirstLiveMemberTakesOverUnlessALiveLeaderIsKnown() {
        var membership = Membership(me: "n2", peers: ["n1", "n3"], replicationFactor: 3, suspicionTimeout: 100, startedAt: 0)
        membership.heard("n3", at: 10, isReady: true)
        #expect(membership.shouldTakeOver(7, members: group))
        membership.heard("n1", at: 20, isReady: true)
        #expect(!membership.shouldTakeOver(7, members: group))
        membership.tick(now: 130)
        membership.learn(7, leader: "n3", epoch: epoch2)
        membership.heard("n3", at: 130, isReady: true)
        #expect(!membership.shouldTakeOver(7, members: group))
        membership.tick(now: 240)
        #expect(membership.shouldTakeOver(7, members: group))
    }

    @Test func aPeerThatStopsListingAPartitionIsNoLongerKnownAsItsLeader() {
        var membership = Membership(me: "n1", peers: ["n2", "n3"], replicationFactor: 3, suspicionTimeout: 100, startedAt: 0)
        membership.heard("n2", at: 10, isReady: true)
        membership.heard("n3", at: 10, isReady: true)
        membership.peerLeads("n3", [7: epoch2, 8: epoch2])
        #expect(membership.leader(of: 7) == .init(node: "n3", epoch: epoch2))
        // n3 restarted before anyone suspected it: it is alive but leads nothing now.
        membership.peerLeads("n3", [8: epoch2])
        #expect(membership.leader(of: 7) == nil)
        #expect(membership.leader(of: 8) == .init(node: "n3", epoch: epoch2))
        #expect(membership.shouldTakeOver(7, members: ["n1", "n3", "n2"]))
    }

    // MARK: - TrimSchedule

    @Test func anEndedRowIsTrimmedOnlyOnceEveryMemberHoldsItsEndAndTheRetentionPassed() {
        var leader = ReplicationLeader<String>(members: group, epoch: epoch1)
        var trims = TrimSchedule()
        let ticket = leader.issue()
        trims.ended(TxnID("t1"), partition: 7, ticket: ticket, due: 1_000)
        _ = leader.acknowledged(ticket, by: "n1")
        _ = leader.acknowledged(ticket, by: "n2")
        #expect(trims.due(partition: 7, allDurable: leader.allDurable, now: 5_000).isEmpty, "n3 may lack the END")
        #expect(trims.ended(partition: 7) == [TxnID("t1")], "so a catch-up to n3 carries it")
        _ = leader.acknowledged(ticket, by: "n3")
        #expect(trims.due(partition: 7, allDurable: leader.allDurable, now: 999).isEmpty, "retention not passed")
        #expect(trims.due(partition: 7, allDurable: leader.allDurable, now: 1_000) == [TxnID("t1")])
        #expect(trims.ended(partition: 7).isEmpty)
    }
}
