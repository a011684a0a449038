import DTCCore
import DTCFaults
import DTCRouter
import DTCRuntime
import DTCWire
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import PostgresNIO

/// A reason dtc-pg cannot serve that the operator must fix (a setting, a right): said in one
/// line, and the process exits.
public struct PostgresSetupError: Error, CustomStringConvertible {
    public var description: String
}

/// Serves the participant `name` of the cluster config with the PostgreSQL database its
/// `postgres` entry names. Before serving it checks the database can hold prepared
/// transactions, creates dtc's ledger table if missing, and takes every prepared transaction
/// of this participant's as in doubt. While PostgreSQL cannot be reached it waits, retrying
/// every second.
public func servePostgresParticipant(
    config: ClusterConfig, name: String, allowFaultInjection: Bool = false, logger: Logger
) async throws {
    guard let me = config.rm(named: name) else {
        throw ConfigError("no rm named '\(name)' in the cluster config (rms: \(config.rms.map(\.name).joined(separator: ", ")))")
    }
    guard let target = me.postgres else {
        throw ConfigError("rm '\(name)' has no \"postgres\" entry (host, port, database, user, password) in the cluster config")
    }
    let pool = PostgresPool(
        target: target, capacity: 64, connectTimeoutMs: min(1_000, config.timing.prepareTimeoutMs / 2), logger: Logger(label: "dtc-pg.postgres"))
    try await prepareDatabase(pool, target: target, participant: name, logger: logger)
    if me.service == "accounts" {
        guard let seed = config.seed else { throw ConfigError("rm '\(name)' runs the shop's accounts but the cluster config has no \"seed\"") }
        let seeded = try await pool.withConnection { connection in
            try await ShopAccountsSQL.seed(users: seed.users, centsPerUser: seed.centsPerUser, on: connection, logger: logger)
        }
        if seeded { logger.info("\(name): created the shop's accounts (\(seed.users) users, \(seed.centsPerUser) cents each)") }
    }

    if let crash = PostgresCrashPoints.shared.description { logger.notice("\(name): crash point armed: \(crash)") }
    let faults = allowFaultInjection ? FaultInjector(process: name, addresses: config.processNames) : nil
    if faults != nil { logger.notice("\(name): fault injection enabled (admin RPC)") }
    let router = Router(config: config, connections: Connections(sender: name, faults: faults))
    let participant = PostgresParticipant(name: name, pool: pool, config: config, logger: logger) { txnID, partition in
        guard let status = try? await router.resolve(txnID, partition: partition) else { return nil }
        switch status {
        case .preparing: return nil
        case .committed: return .commit
        case .aborted: return .abort
        }
    }
    try await participant.adoptPreparedTransactions()

    let transport = HTTP2ServerTransport.Posix(
        address: .ipv4(host: me.host, port: me.port), transportSecurity: .plaintext,
        config: .defaults { $0.rpc.maxRequestPayloadSize = 16 << 20 })
    let services: [any RegistrableRPCService] = [PostgresService(participant: participant), AdminService(process: name, faults: faults)]
    let server = GRPCServer(transport: transport, services: services, interceptors: [MessageCounter.shared.serverInterceptor] + (faults.map { [FaultServerInterceptor(faults: $0)] } ?? []))
    try await withThrowingDiscardingTaskGroup { group in
        group.addTask { try await server.serve() }
        group.addTask {
            while true {
                try await Task.sleep(for: .milliseconds(config.timing.tickMs))
                await participant.tick()
            }
        }
        if let address = try await transport.listeningAddress.ipv4 {
            logger.info("\(name): serving participant on \(address.host):\(address.port) for postgres \(target.database) at \(target.host):\(target.port)")
        }
    }
}

/// Waits for PostgreSQL, checks it can prepare transactions, and creates the ledger table.
func prepareDatabase(_ pool: PostgresPool, target: ClusterConfig.PostgresTarget, participant: String, logger: Logger) async throws {
    var attempts = 0
    while true {
        do {
            try await pool.withConnection { connection in
                let rows = try await connection.run("SHOW max_prepared_transactions", logger: logger).rows
                let setting = try rows.first?.decode(String.self) ?? "0"
                guard let count = Int(setting), count > 0 else {
                    throw PostgresSetupError(
                        description: "postgres at \(target.host):\(target.port) has max_prepared_transactions = \(setting): dtc-pg needs prepared transactions; set max_prepared_transactions in postgresql.conf to at least the number of txns in flight (e.g. 256) and restart PostgreSQL")
                }
                do {
                    try await connection.run(PostgresQuery(unsafeSQL: PostgresLedger.createTable), logger: logger)
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42501" {
                    throw PostgresSetupError(
                        description: "role \(target.user) may not create dtc's table dtc_ledger in database \(target.database): \(PostgresPool.describe(error)); grant it CREATE on schema public (GRANT CREATE ON SCHEMA public TO \(target.user)) or make it the database's owner")
                }
            }
            return
        } catch let error as PostgresSetupError {
            throw error
        } catch let error as PSQLError where error.serverInfo != nil {
            throw PostgresSetupError(description: "postgres \(target.database) at \(target.host):\(target.port): \(PostgresPool.describe(error))")
        } catch {
            if attempts % 10 == 0 { logger.warning("\(participant): \(error); retrying every second") }
            attempts += 1
            try await Task.sleep(for: .seconds(1))
        }
    }
}
