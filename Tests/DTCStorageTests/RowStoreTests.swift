import Testing

@testable import DTCStorage

@Suite struct RowStoreTests {
    private static func put(_ partition: UInt32, _ key: String, _ value: String) -> RowUpdate {
        RowUpdate(partition: partition, key: Array(key.utf8)) { _ in Array(value.utf8) }
    }

    /// Appends `suffix` to whatever the row holds: a read-modify-write inside the group.
    private static func append(_ partition: UInt32, _ key: String, _ suffix: String) -> RowUpdate {
        RowUpdate(partition: partition, key: Array(key.utf8)) { ($0 ?? []) + Array(suffix.utf8) }
    }

    private static func texts(_ rows: [(key: [UInt8], value: [UInt8])]) -> [String] {
        rows.map { String(decoding: $0.key, as: UTF8.self) + "=" + String(decoding: $0.value, as: UTF8.self) }
    }

    @Test func durableUpdatesSurviveReopenInKeyOrderPerPartition() async throws {
        let directory = try TemporaryDirectory()
        let first = try StoreFixture(path: directory.path)
        try await first.store.update([Self.put(1, "b", "2"), Self.put(2, "x", "9"), Self.put(1, "a", "1")])
        try await first.store.update([Self.append(1, "a", "+")], meta: [("promise/1", [7])])
        first.close()

        let second = try StoreFixture(path: directory.path)
        defer { second.close() }
        #expect(Self.texts(try second.store.rows(partition: 1)) == ["a=1+", "b=2"])
        #expect(Self.texts(try second.store.rows(partition: 2)) == ["x=9"])
        #expect(try second.store.rowCount() == 3)
        #expect(try second.store.meta("promise/1") == [7])
    }

    @Test func aTransformReturningNilDeletesTheRow() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try StoreFixture(path: directory.path)
        defer { fixture.close() }
        try await fixture.store.update([Self.put(3, "a", "1"), Self.put(3, "b", "2")])
        try await fixture.store.update([RowUpdate(partition: 3, key: Array("a".utf8)) { _ in nil }])
        #expect(Self.texts(try fixture.store.rows(partition: 3)) == ["b=2"])
    }

    @Test func groupCommitGathersConcurrentUpdatesIntoOneFsync() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try StoreFixture(path: directory.path)
        defer { fixture.close() }
        let updates = 200
        let gate = await WriterGate(fixture.committer)
        gate.release(whenQueued: updates, in: fixture.committer)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<updates {
                group.addTask { try await fixture.store.update([Self.put(UInt32(index % 4), "r\(index)", "v")]) }
            }
            try await group.waitForAll()
        }
        #expect(try fixture.store.rowCount() == updates)
        // One group for the gate, one for all 200 updates.
        #expect(fixture.store.syncCount <= 2)
    }

    @Test func aCorruptRowIsReportedWithItsKeyNotSkipped() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try StoreFixture(path: directory.path)
        defer { fixture.close() }
        try await fixture.store.update([Self.put(1, "a", "1"), Self.put(1, "b", "2"), Self.put(1, "c", "3")])
        let rows = try fixture.environment.database("rows")
        try await fixture.committer.commit { try $0.putUnchecked(rows, RowStore.key(1, Array("b".utf8)), [0, 0, 0, 0, 2]) }
        let corruption = StorageError.corruption(database: "rows", key: "0000000162")
        #expect(throws: corruption) { try fixture.store.rows(partition: 1) }
        try await fixture.committer.commit { try $0.putUnchecked(rows, RowStore.key(1, Array("b".utf8)), [0x12]) }
        #expect(throws: corruption) { try fixture.store.rows(partition: 1) }
    }

    @Test func aThrowingTransformFailsItsGroupAndWritesNothing() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try StoreFixture(path: directory.path)
        defer { fixture.close() }
        await #expect(throws: Planted.self) {
            try await fixture.store.update([Self.put(1, "a", "1"), RowUpdate(partition: 1, key: [1]) { _ in throw Planted() }])
        }
        #expect(try fixture.store.rowCount() == 0)
    }
}
