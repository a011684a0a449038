import ArgumentParser
import DTCCore
import DTCRouter
import DTCRuntime
import DTCShop
import DTCVerify
import Foundation
import Histogram
import Synchronization

/// One generated order. About 3 % are meant to fail on short stock and 3 % on short balance.
struct GeneratedOrder: Sendable {
    var txnID: String
    var user: String
    var sku: String
    var qty: Int64
    var amount: Int64

    /// Contention on purpose: `fraction` of the orders go to the first `hot` SKUs.
    struct Skew: Sendable, Equatable {
        var hot: Int
        var fraction: Double
    }

    static func make(_ index: Int, runSeed: UInt64, seed: ClusterConfig.Seed, skew: Skew? = nil) -> GeneratedOrder {
        var rng = SplitMix64(seed: runSeed &+ UInt64(index) &* 0x2545_f491_4f6c_dd1d)
        let user = "user-\(Int.random(in: 0..<seed.users, using: &rng))"
        var skuIndex = Int.random(in: 0..<seed.skus, using: &rng)
        if let skew {
            // Its own generator: the same seed without --hot-skus gives the same orders as before.
            var hotRng = SplitMix64(seed: runSeed ^ 0x9e37_79b9_7f4a_7c15 &+ UInt64(index))
            if Double.random(in: 0..<1, using: &hotRng) < skew.fraction { skuIndex = Int.random(in: 0..<skew.hot, using: &hotRng) }
        }
        let sku = "sku-\(skuIndex)"
        var qty = Int64.random(in: 1...3, using: &rng)
        var amount = qty * Int64.random(in: 100...2_000, using: &rng)
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<3: qty = seed.unitsPerSku + 1
        case 3..<6: amount = seed.centsPerUser + 1
        default: break
        }
        return GeneratedOrder(txnID: "load-\(runSeed)-\(index)", user: user, sku: sku, qty: qty, amount: amount)
    }
}

/// One generated transfer: money between two accounts at two different accounts
/// participants, in a random direction, so that txns lock the same accounts in opposite
/// orders (deadlock-prone by construction; wait-die keeps it deadlock-free).
struct GeneratedTransfer: Sendable {
    var txnID: String
    var transfer: HistoryEvent.Transfer

    static func make(_ index: Int, runSeed: UInt64, users: Int, accountsRMs: [String]) -> GeneratedTransfer {
        var rng = SplitMix64(seed: runSeed &+ UInt64(index) &* 0x2545_f491_4f6c_dd1d)
        let fromIndex = Int.random(in: 0..<accountsRMs.count, using: &rng)
        let toIndex = (fromIndex + Int.random(in: 1..<accountsRMs.count, using: &rng)) % accountsRMs.count
        let transfer = HistoryEvent.Transfer(
            from: "user-\(Int.random(in: 0..<users, using: &rng))", fromRM: accountsRMs[fromIndex],
            to: "user-\(Int.random(in: 0..<users, using: &rng))", toRM: accountsRMs[toIndex], amount: Int64.random(in: 1...1_000, using: &rng))
        return GeneratedTransfer(txnID: "xfer-\(runSeed)-\(index)", transfer: transfer)
    }

    var branches: [Branch] {
        transferBranches(transferID: txnID, from: transfer.from, fromRM: transfer.fromRM, to: transfer.to, toRM: transfer.toRM, amount: transfer.amount)
    }
}

/// What `dtc load` sends.
enum Workload: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// Shop orders: reserve stock, create the order, debit the account.
    case order
    /// Transfers between accounts at two accounts participants.
    case transfer
}

/// Counters shared by the load workers.
final class LoadStats: Sendable {
    struct Counts {
        var committed = 0
        var aborted = 0
        var unknown = 0
        var retried = 0
        /// Orders sent again with the same txn ID after an answer (or none).
        var resubmitted = 0
        var abortReasons: [String: Int] = [:]
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        /// Per committed txn: the attempts its coordinator made (those it knew of).
        var attempts = Histogram<UInt64>(highestTrackableValue: 1_000_000, numberOfSignificantValueDigits: .three)
        var attemptsTotal: UInt64 = 0
    }

