/// Every dtc LMDB store carries its format version under `format-version` in its `meta`
/// database. A process that opens a store written in a format it does not read refuses to
/// start: nothing is ever misread. A store with data but no version was written before
/// versions were numbered: version 1.
public enum StoreFormat {
    public static let key = "format-version"

    /// Checks the version of the store at `environment`, stamping `expected` on a new one.
    /// `holdsData` tells whether the store has anything in it besides the version.
    public static func check(
        _ environment: LMDBEnvironment, meta: Database, expected: UInt32, holdsData: @escaping (ReadTransaction) throws -> Bool
    ) throws {
        let found: UInt32? = try environment.read { txn in
            if let bytes = try txn.get(meta, key) { return decode(bytes) }
            return try holdsData(txn) ? 1 : nil
        }
        switch found {
        case nil:
            try environment.write { try $0.put(meta, key, encode(expected)) }
        case expected?:
            return
        case let other?:
            throw StoreFormatError(path: environment.path, found: other, expected: expected)
        }
    }

    static func encode(_ version: UInt32) -> [UInt8] {
        [UInt8(version >> 24), UInt8(truncatingIfNeeded: version >> 16), UInt8(truncatingIfNeeded: version >> 8), UInt8(truncatingIfNeeded: version)]
    }

    static func decode(_ bytes: [UInt8]) -> UInt32 {
        bytes.count == 4 ? bytes.reduce(0) { $0 << 8 | UInt32($1) } : 0
    }
}

public struct StoreFormatError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var found: UInt32
    public var expected: UInt32

    public var description: String {
        "the LMDB store at '\(path)' is in format version \(found), this build reads version \(expected) only; "
            + "move it aside (or start from an empty data directory) to run this version"
    }
}
