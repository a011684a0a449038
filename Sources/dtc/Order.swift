import ArgumentParser
import DTCCore
import DTCPostgres
import DTCRouter
import DTCRuntime
import DTCShop
import DTCWire
import Foundation

/// The shop's three RMs in this cluster: the first RM of each service.
struct ShopRMs {
    var inventory: String
    var orders: String
    var accounts: String
    /// The accounts service is a PostgreSQL database (dtc-pg): its debit is an SQL branch.
    var accountsInPostgres: Bool

    init(_ config: ClusterConfig) throws {
        func named(_ service: ShopService) throws -> String {
            guard let rm = config.rm(forService: service.rawValue) else {
                throw CLIFailure.usage("this cluster runs no shop: no rm has \"service\": \"\(service.rawValue)\" in the cluster config")
            }
            return rm.name
        }
        inventory = try named(.inventory)
        orders = try named(.orders)
        accounts = try named(.accounts)
        accountsInPostgres = config.rm(named: accounts)?.postgres != nil
    }

    /// One order across the three services: reserve stock, create the order, debit the account.
    func branches(orderID: String, user: String, sku: String, qty: Int64, amount: Int64) -> [Branch] {
        let shop = orderBranches(orderID: orderID, user: user, sku: sku, qty: qty, amount: amount, inventory: inventory, orders: orders, accounts: accounts)
        guard accountsInPostgres else { return shop }
        return shop.map { $0.rm == accounts ? ShopAccountsSQL.debit(rm: accounts, orderID: orderID, userID: user, amount: amount) : $0 }
    }
}

struct Order: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Places one order (reserve, create, debit) as one txn.")

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "User who pays.") var user: String
    @Option(help: "SKU to reserve.") var sku: String
    @Option(help: "Units to reserve.") var qty: Int64
    @Option(help: "Amount to debit, in cents.") var amount: Int64
    @Option(help: "Txn ID (also the order ID); default: a new one.") var txn: String?
    @Option(help: "Seconds to keep retrying while the outcome is unknown (node down, no quorum).") var retryFor = 60

    func run() async throws {
        let config = try cluster.load()
        let txnID = txn ?? "order-\(UInt64.random(in: 0..<UInt64.max))"
        for (name, value, max) in [("qty", qty, ShopOperation.quantityMax), ("amount", amount, ShopOperation.amountMax)] where !(1...max).contains(value) {
            throw CLIFailure.usage("invalid order: --\(name) must be in 1...\(max), got \(value)")
        }
        let branches = try ShopRMs(config).branches(orderID: txnID, user: user, sku: sku, qty: qty, amount: amount)
        try await submitAndPrint(config, txnID: txnID, branches: branches, retryFor: retryFor, what: "order")
    }
}

/// Validates, submits and prints the outcome of one txn, as `dtc order` and `dtc submit` do.
func submitAndPrint(_ config: ClusterConfig, txnID: String, branches: [Branch], retryFor: Int, what: String) async throws {
    let validID: TxnID
    do {
        validID = try validateSubmission(txnID: txnID, branches: branches, participants: config.participantNames, limits: config.limits)
    } catch {
        throw CLIFailure.usage("invalid \(what): \(error.description)")
    }
    let connections = Connections()
    defer { Task { await connections.close() } }
    let outcome: SubmitOutcome
    do {
        outcome = try await Router(config: config, connections: connections).submit(validID, branches: branches, retryFor: .seconds(retryFor))
    } catch {
        throw routerFailure(error, txnID: txnID)
    }
    switch outcome.status {
    case .committed: print("txn \(txnID): COMMITTED (partition \(outcome.partition), node \(outcome.node))")
    case .aborted(let reason): print("txn \(txnID): ABORTED: \(reason) (partition \(outcome.partition), node \(outcome.node))")
    case .preparing: throw CLIFailure.failed("txn \(txnID): still preparing")
    }
}

struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sends one txn with any participants' branches.",
        discussion: """
            Each --branch is PARTICIPANT:KIND=PAYLOAD, where PAYLOAD is @FILE (the file's bytes), - (standard \
            input, for one branch at most) or the text itself (e.g. JSON). Example:
              dtc submit --txn t1 --branch 'inventory:reserve={"order_id":"t1","sku":"sku-1","qty":1}' \\
                --branch ledger:transfer=@transfer.json
            """)

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "The txn ID: the idempotency key; submitting it again with the same branches answers its outcome.") var txn: String
    @Option(name: .customLong("branch"), help: "PARTICIPANT:KIND=@FILE|-|TEXT; repeat for each participant.") var branchSpecs: [String] = []
    @Option(help: "Seconds to keep retrying while the outcome is unknown (node down, no quorum).") var retryFor = 60

    func run() async throws {
        let config = try cluster.load()
        guard !branchSpecs.isEmpty else { throw CLIFailure.usage("give at least one --branch PARTICIPANT:KIND=PAYLOAD") }
        guard branchSpecs.filter({ $0.hasSuffix("=-") }).count <= 1 else { throw CLIFailure.usage("only one --branch may read its payload from standard input (-)") }
        let branches = try branchSpecs.map(Self.branch)
        try await submitAndPrint(config, txnID: txn, branches: branches, retryFor: retryFor, what: "txn")
    }

    static func branch(_ spec: String) throws -> Branch {
        guard let colon = spec.firstIndex(of: ":"), let equals = spec[colon...].firstIndex(of: "=") else {
            throw CLIFailure.usage("--branch '\(spec)' is not PARTICIPANT:KIND=PAYLOAD")
        }
        let rm = String(spec[..<colon])
        let kind = String(spec[spec.index(after: colon)..<equals])
        let value = String(spec[spec.index(after: equals)...])
        return Branch(rm: rm, kind: kind, payload: try payload(value, rm: rm))
    }

    private static func payload(_ value: String, rm: String) throws -> [UInt8] {
        if value == "-" { return [UInt8](FileHandle.standardInput.readDataToEndOfFile()) }
        guard value.hasPrefix("@") else { return Array(value.utf8) }
        let path = String(value.dropFirst())
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CLIFailure.usage("--branch for \(rm): cannot read payload file '\(path)'")
        }
        return [UInt8](data)
    }
}

func routerFailure(_ error: RouterError, txnID: String) -> CLIFailure {
    switch error {
    case .rejected(let code, let message):
        CLIFailure(message: "txn \(txnID): \(code): \(message)", code: code == .invalidArgument ? 2 : 1)
    case .unknownOutcome(let lastError):
        .failed("txn \(txnID): outcome unknown (retry with --txn \(txnID)): \(lastError)")
    }
}

struct Txn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Shows one txn's state and its branches.")

    @OptionGroup var cluster: ClusterOptions
    @Argument(help: "The txn ID.") var id: String

    func run() async throws {
        let config = try cluster.load()
        let txnID: TxnID
        do { txnID = try TxnID(validating: id) } catch { throw CLIFailure.usage("invalid txn ID: \(error.description)") }
        let connections = Connections()
        defer { Task { await connections.close() } }
        let detail: Dtc_V1_TxnDetail
        do {
            detail = try await Router(config: config, connections: connections).txn(txnID)
        } catch {
            throw routerFailure(error, txnID: id)
        }
        let outcome = detail.outcome
        let reason = outcome.reason.isEmpty ? "" : ": \(outcome.reason)"
        print("txn \(id): \(outcome.state.name)\(reason)")
        print("  partition \(outcome.partition), node \(outcome.node), epoch \(detail.epochCounter), start stamp \(detail.startStamp)")
        for branch in detail.branches {
            let shape = branch.kind.isEmpty ? "" : " \(branch.kind), \(branch.payloadBytes)-byte payload:"
            print("  \(branch.rm):\(shape) \(branch.state.name)\(branch.reason.isEmpty ? "" : " (\(branch.reason))")")
        }
    }
}
