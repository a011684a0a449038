import Testing

@testable import DTCStorage

/// A store says which format it is in; a build that reads another refuses it, naming the path
/// and both versions, and changes nothing.
@Suite struct StoreFormatTests {
    @Test func aNewStoreIsStampedAndReopensWithTheSameVersion() throws {
        let directory = try TemporaryDirectory()
        for _ in 0..<2 {
            let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 16 << 20)
            let meta = try environment.database("meta")
            try StoreFormat.check(environment, meta: meta, expected: 2) { _ in false }
            #expect(try environment.read { try $0.get(meta, StoreFormat.key) } == [0, 0, 0, 2])
            environment.close()
        }
    }

    @Test func aStoreOfAnotherVersionIsRefusedWithOneLineNamingItAndIsLeftAsItWas() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 16 << 20)
        let meta = try environment.database("meta")
        try StoreFormat.check(environment, meta: meta, expected: 3) { _ in false }
        let error = #expect(throws: StoreFormatError.self) {
            try StoreFormat.check(environment, meta: meta, expected: 2) { _ in false }
        }
        #expect(error?.description.contains("'\(directory.path)' is in format version 3, this build reads version 2") == true)
        #expect(error?.description.contains("\n") == false)
        #expect(try environment.read { try $0.get(meta, StoreFormat.key) } == [0, 0, 0, 3])
        environment.close()
    }

    @Test func dataWithoutAVersionIsVersionOne() throws {
        let directory = try TemporaryDirectory()
        let environment = try LMDBEnvironment(path: directory.path, mapSizeBytes: 16 << 20)
        let meta = try environment.database("meta")
        let rows = try environment.database("rows")
        try environment.write { try $0.put(rows, "t1", [1, 2, 3]) }
        let error = #expect(throws: StoreFormatError.self) {
            try StoreFormat.check(environment, meta: meta, expected: 2) { try $0.count(rows) > 0 }
        }
        #expect(error?.found == 1 && error?.expected == 2)
        #expect(try environment.read { try $0.get(meta, StoreFormat.key) } == nil)
        environment.close()
    }
}
