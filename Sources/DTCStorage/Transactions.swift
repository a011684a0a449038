import CLMDB

/// A read-only view of the environment at one point in time. Valid only inside the
/// `read`/`write` closure that received it.
public class ReadTransaction {
    let handle: OpaquePointer
    let environment: LMDBEnvironment
    private(set) var isFinished = false

    init(handle: OpaquePointer, environment: LMDBEnvironment) {
        self.handle = handle
        self.environment = environment
    }

    /// The payload stored at `key`, or nil. Throws `.corruption` rather than return bad bytes.
    public func get(_ db: Database, _ key: [UInt8]) throws -> [UInt8]? {
        try validate(key)
        var value = MDB_val()
        let code = key.withValue { keyValue in mdb_get(handle, db.handle, &keyValue, &value) }
        if code == MDB_NOTFOUND { return nil }
        try check(code, "mdb_get(\(db.name))")
        return try payload(of: value, db: db, key: key)
    }

    public func get(_ db: Database, _ key: String) throws -> [UInt8]? {
        try get(db, Array(key.utf8))
    }

    /// Entries in key order whose key starts with `prefix` and is > `after` (if given), at
    /// most `limit`. Checksums verified: a corrupt entry throws instead of being skipped.
    public func scan(
        _ db: Database, prefix: [UInt8], after: [UInt8]? = nil, limit: Int = .max
    ) throws -> [(key: [UInt8], value: [UInt8])] {
        precondition(limit >= 0, "scan limit \(limit) is negative")
        var result: [(key: [UInt8], value: [UInt8])] = []
        guard limit > 0 else { return result }
        try withCursor(db) { cursor in
            let start = Self.scanStart(prefix: prefix, after: after)
            var entry = try cursor.first(atOrAfter: start)
            if let current = entry, current.key == after { entry = try cursor.next() }
            while let current = entry, current.key.starts(with: prefix), result.count < limit {
                result.append((current.key, try payload(of: current.value, db: db, key: current.key)))
                entry = try cursor.next()
            }
        }
        return result
    }

    /// The keys starting with `prefix`, in order, without reading (or checking) their values.
    public func keys(_ db: Database, prefix: [UInt8]) throws -> [[UInt8]] {
        var result: [[UInt8]] = []
        try withCursor(db) { cursor in
            var entry = try cursor.first(atOrAfter: prefix)
            while let current = entry, current.key.starts(with: prefix) {
                result.append(current.key)
                entry = try cursor.next()
            }
        }
        return result
    }

    public func count(_ db: Database) throws -> Int {
        var stat = MDB_stat()
        try check(mdb_stat(handle, db.handle, &stat), "mdb_stat(\(db.name))")
        return stat.ms_entries
    }

    /// The smallest key >= `key` (the first key if `key` is empty), without reading its value.
    func firstKey(_ db: Database, atOrAfter key: [UInt8]) throws -> [UInt8]? {
        try withCursor(db) { cursor in try cursor.first(atOrAfter: key)?.key }
    }

    /// The largest key < `bound`, or the last key if `bound` is nil.
    func lastKey(_ db: Database, before bound: [UInt8]?) throws -> [UInt8]? {
        try withCursor(db) { cursor in
            guard let bound else { return try cursor.get(MDB_LAST)?.key }
            return try cursor.first(atOrAfter: bound) == nil ? try cursor.get(MDB_LAST)?.key : try cursor.get(MDB_PREV)?.key
        }
    }

    func abort() {
        finish()
        mdb_txn_abort(handle)
    }

    func finish() {
        precondition(!isFinished, "LMDB transaction ended twice")
        isFinished = true
    }

    func validate(_ key: [UInt8]) throws {
        precondition(!isFinished, "LMDB transaction used after it ended")
        guard (1...environment.keySizeMax).contains(key.count) else {
            throw StorageError.keySize(bytes: key.count, maximum: environment.keySizeMax)
        }
    }

    /// Start of a prefix scan: the later of `prefix` and `after`, so paging never rereads.
    private static func scanStart(prefix: [UInt8], after: [UInt8]?) -> [UInt8] {
        guard let after, prefix.lexicographicallyPrecedes(after) else { return prefix }
        return after
    }

