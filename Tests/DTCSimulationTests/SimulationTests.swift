import DTCCore
import Foundation
import Testing

@testable import DTCSimulation

/// Runs simulations on a thread of their own: they are long and CPU-bound, and on the
/// cooperative pool (two threads on a two-core machine) they would starve the async tests
/// that run beside them (gRPC calls with deadlines).
func simulate<Result: Sendable>(_ work: @escaping @Sendable () -> Result) async -> Result {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: work()) }.start()
    }
}

@Suite struct SimulationTests {
    @Test func theSameSeedGivesTheSameRunEventForEvent() {
        for seed: UInt64 in [1, 7, 42] {
            let first = Simulation(seed: seed).run()
            let second = Simulation(seed: seed).run()
            #expect(first.traceHash == second.traceHash, "seed \(seed)")
            #expect(first.simulatedMs == second.simulatedMs)
        }
    }

    @Test func differentSeedsDrawDifferentRuns() {
        #expect(Simulation(seed: 1).run().traceHash != Simulation(seed: 2).run().traceHash)
    }

    @Test func aBlockOfSeedsKeepsEveryInvariant() async {
        let (failures, told) = await simulate {
            var failures: [String] = []
            var told = 0
            for seed: UInt64 in 1...500 {
                let result = Simulation(seed: seed).run()
                told += result.txns
                if !result.violations.isEmpty { failures.append("seed \(seed): \(result.violations)") }
            }
            return (failures, told)
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        #expect(told > 10_000)
    }
}

/// Seeds that once broke an invariant, kept after the fix. (A change to the simulator or the
/// cores draws other runs from them; the transcripts in DTCCoreTests pin each fix itself.)
@Suite struct RegressionSeeds {
    @Test(arguments: [UInt64(1), 15, 35, 75, 213, 228, 243, 252, 254, 258, 260, 293, 507, 567, 1541, 1630, 1662, 1958, 3640, 7698, 14839, 15004, 19956])
    func aSeedThatFoundABugKeepsEveryInvariant(_ seed: UInt64) async {
        let result = await simulate { Simulation(seed: seed).run() }
        #expect(result.violations.isEmpty, "seed \(seed): \(result.violations)")
    }
}

/// Each deliberate bug must be caught by the checkers within a bounded number of seeds:
/// proof that the checkers look at what matters.
@Suite struct MutantTests {
    static let seedsMax: UInt64 = 400

    @Test(arguments: Mutant.allCases)
    func theCheckersCatchTheMutant(_ mutant: Mutant) async {
        let caught = await simulate { (1...Self.seedsMax).first { !Simulation(seed: $0, mutant: mutant).run().violations.isEmpty } }
        #expect(caught != nil, "\(mutant) survived \(Self.seedsMax) seeds")
    }
}
