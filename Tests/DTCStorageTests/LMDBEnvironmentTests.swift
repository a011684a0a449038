import Testing

@testable import DTCStorage

@Suite struct LMDBEnvironmentTests {
    @Test func crc32cMatchesTheCastagnoliCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func putGetDeleteRoundTrip() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 64 << 20)
        defer { environment.close() }
        let db = try environment.database("things")
        try environment.write { transaction in
            try transaction.put(db, "apple", [1, 2, 3])
            try transaction.put(db, [0xFF, 0x00], [])
        }
        try environment.read { transaction throws in
            #expect(try transaction.get(db, "apple") == [1, 2, 3])
            #expect(try transaction.get(db, [0xFF, 0x00]) == [])
            #expect(try transaction.get(db, "pear") == nil)
            #expect(try transaction.count(db) == 2)
        }
        try environment.write { transaction in
            try transaction.delete(db, Array("apple".utf8))
            try transaction.delete(db, Array("never-there".utf8))
        }
        #expect(try environment.read { try $0.get(db, "apple") } == nil)
        #expect(try environment.read { try $0.count(db) } == 1)
    }

    @Test func scanReturnsOnlyThePrefixInKeyOrderAndPagesWithAfter() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 64 << 20)
        defer { environment.close() }
        let db = try environment.database("things")
        try environment.write { transaction in
            for key in ["a/3", "b/1", "a/1", "a/2", "a", "ab", "a/4"] {
                try transaction.put(db, key, Array(key.utf8))
            }
        }
        func keys(_ prefix: String, after: String? = nil, limit: Int = .max) throws -> [String] {
            try environment.read { transaction throws in
                try transaction.scan(db, prefix: Array(prefix.utf8), after: after.map { Array($0.utf8) }, limit: limit)
            }.map { entry in
                #expect(entry.key == entry.value)
                return String(decoding: entry.key, as: UTF8.self)
            }
        }
        #expect(try keys("a/") == ["a/1", "a/2", "a/3", "a/4"])
        #expect(try keys("a/", limit: 2) == ["a/1", "a/2"])
        #expect(try keys("a/", after: "a/2", limit: 2) == ["a/3", "a/4"])
        #expect(try keys("a/", after: "a/4") == [])
        #expect(try keys("a/", after: "a") == ["a/1", "a/2", "a/3", "a/4"])
        #expect(try keys("a/", after: "b") == [])
        #expect(try keys("") == ["a", "a/1", "a/2", "a/3", "a/4", "ab", "b/1"])
        #expect(try keys("", after: "ab") == ["b/1"])
        #expect(try keys("c") == [])
    }

    @Test func keysLongerThanLMDBAllowsAreRejected() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 64 << 20)
        defer { environment.close() }
        let db = try environment.database("things")
        let longest = [UInt8](repeating: 7, count: 511)
        try environment.write { try $0.put(db, longest, [1]) }
        #expect(try environment.read { try $0.get(db, longest) } == [1])
        #expect(throws: StorageError.keySize(bytes: 512, maximum: 511)) {
            try environment.write { try $0.put(db, longest + [7], [1]) }
        }
        #expect(throws: StorageError.keySize(bytes: 0, maximum: 511)) {
            try environment.read { try $0.get(db, [UInt8]()) }
        }
    }

    @Test func aWriteWhoseBodyThrowsLeavesNothingBehind() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 64 << 20)
        defer { environment.close() }
        let db = try environment.database("things")
        #expect(throws: Planted()) {
            try environment.write { transaction in
                try transaction.put(db, "k", [1])
                throw Planted()
            }
        }
        #expect(try environment.read { try $0.get(db, "k") } == nil)
    }

    @Test func aBadChecksumOrShortValueIsReportedAsCorruptionWithDatabaseAndKey() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 64 << 20)
        defer { environment.close() }
        let db = try environment.database("things")
        var flipped = StoredValue.encode([10, 20, 30])
        flipped[5] ^= 0x01
        try environment.write { transaction in
            try transaction.putUnchecked(db, Array("flipped".utf8), flipped)
            try transaction.putUnchecked(db, [0x00, 0xAB], [1, 2, 3])
        }
        #expect(throws: StorageError.corruption(database: "things", key: "flipped")) {
            try environment.read { try $0.get(db, "flipped") }
        }
        #expect(throws: StorageError.corruption(database: "things", key: "00ab")) {
            try environment.read { try $0.get(db, [0x00, 0xAB]) }
        }
        #expect(throws: StorageError.corruption(database: "things", key: "00ab")) {
            try environment.read { try $0.scan(db, prefix: []) }
        }
    }

    @Test func reopeningAfterCloseSeesCommittedData() throws {
        let directory = try TemporaryDirectory()
        let first = try LMDBEnvironment(path: directory.path + "/nested/env", mapSizeBytes: 64 << 20)
        let written = try first.database("things")
        try first.write { try $0.put(written, "k", [9]) }
        first.close()
        let second = try LMDBEnvironment(path: directory.path + "/nested/env", mapSizeBytes: 64 << 20)
        defer { second.close() }
        let reread = try second.database("things")
        #expect(try second.read { try $0.get(reread, "k") } == [9])
    }
}
