import ArgumentParser
import DTCCore
import DTCPostgres
import DTCRouter
import DTCRuntime
import DTCShop
import DTCWire
import DTCVerify
import GRPCCore
import Foundation

/// Reads every RM at committed state and checks the business invariants, the atomicity of
/// every txn across RMs and that the committed txns are serializable (from the ledgers' apply
/// order and locked keys); with a history, also that what clients were told holds.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Verifies the invariants across all RMs; exit 1 on any violation.")

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Seconds to wait for the cluster to become quiet (no prepared txn, nothing in flight).") var waitQuiet = 30
    @Option(help: "A history file from `dtc load --history`: also check that what clients were told holds (other txns may exist; `dtc verify` requires a complete history).")
    var history: String?

    func run() async throws {
        let config = try cluster.load()
        let history = try history.map(readHistory)
        let (snapshot, quiet) = try await readQuietSnapshot(config, waitQuiet: waitQuiet)
        let report = history.map {
            Checker.verify(history: $0, complete: false, snapshot: snapshot, initial: shopInitialState(config), quiet: quiet, checkedAt: Date().timeIntervalSince1970)
        } ?? Checker.checkState(snapshot, initial: shopInitialState(config), quiet: quiet)
        for line in report.lines { print(line) }
        print(report.violations == 0 ? "check: all invariants hold" : "check: \(report.violations) violation(s)")
        if report.violations > 0 { throw CLIFailure.failed("\(report.violations) invariant violation(s)") }
    }
}

/// Waits (bounded) until the cluster is quiet, then reads every RM.
func readQuietSnapshot(_ config: ClusterConfig, waitQuiet: Int) async throws -> (ClusterSnapshot, quiet: Bool) {
    let connections = Connections()
    defer { Task { await connections.close() } }
    let reader = ClusterReader(config: config, connections: connections)
    let quiet = await reader.waitUntilQuiet(seconds: waitQuiet)
    do {
        return (try await reader.snapshot(), quiet)
    } catch let failure as CLIFailure {
        throw failure
    } catch {
        throw CLIFailure.failed("cannot read the RMs: \(error)")
    }
}

func readHistory(_ path: String) throws -> History {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIFailure.usage("cannot read history '\(path)'") }
    return History(parsing: text)
}

/// The shop's seed, for its business checks: only where the cluster runs the shop's three
/// services. Other participants get the generic checks alone.
func shopInitialState(_ config: ClusterConfig) -> InitialState? {
    // Any shop service counts: a cluster of accounts participants only (Examples/bank) has the
    // money to conserve and no stock or orders.
    guard let seed = config.seed, config.rms.contains(where: { $0.service.flatMap(ShopService.init(rawValue:)) != nil }) else { return nil }
    return InitialState(skus: seed.skus, unitsPerSku: seed.unitsPerSku, users: seed.users, centsPerUser: seed.centsPerUser)
}

struct ClusterReader {
    let config: ClusterConfig
    let connections: Connections

    private var options: CallOptions { Router(config: config, connections: connections).callOptions }

