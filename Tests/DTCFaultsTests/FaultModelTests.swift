import Testing

@testable import DTCFaults

/// The fault decisions a process makes for each message on its links.
@Suite struct FaultModelTests {
    private func model(seed: UInt64 = 7, drop: Double = 0, delayMs: UInt64 = 0, jitterMs: UInt64 = 0, duplicate: Double = 0) -> FaultModel {
        var model = FaultModel(seed: seed)
        model.setLink(drop: drop, delayMs: delayMs, jitterMs: jitterMs, duplicate: duplicate, seed: seed)
        return model
    }

    private func fates(_ model: inout FaultModel, _ count: Int, peer: String? = "n2", canDuplicate: Bool = true) -> [MessageFate] {
        (0..<count).map { i in model.fate(i % 2 == 0 ? .outgoing : .incoming, peer: peer, canDuplicate: canDuplicate) }
    }

    @Test func theSameSeedGivesTheSameFates() {
        var a = model(seed: 42, drop: 0.2, delayMs: 5, jitterMs: 10, duplicate: 0.2)
        var b = model(seed: 42, drop: 0.2, delayMs: 5, jitterMs: 10, duplicate: 0.2)
        var c = model(seed: 43, drop: 0.2, delayMs: 5, jitterMs: 10, duplicate: 0.2)
        let first = fates(&a, 1_000)
        #expect(first == fates(&b, 1_000))
        #expect(first != fates(&c, 1_000))
        #expect(a.counters == b.counters)
    }

    @Test func settingTheLinkAgainRestartsTheSequence() {
        var a = model(seed: 5, drop: 0.5)
        let first = fates(&a, 200)
        a.setLink(drop: 0.5, delayMs: 0, jitterMs: 0, duplicate: 0, seed: 5)
        #expect(fates(&a, 200) == first)
    }

    @Test func dropFractionIsRoughlyHonoured() {
        var m = model(drop: 0.1)
        let all = fates(&m, 100_000)
        let dropped = all.filter { $0 == .dropped }.count
        #expect((8_000...12_000).contains(dropped), "dropped \(dropped) of 100000 at 0.1")
        #expect(m.counters.dropped == UInt64(dropped))
        #expect(all.allSatisfy { $0 == .dropped || $0 == .deliver(delayMs: 0, copies: 1) })
    }

    @Test func duplicateFractionIsRoughlyHonouredAndNeverWhereACopyWouldGoUnseen() {
        var m = model(duplicate: 0.25)
        let copies = fates(&m, 40_000).filter { $0 == .deliver(delayMs: 0, copies: 2) }.count
        #expect((8_000...12_000).contains(copies), "duplicated \(copies) of 40000 at 0.25")
        #expect(m.counters.duplicated == UInt64(copies))
        var answers = model(duplicate: 1)
        #expect(fates(&answers, 100, canDuplicate: false).allSatisfy { $0 == .deliver(delayMs: 0, copies: 1) })
    }

    @Test func delayIsFixedPlusJitterWithinBounds() {
        var m = model(delayMs: 20, jitterMs: 10)
        let delays = fates(&m, 5_000).map { fate -> UInt64 in
            guard case .deliver(let delay, 1) = fate else { Issue.record("unexpected \(fate)"); return 0 }
            return delay
        }
        #expect(delays.allSatisfy { (20...30).contains($0) })
        #expect(delays.contains(20) && delays.contains(30))
        #expect(m.counters.delayed == 5_000)
    }

    @Test func aCutLosesBothDirectionsOnlyForTheNamedPeers() {
        var m = FaultModel(seed: 1)
        m.setCutOff(["n1", "n3"], direction: .both)
        for direction in [LinkDirection.incoming, .outgoing] {
            #expect(m.fate(direction, peer: "n1", canDuplicate: true) == .cut)
            #expect(m.fate(direction, peer: "n3", canDuplicate: true) == .cut)
            #expect(m.fate(direction, peer: "n2", canDuplicate: true) == .deliver(delayMs: 0, copies: 1))
        }
        #expect(m.counters.cut == 4)
    }

    @Test func aOneWayCutLosesOnlyThatDirection() {
        var inbound = FaultModel(seed: 1)
        inbound.setCutOff(["n1"], direction: .in)
        #expect(inbound.fate(.incoming, peer: "n1", canDuplicate: true) == .cut)
        #expect(inbound.fate(.outgoing, peer: "n1", canDuplicate: true) == .deliver(delayMs: 0, copies: 1))
        var outbound = FaultModel(seed: 1)
        outbound.setCutOff(["n1"], direction: .out)
        #expect(outbound.fate(.outgoing, peer: "n1", canDuplicate: true) == .cut)
        #expect(outbound.fate(.incoming, peer: "n1", canDuplicate: true) == .deliver(delayMs: 0, copies: 1))
    }

