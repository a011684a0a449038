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

            try await persist(store, [.committed(txnID: TxnID("t1"), attempt: 0, writes: prepared.writes, epoch: sender.epoch, seenEpoch: sender.epoch, participants: prepared.participants)])
            #expect(try store.preparedTxns().isEmpty)
            #expect(try store.value(for: "seats/play") == Array("1".utf8))
            #expect(try store.value(for: "old") == nil, "a nil write deletes the key")
            let entry = try #require(try store.ledgerEntry(TxnID("t1")))
            #expect(entry.outcome == .commit && entry.applications == 1 && entry.participants == ["tickets", "accounts"])
            #expect(try store.scan(.ledger, prefix: "", after: nil, limit: 10).map(\.key) == ["t1"])

            // A second application of the same decision shows in the ledger, whatever the
            // machine believed.
            try await persist(store, [.committed(txnID: TxnID("t1"), attempt: 0, writes: [], epoch: sender.epoch, seenEpoch: sender.epoch, participants: [])])
            #expect(try store.ledgerEntry(TxnID("t1"))?.applications == 2)
            #expect(try store.ledgerEntry(TxnID("t1"))?.participants == ["tickets", "accounts"])
        }
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