    /// Polls until no RM holds a prepared txn and no node has one in flight, or time is up.
    func waitUntilQuiet(seconds: Int) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        repeat {
            if await isQuiet() { return true }
            try? await Task.sleep(for: .milliseconds(200))
        } while ContinuousClock.now < deadline
        return false
    }

    private func isQuiet() async -> Bool {
        for rm in config.rms {
            guard let status = try? await connections.resourceManager(rm.address).status(Dtc_V1_RMStatusRequest(), options: options),
                status.prepared == 0
            else { return false }
        }
        // A node that is down cannot be asked; its partitions are led by others.
        for node in config.nodes {
            if let status = try? await connections.coordinator(node.address).status(Dtc_V1_StatusRequest(), options: options),
                status.inFlight > 0
            {
                return false
            }
        }
        return true
    }

    func snapshot() async throws -> ClusterSnapshot {
        var snapshot = ClusterSnapshot()
        snapshot.accountsRMs = max(1, config.rms.filter { $0.service == ShopService.accounts.rawValue }.count)
        for rm in config.rms {
            var ledger: [String: LedgerEntry] = [:]
            for (key, value) in try await scan(rm, .ledger) {
                do {
                    ledger[key] = try LedgerEntry(decoding: value)
                } catch {
                    throw CLIFailure.failed("\(rm.name): ledger entry \(key): \(error)")
                }
            }
            snapshot.ledgers[rm.name] = ledger
            snapshot.prepared[rm.name] = try await scan(rm, .prepared).map(\.0)
            switch rm.service.flatMap(ShopService.init(rawValue:)) {
            case .inventory?: try await readInventory(rm, into: &snapshot)
            case .orders?:
                snapshot.orderRMs.insert(rm.name)
                try await readOrders(rm, into: &snapshot)
            case .accounts? where rm.postgres != nil: try await readAccountsInPostgres(rm, into: &snapshot)
            case .accounts?: try await readAccounts(rm, into: &snapshot)
            case nil: if rm.postgres != nil { try await readPreparedInPostgres(rm, into: &snapshot) }
            }
        }
        return snapshot
    }

    private func readInventory(_ rm: ClusterConfig.Process, into snapshot: inout ClusterSnapshot) async throws {
        for (key, value) in try await scan(rm, prefix: StateKey.stockPrefix) {
            if case .count(let units) = try StateValue(decoding: value) { snapshot.stock[String(key.dropFirst(StateKey.stockPrefix.count))] = units }
        }
        for (key, value) in try await scan(rm, prefix: StateKey.reservationPrefix) {
            if case .reservation(let sku, let qty) = try StateValue(decoding: value) {
                snapshot.reservations[String(key.dropFirst(StateKey.reservationPrefix.count))] = (sku, qty)
            }
        }
    }

    private func readOrders(_ rm: ClusterConfig.Process, into snapshot: inout ClusterSnapshot) async throws {
        for (key, value) in try await scan(rm, prefix: StateKey.orderPrefix) {
            if case .order(let user, let sku, let qty, let amount) = try StateValue(decoding: value) {
                snapshot.orders[String(key.dropFirst(StateKey.orderPrefix.count))] = ClusterSnapshot.Order(user: user, sku: sku, qty: qty, amount: amount)
            }
        }
    }

    private func readAccounts(_ rm: ClusterConfig.Process, into snapshot: inout ClusterSnapshot) async throws {
        let owner = snapshot.accountsRMs > 1 ? "\(rm.name)/" : ""
        for (key, value) in try await scan(rm, prefix: StateKey.balancePrefix) {
            if case .count(let cents) = try StateValue(decoding: value) { snapshot.balances[owner + String(key.dropFirst(StateKey.balancePrefix.count))] = cents }
        }
        for (key, value) in try await scan(rm, prefix: StateKey.creditPrefix) {
            if case .credit(let user, let amount) = try StateValue(decoding: value) {
                snapshot.credits[String(key.dropFirst(StateKey.creditPrefix.count))] = (user, amount)
            }
        }
        for (key, value) in try await scan(rm, prefix: StateKey.debitPrefix) {
            if case .debit(let user, let amount) = try StateValue(decoding: value) {
                snapshot.debits[String(key.dropFirst(StateKey.debitPrefix.count))] = (user, amount)
            }
        }
    }

    /// The shop's accounts in a PostgreSQL database: its tables, and the prepared transactions
    /// PostgreSQL itself still holds (which dtc-pg may not know of yet).
    private func readAccountsInPostgres(_ rm: ClusterConfig.Process, into snapshot: inout ClusterSnapshot) async throws {
        guard let target = rm.postgres else { return }
        let accounts: ShopAccountsSQL.Snapshot
        do {
            accounts = try await ShopAccountsSQL.read(target, participant: rm.name)
        } catch {
            throw CLIFailure.failed("\(rm.name): cannot read postgres \(target.database) at \(target.host):\(target.port): \(error)")
        }
        snapshot.balances.merge(accounts.balances) { $1 }
        snapshot.debits.merge(accounts.debits) { $1 }
        addPrepared(accounts.prepared, of: rm, to: &snapshot)
    }

    /// Any PostgreSQL participant: the prepared transactions the database itself still holds.
    private func readPreparedInPostgres(_ rm: ClusterConfig.Process, into snapshot: inout ClusterSnapshot) async throws {
        guard let target = rm.postgres else { return }
        do {
            addPrepared(try await ShopAccountsSQL.preparedTxns(target, participant: rm.name), of: rm, to: &snapshot)
        } catch {
            throw CLIFailure.failed("\(rm.name): cannot read postgres \(target.database) at \(target.host):\(target.port): \(error)")
        }
    }

    private func addPrepared(_ txnIDs: [String], of rm: ClusterConfig.Process, to snapshot: inout ClusterSnapshot) {
        let known = Set(snapshot.prepared[rm.name] ?? [])
        snapshot.prepared[rm.name, default: []] += txnIDs.filter { !known.contains($0) }
    }

    /// Every entry of `space` under `prefix`, page by page.
    private func scan(_ rm: ClusterConfig.Process, _ space: Dtc_V1_ScanSpace = .state, prefix: String = "") async throws -> [(String, [UInt8])] {
        var entries: [(String, [UInt8])] = []
        var after = ""
        while true {
            var request = Dtc_V1_ScanRequest()
            request.prefix = prefix
            request.space = space
            request.after = after
            request.limit = 5_000
            let page = try await connections.resourceManager(rm.address).scan(request, options: options)
            entries += page.entries.map { ($0.key, [UInt8]($0.value)) }
            guard page.more, let last = page.entries.last else { return entries }
            after = last.key
        }
    }
}
