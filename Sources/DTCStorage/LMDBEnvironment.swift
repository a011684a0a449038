import CLMDB
import Foundation
import Synchronization

/// A named LMDB database. Only valid with the environment that opened it.
public struct Database: Sendable, Hashable {
    public let name: String
    let handle: MDB_dbi
}

/// One LMDB environment per process (LMDB forbids opening the same path twice in a process).
///
/// Opened with full durability: every write transaction's commit is fsynced before it returns,
/// and no flag that skips or defers that sync is ever set: the coordinator tells clients and
/// participants about a decision only after it is on disk. MDB_NOTLS lets a read transaction
/// live on any thread, which async callers need.
public final class LMDBEnvironment: @unchecked Sendable {
    public let path: String
    private let handle: OpaquePointer
    /// Largest key LMDB accepts, queried once at open.
    let keySizeMax: Int
    /// Named databases opened so far; also serialises `mdb_dbi_open`, which LMDB requires.
    private let databases = Mutex<[String: Database]>([:])
    private let isClosed = Atomic<Bool>(false)

    public init(path: String, mapSizeBytes: Int = 8 << 30, maxDatabases: Int = 32) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "mdb_env_create")
        guard let env else { preconditionFailure("mdb_env_create succeeded without an environment") }
        do {
            try check(mdb_env_set_mapsize(env, mapSizeBytes), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxdbs(env, MDB_dbi(maxDatabases)), "mdb_env_set_maxdbs")
            try check(mdb_env_open(env, path, UInt32(MDB_NOTLS), 0o644), "mdb_env_open(\(path))")
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.path = path
        self.handle = env
        self.keySizeMax = Int(mdb_env_get_maxkeysize(env))
    }

    deinit { close() }

    /// Closes the environment. Every transaction must have ended and nothing may use this
    /// environment afterwards; needed before reopening the same path in this process.
    public func close() {
        guard !isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        mdb_env_close(handle)
    }

    /// Opens (creating if needed) the named database. Do not call inside a write transaction
    /// on the same thread: it takes LMDB's writer lock itself.
    public func database(_ name: String) throws -> Database {
        try databases.withLock { cache in
            if let database = cache[name] { return database }
            let transaction = try beginTransaction(flags: 0)
            var dbi: MDB_dbi = 0
            do {
                try check(mdb_dbi_open(transaction, name, UInt32(MDB_CREATE), &dbi), "mdb_dbi_open(\(name))")
                try check(mdb_txn_commit(transaction), "mdb_txn_commit")
            } catch {
                mdb_txn_abort(transaction)
                throw error
            }
            let database = Database(name: name, handle: dbi)
            cache[name] = database
            return database
        }
    }

    /// Runs `body` in a read-only snapshot; the transaction ends when `body` returns.
    public func read<T>(_ body: (ReadTransaction) throws -> T) throws -> T {
        let transaction = ReadTransaction(handle: try beginTransaction(flags: UInt32(MDB_RDONLY)), environment: self)
        defer { transaction.abort() }
        return try body(transaction)
    }

    /// Runs `body` in one write transaction: committed (and fsynced) if it returns, aborted if
    /// it throws. Blocks while another write transaction (e.g. a group commit) is open.
    public func write<T>(_ body: (WriteTransaction) throws -> T) throws -> T {
        let transaction = try beginWrite()
        let result: T
        do {
            result = try body(transaction)
        } catch {
            transaction.abort()
            throw error
        }
        try transaction.commit()
        return result
    }

    /// A write transaction the caller must commit or abort on this same thread.
    func beginWrite() throws -> WriteTransaction {
        WriteTransaction(handle: try beginTransaction(flags: 0), environment: self)
    }

    private func beginTransaction(flags: UInt32) throws -> OpaquePointer {
        precondition(!isClosed.load(ordering: .acquiring), "LMDB environment at \(path) used after close")
        var transaction: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, flags, &transaction), "mdb_txn_begin")
        guard let transaction else { preconditionFailure("mdb_txn_begin succeeded without a transaction") }
        return transaction
    }
}
