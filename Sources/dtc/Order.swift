import ArgumentParser
import DTCClient
import DTCCore
import DTCWire
import Foundation

/// One order across the three services: reserve stock, create the order, debit the account.
func orderBranches(_ config: ClusterConfig, orderID: String, user: String, sku: String, qty: Int64, amount: Int64) -> [Branch] {
    [
        Branch(rm: config.rm(for: .inventory)!.name, op: .reserve(orderID: orderID, sku: sku, qty: qty)),
        Branch(rm: config.rm(for: .orders)!.name, op: .createOrder(orderID: orderID, userID: user, sku: sku, qty: qty, amount: amount)),
        Branch(rm: config.rm(for: .accounts)!.name, op: .debit(orderID: orderID, userID: user, amount: amount)),
    ]
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
        let branches = orderBranches(config, orderID: txnID, user: user, sku: sku, qty: qty, amount: amount)
        let validID: TxnID
        do {
            validID = try validateSubmission(txnID: txnID, branches: branches, services: config.services, limits: config.limits)
        } catch {
            throw CLIFailure.usage("invalid order: \(error.description)")
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
            print("  \(branch.rm): \(branch.state.name)\(branch.reason.isEmpty ? "" : " (\(branch.reason))")")
        }
    }
}