    private func payload(of stored: MDB_val, db: Database, key: [UInt8]) throws -> [UInt8] {
        guard let payload = StoredValue.decode(stored.bytes) else {
            throw StorageError.corruption(database: db.name, key: StorageError.readable(key: key))
        }
        return payload
    }

    private func withCursor<T>(_ db: Database, _ body: (Cursor) throws -> T) throws -> T {
        precondition(!isFinished, "LMDB transaction used after it ended")
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, db.handle, &cursor), "mdb_cursor_open(\(db.name))")
        guard let cursor else { preconditionFailure("mdb_cursor_open succeeded without a cursor") }
        defer { mdb_cursor_close(cursor) }
        return try body(Cursor(handle: cursor))
    }
}

/// A read-write transaction. Values are stored with their checksum.
public final class WriteTransaction: ReadTransaction {
    public func put(_ db: Database, _ key: [UInt8], _ value: [UInt8]) throws {
        try putUnchecked(db, key, StoredValue.encode(value))
    }

    public func put(_ db: Database, _ key: String, _ value: [UInt8]) throws {
        try put(db, Array(key.utf8), value)
    }

    /// Removes `key`; absent keys are not an error, so deletes can be replayed.
    public func delete(_ db: Database, _ key: [UInt8]) throws {
        try validate(key)
        let code = key.withValue { keyValue in mdb_del(handle, db.handle, &keyValue, nil) }
        if code == MDB_NOTFOUND { return }
        try check(code, "mdb_del(\(db.name))")
    }

    /// Test hook: writes `storedBytes` as they are, without a checksum, to simulate corruption.
    public func putUnchecked(_ db: Database, _ key: [UInt8], _ storedBytes: [UInt8]) throws {
        try validate(key)
        let code = key.withValue { keyValue in
            storedBytes.withValue { value in mdb_put(handle, db.handle, &keyValue, &value, 0) }
        }
        try check(code, "mdb_put(\(db.name))")
    }

    /// Commits; with the environment's flags this returns only after the data is fsynced.
    func commit() throws {
        finish()
        try check(mdb_txn_commit(handle), "mdb_txn_commit")
    }
}

/// A cursor over one database, closed by `ReadTransaction.withCursor`.
struct Cursor {
    let handle: OpaquePointer

    func first(atOrAfter key: [UInt8]) throws -> (key: [UInt8], value: MDB_val)? {
        guard !key.isEmpty else { return try get(MDB_FIRST) }
        var keyValue = MDB_val()
        var value = MDB_val()
        let code = key.withValue { seek in
            keyValue = seek
            return mdb_cursor_get(handle, &keyValue, &value, MDB_SET_RANGE)
        }
        return try entry(code, keyValue, value)
    }

    func next() throws -> (key: [UInt8], value: MDB_val)? { try get(MDB_NEXT) }

    func get(_ operation: MDB_cursor_op) throws -> (key: [UInt8], value: MDB_val)? {
        var keyValue = MDB_val()
        var value = MDB_val()
        return try entry(mdb_cursor_get(handle, &keyValue, &value, operation), keyValue, value)
    }

    /// The key is copied; the value still points into the map and is valid until the txn ends.
    private func entry(_ code: Int32, _ key: MDB_val, _ value: MDB_val) throws -> (key: [UInt8], value: MDB_val)? {
        if code == MDB_NOTFOUND { return nil }
        try check(code, "mdb_cursor_get")
        return (Array(key.bytes), value)
    }
}

extension MDB_val {
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: mv_data, count: mv_size) }
}

extension Array where Element == UInt8 {
    /// Lends these bytes to LMDB as an MDB_val; LMDB only reads through the pointer.
    func withValue<R>(_ body: (inout MDB_val) throws -> R) rethrows -> R {
        try withUnsafeBytes { raw in
            var value = MDB_val(mv_size: raw.count, mv_data: UnsafeMutableRawPointer(mutating: raw.baseAddress))
            return try body(&value)
        }
    }
}