    @Test func aCallerThatNamesNoProcessIsNeverFaulted() {
        var m = model(drop: 1, delayMs: 50, duplicate: 1)
        m.setCutOff(["n2"], direction: .both)
        #expect(fates(&m, 100, peer: nil).allSatisfy { $0 == .deliver(delayMs: 0, copies: 1) })
        #expect(m.counters == FaultCounters())
    }

    @Test func withoutRulesEveryMessageIsDeliveredOnceAtOnce() {
        var m = FaultModel(seed: FaultModel.seed(for: "n1"))
        #expect(fates(&m, 1_000).allSatisfy { $0 == .deliver(delayMs: 0, copies: 1) })
        #expect(m.counters == FaultCounters())
        #expect(FaultModel.seed(for: "n1") != FaultModel.seed(for: "n2"))
    }

    // MARK: - Input

    @Test func badLinkSettingsAreRefusedNamingTheField() throws {
        #expect(throws: FaultRuleError("drop 1.5 is outside 0...1")) {
            try FaultRules.checkLink(drop: 1.5, delayMs: 0, jitterMs: 0, duplicate: 0)
        }
        #expect(throws: FaultRuleError.self) { try FaultRules.checkLink(drop: -0.1, delayMs: 0, jitterMs: 0, duplicate: 0) }
        #expect(throws: FaultRuleError.self) { try FaultRules.checkLink(drop: .nan, delayMs: 0, jitterMs: 0, duplicate: 0) }
        #expect(throws: FaultRuleError.self) { try FaultRules.checkLink(drop: 0, delayMs: 0, jitterMs: 0, duplicate: 2) }
        #expect(throws: FaultRuleError.self) { try FaultRules.checkLink(drop: 0, delayMs: 60_001, jitterMs: 0, duplicate: 0) }
        try FaultRules.checkLink(drop: 1, delayMs: 60_000, jitterMs: 10, duplicate: 0)
    }

    @Test func aCutOffNamesOtherProcessesOfTheCluster() throws {
        let known: Set = ["n1", "n2", "inventory"]
        try FaultRules.checkCutOff(["n2", "inventory"], process: "n1", known: known)
        #expect(throws: FaultRuleError.self) { try FaultRules.checkCutOff(["n9"], process: "n1", known: known) }
        #expect(throws: FaultRuleError("from: n1 cannot be cut off from itself")) {
            try FaultRules.checkCutOff(["n1"], process: "n1", known: known)
        }
    }

    @Test func badInputToTheInjectorChangesNothing() throws {
        let faults = FaultInjector(process: "n1", addresses: ["127.0.0.1:1": "n1", "127.0.0.1:2": "n2"])
        try faults.set(link: (0.5, 10, 0, 0, 3), cutOff: (["n2"], .in))
        let before = faults.state
        #expect(throws: FaultRuleError.self) { try faults.set(link: (0.1, 0, 0, 0, nil), cutOff: (["nobody"], .both)) }
        #expect(throws: FaultRuleError.self) { try faults.set(link: (7, 0, 0, 0, nil), cutOff: ([], .both)) }
        #expect(faults.state.rules == before.rules && faults.state.seed == 3)
        #expect(faults.process(atAddress: "127.0.0.1:2") == "n2")
        #expect(faults.process(atAddress: "127.0.0.1:9") == nil)
    }

    @Test func durationsAreWholeMilliseconds() throws {
        #expect(try FaultDuration.milliseconds(parsing: "20ms") == 20)
        #expect(try FaultDuration.milliseconds(parsing: "1s") == 1_000)
        #expect(try FaultDuration.milliseconds(parsing: "1.5s") == 1_500)
        #expect(try FaultDuration.milliseconds(parsing: "0") == 0)
        for bad in ["", "20", "-5ms", "abc", "ms", "1.5ms", "20 ms", "2m", "61s", "1e3ms"] {
            #expect(throws: FaultRuleError.self, "'\(bad)'") { try FaultDuration.milliseconds(parsing: bad) }
        }
    }
}

extension FaultModelTests {
    @Test func openingAStreamAsksOnlyAboutTheCut() {
        var m = model(drop: 1, delayMs: 5, duplicate: 1)
        m.setCutOff(["n3"], direction: .out)
        let answers = [m.isCut(.outgoing, peer: "n2"), m.isCut(.incoming, peer: "n3"), m.isCut(.outgoing, peer: "n3")]
        #expect(answers == [false, false, true])
        #expect(m.counters == { var c = FaultCounters(); c.cut = 1; return c }())
    }
}
