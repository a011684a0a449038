import Testing

@testable import DTCStorage

@Suite struct DurableLogTests {
    private static func payload(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func syncedAppendsSurviveReopenInOrderAndSequencesContinue() async throws {
        let directory = try TemporaryDirectory()
        let first = try LogFixture(path: directory.path)
        try await first.log.append([(1, Self.payload("a")), (2, Self.payload("x")), (1, Self.payload("b"))], sync: true)
        try await first.log.append([(1, Self.payload("c"))], sync: true)
        first.close()

        let second = try LogFixture(path: directory.path)
        defer { second.close() }
        #expect(try second.log.entries(partition: 1) == [
            LogEntry(partition: 1, sequence: 0, payload: Self.payload("a")),
            LogEntry(partition: 1, sequence: 1, payload: Self.payload("b")),
            LogEntry(partition: 1, sequence: 2, payload: Self.payload("c")),
        ])
        try await second.log.append([(1, Self.payload("d")), (2, Self.payload("y"))], sync: true)
        #expect(try second.log.allEntries().map { "\($0.partition)/\($0.sequence)" } == ["1/0", "1/1", "1/2", "1/3", "2/0", "2/1"])
        #expect(try second.log.recordCount() == 6)
    }

    @Test func groupCommitGathersConcurrentSyncedAppendsIntoOneFsync() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try LogFixture(path: directory.path)
        defer { fixture.close() }
        let appends = 200
        let gate = await WriterGate(fixture.committer)
        gate.release(whenQueued: appends, in: fixture.committer)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<appends {
                group.addTask {
                    try await fixture.log.append([(UInt32(index % 4), Self.payload("r\(index)"))], sync: true)
                }
            }
            try await group.waitForAll()
        }
        #expect(try fixture.log.recordCount() == appends)
        #expect(Set(try fixture.log.allEntries().map(\.payload)) == Set((0..<appends).map { Self.payload("r\($0)") }))
        // One group for the gate, one for all 200 appends.
        #expect(fixture.log.syncCount <= 2)
        #expect(fixture.log.syncCount < UInt64(appends / 2))
    }

    @Test func aCorruptRecordInTheMiddleOfTheLogIsReportedNotSkipped() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try LogFixture(path: directory.path)
        defer { fixture.close() }
        try await fixture.log.append([(1, [1]), (1, [2]), (1, [3])], sync: true)
        let logDatabase = try fixture.environment.database("log")
        try await fixture.committer.commit { try $0.putUnchecked(logDatabase, DurableLog.key(1, 1), [0, 0, 0, 0, 2]) }
        let corruption = StorageError.corruption(database: "log", key: "000000010000000000000001")
        #expect(throws: corruption) { try fixture.log.entries(partition: 1) }
        #expect(throws: corruption) { try fixture.log.allEntries() }
        try await fixture.committer.commit { try $0.putUnchecked(logDatabase, DurableLog.key(1, 1), [0x12]) }
        #expect(throws: corruption) { try fixture.log.entries(partition: 1) }
    }

    @Test func aLazyAppendIsDurableOnceALaterSyncedAppendReturns() async throws {
        let directory = try TemporaryDirectory()
        let first = try LogFixture(path: directory.path)
        try await first.log.append([(3, Self.payload("lazy"))], sync: false)
        try await first.log.append([(4, Self.payload("synced"))], sync: true)
        // Visible to a reader means committed, and this environment commits only with fsync.
        #expect(try first.log.entries(partition: 3).map(\.payload) == [Self.payload("lazy")])
        first.close()

        let second = try LogFixture(path: directory.path)
        defer { second.close() }
        #expect(try second.log.allEntries() == [
            LogEntry(partition: 3, sequence: 0, payload: Self.payload("lazy")),
            LogEntry(partition: 4, sequence: 0, payload: Self.payload("synced")),
        ])
    }

    @Test func aThrowingClosureFailsEveryWaiterInItsGroupAndWritesNothing() async throws {
        let directory = try TemporaryDirectory()
        let fixture = try LogFixture(path: directory.path)
        defer { fixture.close() }
        let gate = await WriterGate(fixture.committer)
        gate.release(whenQueued: 2, in: fixture.committer)
        let innocent = Task { try await fixture.log.append([(1, [1])], sync: true) }
        let culprit = Task { try await fixture.committer.commit { _ in throw Planted() } }
        await #expect(throws: Planted()) { try await innocent.value }
        await #expect(throws: Planted()) { try await culprit.value }
        #expect(try fixture.log.recordCount() == 0)
    }

    @Test func trimmingRemovesThroughTheSequenceAndNeverReusesSequencesAfterReopen() async throws {
        let directory = try TemporaryDirectory()
        let first = try LogFixture(path: directory.path)
        try await first.log.append([(1, [0]), (1, [1]), (1, [2]), (2, [9])], sync: true)
        try await first.log.removeEntries(partition: 1, throughSequence: 1)
        #expect(try first.log.entries(partition: 1).map(\.sequence) == [2])
        try await first.log.removeEntries(partition: 1, throughSequence: 2)
        #expect(try first.log.entries(partition: 1) == [])
        #expect(try first.log.entries(partition: 2).map(\.sequence) == [0])
        first.close()

        let second = try LogFixture(path: directory.path)
        defer { second.close() }
        try await second.log.append([(1, [3])], sync: true)
        #expect(try second.log.entries(partition: 1).map(\.sequence) == [3])
    }

    @Test func metaValuesAreDurableWhenPutMetaReturns() async throws {
        let directory = try TemporaryDirectory()
        let first = try LogFixture(path: directory.path)
        try await first.log.putMeta("epoch/7", [0, 0, 0, 5])
        #expect(try first.log.meta("epoch/7") == [0, 0, 0, 5])
        #expect(try first.log.meta("epoch/8") == nil)
        first.close()

        let second = try LogFixture(path: directory.path)
        defer { second.close() }
        #expect(try second.log.meta("epoch/7") == [0, 0, 0, 5])
    }
}
