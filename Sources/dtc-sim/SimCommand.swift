import ArgumentParser
import DTCCore
import DTCSimulation
import Foundation

/// `dtc-sim`: runs the protocol cores under simulated faults, one seed or many.
@main
@available(macOS 15, *)
struct SimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtc-sim", abstract: "Deterministic simulation of dtc's cores under faults.")

    @Option(help: "Run this one seed and print its trace hash.") var seed: UInt64?
    @Option(help: "Run this many seeds.") var seeds = 100
    @Option(help: "First seed of --seeds.") var from: UInt64 = 1
    @Flag(help: "With --seed: print every event.") var trace = false
    @Option(help: "Switch on a deliberate bug to see the checkers catch it: \(Mutant.allCases.map(\.rawValue).joined(separator: ", ")).")
    var mutant: String?

    func validate() throws {
        if let mutant, Mutant(rawValue: mutant) == nil { throw ValidationError("unknown mutant '\(mutant)'") }
    }

    private func simulation(_ seed: UInt64) -> Simulation {
        Simulation(seed: seed, mutant: mutant.flatMap(Mutant.init(rawValue:)))
    }

    func run() throws {
        if let seed {
            let simulation = simulation(seed)
            if trace { simulation.traceSink = { print($0) } }
            let result = simulation.run()
            print("seed \(seed): \(result.swarm)")
            print("  trace \(String(result.traceHash, radix: 16)), \(result.simulatedMs) ms simulated, \(result.txns) txns told, \(result.committed) committed, \(result.takeovers) takeovers, faults \(result.faults.sorted { $0.key < $1.key })")
            report(result)
            return
        }
        let started = Date()
        var summary = (simulatedMs: UInt64(0), txns: 0, committed: 0, takeovers: 0, failed: [UInt64]())
        var faults: [String: Int] = [:]
        for seed in from..<(from + UInt64(seeds)) {
            let result = simulation(seed).run()
            summary.simulatedMs += result.simulatedMs
            summary.txns += result.txns
            summary.committed += result.committed
            summary.takeovers += result.takeovers
            faults.merge(result.faults, uniquingKeysWith: +)
            if !result.violations.isEmpty {
                summary.failed.append(seed)
                report(result)
            }
        }
        let seconds = Date().timeIntervalSince(started)
        print("dtc-sim: \(seeds) seeds from \(from), \(summary.simulatedMs / 1000) s simulated, \(summary.txns) txns told (\(summary.committed) committed), \(summary.takeovers) takeovers")
        print("  faults: \(faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        print(String(format: "  violations: %d seeds, %.1f seeds/s", summary.failed.count, Double(seeds) / max(seconds, 0.001)))
        if !summary.failed.isEmpty { throw ExitCode(1) }
    }

    private func report(_ result: SimulationResult) {
        guard !result.violations.isEmpty else { return }
        print("VIOLATION at seed \(result.seed) (\(result.swarm)):")
        for violation in result.violations { print("  \(violation)") }
        print("  last events:")
        for event in result.lastEvents { print("    \(event)") }
        print("  replay: swift run dtc-sim --seed \(result.seed)")
    }
}
