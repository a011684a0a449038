import Foundation

extension HistoryStats {
    /// The statistics as printed by `dtc verify`.
    public var lines: [String] {
        let count = { (kind: HistoryEvent.Kind) in completions[kind, default: 0] }
        return [
            "history: \(txns) txns, \(attempts) attempts (\(retriedTxns) txns sent again with the same ID)",
            "  attempts answered: \(count(.ok)) ok (committed), \(count(.fail)) fail (aborted), \(count(.unknown)) unknown, \(open) with no answer",
            "  txns told committed \(toldCommitted), told aborted \(toldAborted); never told: \(neverToldCommitted) committed, \(neverToldAborted) aborted (per the ledgers)",
            String(format: "  max in doubt, first invoke to first definite answer (history): %.3f s%@", maxInDoubtToldSeconds,
                   maxInDoubtToldTxn.isEmpty ? "" : " (\(maxInDoubtToldTxn))"),
            String(format: "  max in doubt, never told: first invoke to resolved at every RM when verified: %.3f s%@", maxInDoubtNeverToldSeconds,
                   maxInDoubtNeverToldTxn.isEmpty ? "" : " (\(maxInDoubtNeverToldTxn))"),
        ]
    }
}

extension VerificationReport {
    /// The verdict and statistics as one JSON object, for scripts (chaos.sh's summary table).
    public var json: String {
        let kinds = findings.map { "\(HistoryEvent.quoted($0.kind.rawValue)):\($0.problems.count)" }.joined(separator: ",")
        var fields = ["\"violations\":\(violations)", "\"byInvariant\":{\(kinds)}"]
        if let stats {
            let count = { (kind: HistoryEvent.Kind) in stats.completions[kind, default: 0] }
            fields += [
                "\"txns\":\(stats.txns)", "\"attempts\":\(stats.attempts)", "\"retriedTxns\":\(stats.retriedTxns)",
                "\"ok\":\(count(.ok))", "\"fail\":\(count(.fail))", "\"unknown\":\(count(.unknown))", "\"open\":\(stats.open)",
                "\"toldCommitted\":\(stats.toldCommitted)", "\"toldAborted\":\(stats.toldAborted)",
                "\"neverToldCommitted\":\(stats.neverToldCommitted)", "\"neverToldAborted\":\(stats.neverToldAborted)",
                String(format: "\"maxInDoubtToldS\":%.3f", stats.maxInDoubtToldSeconds),
                "\"maxInDoubtToldTxn\":\(HistoryEvent.quoted(stats.maxInDoubtToldTxn))",
                String(format: "\"maxInDoubtNeverToldS\":%.3f", stats.maxInDoubtNeverToldSeconds),
                "\"maxInDoubtNeverToldTxn\":\(HistoryEvent.quoted(stats.maxInDoubtNeverToldTxn))",
            ]
        }
        return "{" + fields.joined(separator: ",") + "}"
    }
}
