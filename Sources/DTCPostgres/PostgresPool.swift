import DTCRuntime
import Logging
import NIOCore
import PostgresNIO

/// PostgreSQL unreachable, or a connection that broke: the participant votes NO with this
/// reason and keeps trying the next time.
struct PostgresUnavailable: Error, CustomStringConvertible {
    var description: String
}

/// A small pool of connections to the participant's database. A branch holds one connection
/// from BEGIN to PREPARE TRANSACTION (a prepared transaction no longer belongs to a session,
/// so the connection is free again right after). A connection that failed is closed, never
/// reused; connecting again fails fast while the server is down.
actor PostgresPool {
    private let configuration: PostgresConnection.Configuration
    private let address: String
    private let capacity: Int
    private let logger: Logger
    private var idle: [PostgresConnection] = []
    private var open = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var nextID = 0

    init(target: ClusterConfig.PostgresTarget, capacity: Int, connectTimeoutMs: Int, logger: Logger) {
        var configuration = PostgresConnection.Configuration(
            host: target.host, port: target.port, username: target.user, password: target.password, database: target.database,
            tls: .disable)
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeoutMs))
        self.configuration = configuration
        self.address = "\(target.host):\(target.port)"
        self.capacity = capacity
        self.logger = logger
    }

    /// Runs `body` on a connection of its own. If `body` throws, the connection is closed
    /// (it may be in a broken or unknown transaction state) and the error is rethrown.
    func withConnection<T: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        do {
            let result = try await body(connection)
            release(connection, healthy: true)
            return result
        } catch {
            release(connection, healthy: false)
            throw error
        }
    }

    /// Closes the idle connections (a test's pool before it goes; dtc-pg's lives as long as
    /// the process).
    func close() async {
        let closing = idle
        idle = []
        open -= closing.count
        for connection in closing { try? await connection.close() }
    }

    private func lease() async throws -> PostgresConnection {
        while idle.isEmpty && open >= capacity {
            await withCheckedContinuation { waiters.append($0) }
        }
        if let connection = idle.popLast() {
            if !connection.isClosed { return connection }
            open -= 1
            return try await lease()
        }
        open += 1
        nextID += 1
        do {
            return try await PostgresConnection.connect(configuration: configuration, id: nextID, logger: logger)
        } catch let error as PSQLError where error.serverInfo != nil {
            // The server answered, and refused (a password, a database that does not exist).
            open -= 1
            wakeOne()
            throw error
        } catch {
            open -= 1
            wakeOne()
            throw PostgresUnavailable(description: "postgres unavailable: cannot connect to \(address): \(Self.connectFailure(error))")
        }
    }

    private func release(_ connection: PostgresConnection, healthy: Bool) {
        if healthy && !connection.isClosed {
            idle.append(connection)
        } else {
            open -= 1
            Task { try? await connection.close() }
        }
        wakeOne()
    }

    private func wakeOne() {
        if !waiters.isEmpty { waiters.removeFirst().resume() }
    }

    /// A connection failure in a few words: NIO's errors list every address tried.
    private static func connectFailure(_ error: any Error) -> String {
        let text = describe(error)
        for known in ["Connection refused", "Connection reset", "timed out", "No route to host"] where text.localizedCaseInsensitiveContains(known) {
            return known.lowercased()
        }
        return String(text.prefix(200))
    }

    /// PostgreSQL's own message where there is one, else the error's text, on one line.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let code = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return message + code
            }
            if let underlying = error.underlying { return "\(underlying)" }
            return "\(error.code)"
        }
        return "\(error)"
    }
}

extension PostgresConnection {
    /// Runs a query to its end: its rows, and the count PostgreSQL reports.
    @discardableResult
    func run(_ query: PostgresQuery, logger: Logger) async throws -> PostgresQueryResult {
        try await self.query(query, logger: logger).get()
    }
}
