import Foundation
import Testing

@testable import DTCParticipant

/// The library's store: what the machine persists lands in the right database, durably, and
/// the ledger counts every application from disk.
@Suite struct ParticipantStoreTests {
    let sender = Sender(partition: 3, epoch: Epoch(counter: 2, node: 1), node: "n1")

    private func withStore(_ body: (ParticipantStore, String) async throws -> Void) async throws {
        let path = NSTemporaryDirectory() + "dtc-participant-store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try ParticipantStore(path: path)
        try await body(store, path)
        store.close()
    }

    private func persist(_ store: ParticipantStore, _ records: [ParticipantRecord]) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            store.persist(records) { continuation.resume(with: $0) }
        }
    }

    @Test func aCommitAppliesItsWritesDropsThePreparedRecordAndLedgersTheParticipants() async throws {
        try await withStore { store, _ in
            _ = try await store.seedIfEmpty([(key: "seats/play", value: Array("2".utf8)), (key: "old", value: [9])])
            let prepared = PreparedTxn(
                txnID: TxnID("t1"), stamp: 5, sender: sender, kind: "book", keys: ["old", "seats/play"],
                writes: [Write(key: "seats/play", value: Array("1".utf8)), Write(key: "old", value: nil)], participants: ["tickets", "accounts"])
            try await persist(store, [.prepared(prepared)])
            #expect(try store.preparedTxns() == [prepared])

            try await persist(store, [.committed(txnID: TxnID("t1"), attempt: 0, writes: prepared.writes, epoch: sender.epoch, seenEpoch: sender.epoch, participants: prepared.participants, keys: prepared.keys)])
            #expect(try store.preparedTxns().isEmpty)
            #expect(try store.value(for: "seats/play") == Array("1".utf8))
            #expect(try store.value(for: "old") == nil, "a nil write deletes the key")
            let entry = try #require(try store.ledgerEntry(TxnID("t1")))
            #expect(entry.outcome == .commit && entry.applications == 1 && entry.participants == ["tickets", "accounts"])
            #expect(entry.sequence == 1 && entry.keys == ["old", "seats/play"])
            #expect(try store.scan(.ledger, prefix: "", after: nil, limit: 10).map(\.key) == ["t1"])

            // A second application of the same decision shows in the ledger, whatever the
            // machine believed.
            try await persist(store, [.committed(txnID: TxnID("t1"), attempt: 0, writes: [], epoch: sender.epoch, seenEpoch: sender.epoch, participants: [], keys: [])])
            #expect(try store.ledgerEntry(TxnID("t1"))?.applications == 2)
            #expect(try store.ledgerEntry(TxnID("t1"))?.participants == ["tickets", "accounts"])
        }
    }

    @Test func ledgerSequencesIncreaseAcrossAReopenOfTheStoreAndARepeatKeepsItsOwn() async throws {
        let path = NSTemporaryDirectory() + "dtc-participant-store-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let epoch = sender.epoch
        let first = try ParticipantStore(path: path)
        try await persist(first, [
            .committed(txnID: TxnID("t1"), attempt: 0, writes: [], epoch: epoch, seenEpoch: epoch, participants: ["a"], keys: ["k1", "k2"]),
            .aborted(txnID: TxnID("t2"), attempt: .max, epoch: epoch, seenEpoch: .zero, participants: []),
        ])
        let t1 = try #require(try first.ledgerEntry(TxnID("t1")))
        let t2 = try #require(try first.ledgerEntry(TxnID("t2")))
        #expect(t1.sequence == 1 && t1.keys == ["k1", "k2"])
        #expect(t2.sequence == 2 && t2.keys.isEmpty)
        first.close()

        let reopened = try ParticipantStore(path: path)
        try await persist(reopened, [.committed(txnID: TxnID("t3"), attempt: 0, writes: [], epoch: epoch, seenEpoch: epoch, participants: ["a"], keys: ["k1"])])
        #expect(try reopened.ledgerEntry(TxnID("t3"))?.sequence == 3, "the counter survives the restart: no sequence is handed out twice")
        // The same decision again (a duplicate, with no keys): counted, at its first place.
        try await persist(reopened, [.committed(txnID: TxnID("t1"), attempt: 0, writes: [], epoch: epoch, seenEpoch: epoch, participants: [], keys: [])])
        let repeated = try #require(try reopened.ledgerEntry(TxnID("t1")))
        #expect(repeated.applications == 2 && repeated.sequence == 1 && repeated.keys == ["k1", "k2"])
        // A rollback of an attempt, then the next attempt's commit: two decisions, two places.
        try await persist(reopened, [.aborted(txnID: TxnID("t4"), attempt: 0, epoch: epoch, seenEpoch: epoch, participants: ["a"])])
        #expect(try reopened.ledgerEntry(TxnID("t4"))?.sequence == 4)
        try await persist(reopened, [.committed(txnID: TxnID("t4"), attempt: 1, writes: [], epoch: epoch, seenEpoch: epoch, participants: ["a"], keys: ["k2"])])
        let t4 = try #require(try reopened.ledgerEntry(TxnID("t4")))
        #expect(t4.sequence == 5 && t4.applications == 1 && t4.keys == ["k2"])
        reopened.close()
    }

    @Test func theInitialStateIsWrittenOnlyOnTheFirstStart() async throws {
        try await withStore { store, _ in
            let first = try await store.seedIfEmpty([(key: "k", value: [1])])
            let second = try await store.seedIfEmpty([(key: "k", value: [2])])
            #expect(first && !second)
            #expect(try store.value(for: "k") == [1])
        }
    }
}
