import DTCCore
import Testing

@testable import DTCPostgres

/// The SQL branch payload and the global ids of prepared branches: pure, no database.
@Suite struct SQLBranchTests {
    @Test func aBranchRoundTripsThroughItsJSON() throws {
        let branch = SQLBranch(statements: [
            SQLStatement("UPDATE t SET n = n - $1 WHERE k = $2 AND n >= $1", params: [.int(5), .text("k'1")], rows: 1, refusal: "too few"),
            SQLStatement("INSERT INTO u VALUES ($1, $2, $3, $4)", params: [.null, .bool(true), .double(1.5), .int(-7)]),
        ])
        #expect(try SQLBranch(decoding: branch.encoded()) == branch)
    }

    @Test func aPayloadWrittenByHandDecodes() throws {
        let json = #"{"statements": [{"sql": "DELETE FROM t WHERE k = $1", "params": ["a"], "rows": 1}, {"sql": "SELECT 1"}]}"#
        let branch = try SQLBranch(decoding: Array(json.utf8))
        #expect(branch.statements.count == 2)
        #expect(branch.statements[0].params == [.text("a")] && branch.statements[0].rows == 1)
        #expect(branch.statements[1].params.isEmpty && branch.statements[1].rows == nil)
    }

    @Test(arguments: [
        ("not json", "payload is not a statement list"),
        (#"{"statements": []}"#, "payload has no statements"),
        (#"{"statements": [{"params": [1]}]}"#, "missing \"sql\""),
        (#"{"statements": [{"sql": "  "}]}"#, "statements[0].sql is empty"),
        (#"{"statements": [{"sql": "SELECT 1", "rows": -1}]}"#, "statements[0].rows is negative"),
        (#"{"statements": [{"sql": "SELECT $1", "params": [[1]]}]}"#, "a parameter must be a number, a string, true/false or null"),
        (#"{"statements": [{"sql": "SELECT 1"}, {"sql": " -- done\n COMMIT"}]}"#, "statements[1] is transaction control (COMMIT)"),
        (#"{"statements": [{"sql": "/* x */ prepare transaction 'g'"}]}"#, "statements[0] is transaction control (PREPARE)"),
    ])
    func aBadPayloadIsRefusedWithItsReason(payload: String, reason: String) {
        #expect {
            try SQLBranch(decoding: Array(payload.utf8))
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test func aGlobalIDCarriesTheTxnItsPartitionAndEpoch() throws {
        let gid = PreparedGID(txnID: TxnID("order:7's"), partition: 42, epoch: Epoch(counter: 3, node: 2))
        let text = gid.text(participant: "accounts")
        #expect(text == "dtc:accounts:42:3.2:order:7's")
        #expect(gid.literal(participant: "accounts") == "'dtc:accounts:42:3.2:order:7''s'")
        #expect(PreparedGID(text, participant: "accounts") == gid)
        #expect(PreparedGID(text, participant: "ledger") == nil, "another participant's branch is not ours")
        #expect(PreparedGID("dtc:accounts:x:3.2:t", participant: "accounts") == nil)
        #expect(PreparedGID("something-else", participant: "accounts") == nil)
    }

    @Test func aTxnIDThatCannotBeAGlobalIDIsNamed() {
        let long = PreparedGID(txnID: TxnID(String(repeating: "x", count: 128)), partition: 1, epoch: Epoch(counter: 1, node: 1))
        #expect(long.problem(participant: "a-participant-with-a-long-name-of-more-than-fifty-bytes-in-all") != nil)
        #expect(long.problem(participant: "accounts") == nil)
        let nul = PreparedGID(txnID: TxnID("a\u{0}b"), partition: 1, epoch: Epoch(counter: 1, node: 1))
        #expect(nul.problem(participant: "accounts")?.contains("NUL") == true)
    }
}