    let counts = Mutex(Counts())
    /// The next order index a worker takes.
    let nextIndex = Atomic<Int>(0)

    /// Counts an order's final answer (its last attempt).
    func record(_ result: Result<SubmitOutcome, RouterError>, micros: UInt64, resubmitted: Bool) {
        counts.withLock { counts in
            if resubmitted { counts.resubmitted += 1 }
            switch result {
            case .success(let outcome):
                if outcome.attempts > 1 { counts.retried += 1 }
                switch outcome.status {
                case .committed:
                    counts.committed += 1
                    counts.histogram.record(micros)
                    if outcome.coordinatorAttempts > 0 {
                        counts.attempts.record(UInt64(outcome.coordinatorAttempts))
                        counts.attemptsTotal += UInt64(outcome.coordinatorAttempts)
                    }
                case .aborted(let reason):
                    counts.aborted += 1
                    counts.abortReasons[abortCategory(reason), default: 0] += 1
                    counts.histogram.record(micros)
                case .preparing:
                    counts.unknown += 1
                }
            case .failure:
                counts.unknown += 1
            }
        }
    }
}

/// Streams a client history: each line is written with one `write` as it happens, so a load
/// that is killed or stopped still leaves every line it wrote readable.
final class HistoryWriter: Sendable {
    private let handle: Mutex<FileHandle>

    init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw CLIFailure.failed("cannot create history '\(path)'")
        }
        self.handle = Mutex(handle)
    }

    func append(_ event: HistoryEvent) {
        let line = Data((event.jsonLine + "\n").utf8)
        handle.withLock { $0.write(line) }
    }

    func close() {
        handle.withLock { try? $0.close() }
    }
}

