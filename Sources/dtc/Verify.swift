import ArgumentParser
import DTCRuntime
import DTCVerify
import Foundation

/// The independent checker of a chaos run: reads a client history and every RM's ledger and
/// state, and reports every violated invariant and what happened to the clients' txns.
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Checks a client history against every RM's ledger and state; exit 1 on any violation.")

    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "A history file written by `dtc load --history` (invoke/ok/fail/unknown lines).") var history: String
    @Option(help: "Seconds to wait for the cluster to become quiet (no prepared txn, nothing in flight).") var waitQuiet = 60
    @Option(help: "Also write the verdict and statistics as one JSON object to this file.") var json: String?

    func run() async throws {
        let config = try cluster.load()
        let history = try readHistory(history)
        let (snapshot, quiet) = try await readQuietSnapshot(config, waitQuiet: waitQuiet)
        let report = Checker.verify(history: history, snapshot: snapshot, initial: shopInitialState(config), quiet: quiet,
                                    checkedAt: Date().timeIntervalSince1970)
        for line in report.lines { print(line) }
        if let stats = report.stats { for line in stats.lines { print(line) } }
        print(report.violations == 0 ? "verify: all invariants hold" : "verify: \(report.violations) violation(s)")
        if let json { try write(report, to: json) }
        if report.violations > 0 { throw CLIFailure.failed("\(report.violations) violation(s)") }
    }

    private func write(_ report: VerificationReport, to path: String) throws {
        do {
            try (report.json + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw CLIFailure.failed("cannot write '\(path)': \(error.localizedDescription)")
        }
    }
}