/// Groups abort reasons without their SKUs, users and numbers, e.g. "inventory: insufficient stock".
/// The summary's category of an abort: its cause, then who said what, without the details
/// ("refused: inventory: insufficient stock").
func abortCategory(_ reason: AbortReason) -> String {
    let text = reason.text
    let parts = text.components(separatedBy: " voted NO: ")
    guard parts.count == 2 else { return "\(reason.cause): " + (text.components(separatedBy: ":").first ?? text) }
    let said = parts[1].components(separatedBy: CharacterSet(charactersIn: ":")).first ?? parts[1]
    let words = said.components(separatedBy: " for ").first ?? said
    return "\(reason.cause): \(parts[0]): \(words)"
}

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sends random orders and reports outcomes, throughput and latency.")

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Number of orders (unless --duration is given).") var txns = 1_000
    @Option(help: "Send new orders for this many seconds instead of a number of orders.") var duration: Double?
    @Option(help: "Orders in flight at once.") var concurrency = 16
    @Option(help: "Seed of the generated orders (default: from the clock; printed).") var seed: UInt64?
    @Option(help: "Seconds to keep retrying a txn whose outcome is unknown, with the same txn ID.") var retryFor = 60
    @Option(help: "Attempts per order: an order whose outcome is still unknown after --retry-for is submitted again with the same txn ID, up to this many times.")
    var attempts = 1
    @Option(help: "Fraction of orders submitted once more with the same txn ID after their answer (a client retry that must get the same outcome).")
    var resubmit = 0.0
    @Option(help: "Stream the history to this file: one invoke line per attempt before it is sent, one ok/fail/unknown line after.")
    var history: String?
    @Option(help: "Contention: send --hot-fraction of the orders to the first this many SKUs (e.g. 10).") var hotSkus: Int?
    @Option(help: "With --hot-skus: the fraction of orders that go to the hot SKUs.") var hotFraction = 0.5
    @Option(help: "What to send: order (the shop's three-service orders) or transfer (money between accounts at two accounts participants).")
    var workload = Workload.order
    @Option(help: "With --workload transfer: draw the accounts from the first this many users (fewer: more contention).") var accounts: Int?
    @Flag(help: "Print the summary as one JSON object.") var json = false
    @Flag(help: "Send each order as a unary Submit (an HTTP/2 stream per txn) instead of on one long-lived SubmitStream per node, many per message.")
    var unary = false

    func validate() throws {
        guard txns > 0 else { throw ValidationError("--txns must be positive") }
        if let duration { guard duration > 0 && duration.isFinite else { throw ValidationError("--duration must be positive") } }
        guard (1...4_096).contains(concurrency) else { throw ValidationError("--concurrency must be in 1...4096") }
        guard retryFor >= 0 else { throw ValidationError("--retry-for must not be negative") }
        guard (1...100).contains(attempts) else { throw ValidationError("--attempts must be in 1...100") }
        guard (0...1).contains(resubmit) else { throw ValidationError("--resubmit must be in 0...1") }
        if let hotSkus { guard hotSkus > 0 else { throw ValidationError("--hot-skus must be positive") } }
        guard (0...1).contains(hotFraction) else { throw ValidationError("--hot-fraction must be in 0...1") }
        if workload == .transfer && hotSkus != nil { throw ValidationError("--hot-skus is for the order workload; use --accounts with --workload transfer") }
        if let accounts {
            guard workload == .transfer else { throw ValidationError("--accounts is for --workload transfer") }
            guard accounts >= 1 else { throw ValidationError("--accounts must be positive") }
        }
    }

    /// The accounts participants and users a transfer load draws from, checked against the config.
    private func transferSetup(_ config: ClusterConfig, _ seed: ClusterConfig.Seed) throws -> TransferSetup {
        let rms = config.rms.filter { $0.service == ShopService.accounts.rawValue && $0.postgres == nil }.map(\.name)
        guard rms.count >= 2 else {
            throw CLIFailure.usage(
                "--workload transfer needs two participants running the accounts service (dtc-rm); this cluster config has \(rms.count) (Examples/bank/cluster.json has two)")
        }
        let users = accounts ?? seed.users
        guard users <= seed.users else { throw CLIFailure.usage("--accounts \(users) is more than the \(seed.users) users of the cluster config's seed") }
        return TransferSetup(rms: rms, users: users)
    }

    /// The SKU skew, checked against the cluster's SKUs.
    private func skew(_ seed: ClusterConfig.Seed) throws -> GeneratedOrder.Skew? {
        guard let hotSkus else { return nil }
        guard hotSkus <= seed.skus else {
            throw CLIFailure.usage("--hot-skus \(hotSkus) is more than the \(seed.skus) SKUs of the cluster config's seed")
        }
        return GeneratedOrder.Skew(hot: hotSkus, fraction: hotFraction)
    }

    func run() async throws {
        let config = try cluster.load()
        let runSeed = seed ?? UInt64(Date().timeIntervalSince1970 * 1_000)
        // Its messages are counted, for the benchmark's messages per txn.
        let connections = Connections(interceptors: { _ in [MessageCounter.shared.clientInterceptor] })
        let router = Router(config: config, connections: connections, submitStreams: !unary)
        let stats = LoadStats()
        let historyWriter = try history.map(HistoryWriter.init)
        let started = ContinuousClock.now
        let deadline = duration.map { started + .milliseconds(Int64($0 * 1_000)) }
        let total = duration == nil ? txns : Int.max
        let progress = Task { await Self.reportProgress(stats, total: duration == nil ? txns : nil, started: started) }
        guard let shopSeed = config.seed else { throw CLIFailure.usage("this cluster runs no shop: the cluster config has no \"seed\"") }
        let transfers = workload == .transfer ? try transferSetup(config, shopSeed) : nil
        let worker = Worker(runSeed: runSeed, seed: shopSeed, skew: try skew(shopSeed), shop: transfers == nil ? try ShopRMs(config) : nil,
                            transfers: transfers, router: router, stats: stats,
                            retryFor: .seconds(retryFor), attempts: attempts, resubmit: resubmit, deadline: deadline, history: historyWriter)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while deadline.map({ ContinuousClock.now < $0 }) ?? true {
                        let index = stats.nextIndex.add(1, ordering: .relaxed).oldValue
                        guard index < total else { return }
                        await worker.runOne(index)
                    }
                }
            }
        }
        progress.cancel()
        historyWriter?.close()
        let elapsed = ContinuousClock.now - started
        FileHandle.standardError.write(Data("\n".utf8))
        printSummary(stats, elapsed: elapsed, runSeed: runSeed)
        router.finish()
        await connections.close()
    }

    /// Sends one generated order (again, with the same txn ID, while its outcome is unknown or
    /// when it is picked for a resubmission) and records what the client was told.
    struct Worker: Sendable {
        let runSeed: UInt64
        let seed: ClusterConfig.Seed
        let skew: GeneratedOrder.Skew?
        let shop: ShopRMs?
        let transfers: TransferSetup?
        let router: Router
        let stats: LoadStats
        let retryFor: Duration
        let attempts: Int
        let resubmit: Double
        let deadline: ContinuousClock.Instant?
        let history: HistoryWriter?

        /// The txn for `index`: its ID, branches and the invoke line of an attempt.
        private func job(_ index: Int) -> (txnID: String, branches: [Branch], invoke: @Sendable (Int, Double) -> HistoryEvent) {
            if let transfers {
                let transfer = GeneratedTransfer.make(index, runSeed: runSeed, users: transfers.users, accountsRMs: transfers.rms)
                return (transfer.txnID, transfer.branches, { .invoke(transfer.txnID, attempt: $0, at: $1, transfer.transfer) })
            }
            let order = GeneratedOrder.make(index, runSeed: runSeed, seed: seed, skew: skew)
            let branches = shop!.branches(orderID: order.txnID, user: order.user, sku: order.sku, qty: order.qty, amount: order.amount)
            let invoked = HistoryEvent.Order(user: order.user, sku: order.sku, qty: order.qty, amount: order.amount)
            return (order.txnID, branches, { .invoke(order.txnID, attempt: $0, at: $1, invoked) })
        }

        func runOne(_ index: Int) async {
            let job = job(index)
            var rng = SplitMix64(seed: runSeed ^ 0x5bd1_e995 &+ UInt64(index))
            let resubmitOnce = Double.random(in: 0..<1, using: &rng) < resubmit
            var attempt = 1
            while true {
                let begin = ContinuousClock.now
                let result = await send(job, attempt: attempt)
                let isUnknown = result.told == nil
                let again = attempt < attempts && (isUnknown || (resubmitOnce && attempt == 1))
                let inTime = deadline.map { ContinuousClock.now < $0 + retryFor } ?? true
                guard again && inTime else {
                    stats.record(result.result, micros: (ContinuousClock.now - begin).microseconds, resubmitted: attempt > 1)
                    return
                }
                attempt += 1
            }
        }

        /// One attempt: its invoke line, the submit, its completion line.
        private func send(
            _ job: (txnID: String, branches: [Branch], invoke: @Sendable (Int, Double) -> HistoryEvent), attempt: Int
        ) async -> (result: Result<SubmitOutcome, RouterError>, told: Outcome?) {
            history?.append(job.invoke(attempt, Date().timeIntervalSince1970))
            let result: Result<SubmitOutcome, RouterError>
            do {
                result = .success(try await router.submit(TxnID(job.txnID), branches: job.branches, retryFor: retryFor))
            } catch {
                result = .failure(error)
            }
            let now = Date().timeIntervalSince1970
            let (kind, reason, told): (HistoryEvent.Kind, String?, Outcome?) =
                switch result {
                case .success(let outcome):
                    switch outcome.status {
                    case .committed: (.ok, nil, .commit)
                    case .aborted(let reason): (.fail, reason.text, .abort)
                    case .preparing: (.unknown, "still preparing at \(outcome.node)", nil)
                    }
                case .failure(let error): (.unknown, error.description, nil)
                }
            history?.append(HistoryEvent(kind: kind, txn: job.txnID, attempt: attempt, time: now, reason: reason))
            return (result, told)
        }
    }

    private static func reportProgress(_ stats: LoadStats, total txns: Int?, started: ContinuousClock.Instant) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let (committed, aborted, unknown) = stats.counts.withLock { ($0.committed, $0.aborted, $0.unknown) }
            let seconds = max((ContinuousClock.now - started).seconds, 0.001)
            let done = "\(committed + aborted + unknown)" + (txns.map { "/\($0)" } ?? "")
            let line = String(format: "\r[load] %@ done: %d committed, %d aborted, %d unknown, %.0f committed/s   ",
                              done, committed, aborted, unknown, Double(committed) / seconds)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    private func printSummary(_ stats: LoadStats, elapsed: Duration, runSeed: UInt64) {
        let counts = stats.counts.withLock { $0 }
        let seconds = elapsed.seconds
        let throughput = Double(counts.committed) / max(seconds, 0.001)
        let ms = { (q: Double) in Double(counts.histogram.valueAtPercentile(q)) / 1_000 }
        let orders = counts.committed + counts.aborted + counts.unknown
        let attemptsMean = counts.attempts.totalCount == 0 ? 0 : Double(counts.attemptsTotal) / Double(counts.attempts.totalCount)
        if json {
            // Typed: a literal 0 in a CVarArg list would go as an Int, and %.3f would take the next Double.
            let skewFraction: Double = hotSkus == nil ? 0 : hotFraction
            let reasons = counts.abortReasons.sorted { $0.key < $1.key }.map { "\"\(jsonEscape($0.key))\":\($0.value)" }.joined(separator: ",")
            print(String(format: "{\"workload\":\"%@\",\"txns\":%d,\"concurrency\":%d,\"seed\":%llu,\"committed\":%d,\"aborted\":%d,\"unknown\":%d,\"retried\":%d,\"resubmitted\":%d,\"abortedByReason\":{%@},\"hotSkus\":%d,\"hotFraction\":%.3f,\"durationS\":%.3f,\"throughput\":%.1f,\"p50Ms\":%.2f,\"p90Ms\":%.2f,\"p99Ms\":%.2f,\"maxMs\":%.2f,\"messagesSent\":%llu,\"attemptsMean\":%.3f,\"attemptsP99\":%llu,\"attemptsMax\":%llu}",
                         workload.rawValue, orders, concurrency, runSeed, counts.committed, counts.aborted, counts.unknown, counts.retried, counts.resubmitted, reasons, hotSkus ?? 0, skewFraction, seconds, throughput, ms(50), ms(90), ms(99), Double(counts.histogram.max) / 1_000, MessageCounter.shared.messagesSent,
                         attemptsMean, counts.attempts.valueAtPercentile(99), counts.attempts.max))
            return
        }
        let skewText = hotSkus.map { ", \(Int(hotFraction * 100)) % of them to \($0) hot SKUs" } ?? ""
        let what = workload == .transfer ? "transfers" + (accounts.map { " among \($0) accounts per participant" } ?? "") : "orders"
        print("load: \(orders) \(what), concurrency \(concurrency), seed \(runSeed)\(skewText), \(String(format: "%.2f", seconds)) s")
        print("  committed  \(counts.committed)")
        print("  aborted    \(counts.aborted)")
        for (reason, count) in counts.abortReasons.sorted(by: { $0.value > $1.value }) {
            print("    \(count)\t\(reason)")
        }
        print("  unknown    \(counts.unknown)")
        print("  retried    \(counts.retried) (same txn ID, after a timeout or a node down)")
        print("  resubmitted \(counts.resubmitted) (sent again by the client with the same txn ID after an answer or none)")
        print(String(format: "  attempts   mean %.3f, p99 %llu, max %llu per committed txn (the coordinator's; each retry keeps the start stamp)",
                     attemptsMean, counts.attempts.valueAtPercentile(99), counts.attempts.max))
        print(String(format: "  throughput %.1f committed txn/s", throughput))
        print(String(format: "  latency    p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", ms(50), ms(90), ms(99), Double(counts.histogram.max) / 1_000))
    }
}

/// The accounts participants and the users a transfer load draws from.
struct TransferSetup: Sendable {
    var rms: [String]
    var users: Int
}

func jsonEscape(_ text: String) -> String {
    text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var microseconds: UInt64 { UInt64(max(0, seconds * 1e6)) }
}
