import ArgumentParser
import DTCClient
import DTCCore
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

    static func make(_ index: Int, runSeed: UInt64, seed: ClusterConfig.Seed) -> GeneratedOrder {
        var rng = SplitMix64(seed: runSeed &+ UInt64(index) &* 0x2545_f491_4f6c_dd1d)
        let user = "user-\(Int.random(in: 0..<seed.users, using: &rng))"
        let sku = "sku-\(Int.random(in: 0..<seed.skus, using: &rng))"
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

/// Counters shared by the load workers.
final class LoadStats: Sendable {
    struct Counts {
        var committed = 0
        var aborted = 0
        var unknown = 0
        var retried = 0
        var abortReasons: [String: Int] = [:]
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var history: [String] = []
    }

    let counts = Mutex(Counts())
    /// The next order index a worker takes.
    let nextIndex = Atomic<Int>(0)

    func record(_ order: GeneratedOrder, _ result: Result<SubmitOutcome, RouterError>, micros: UInt64, keepHistory: Bool) {
        counts.withLock { counts in
            var told = "unknown"
            switch result {
            case .success(let outcome):
                if outcome.attempts > 1 { counts.retried += 1 }
                switch outcome.status {
                case .committed:
                    counts.committed += 1
                    told = "committed"
                    counts.histogram.record(micros)
                case .aborted(let reason):
                    counts.aborted += 1
                    told = "aborted"
                    counts.abortReasons[abortCategory(reason), default: 0] += 1
                    counts.histogram.record(micros)
                case .preparing:
                    counts.unknown += 1
                }
            case .failure:
                counts.unknown += 1
            }
            if keepHistory { counts.history.append("{\"txn\":\"\(order.txnID)\",\"told\":\"\(told)\"}") }
        }
    }
}

/// Groups abort reasons without their SKUs, users and numbers, e.g. "inventory: insufficient stock".
func abortCategory(_ reason: String) -> String {
    let parts = reason.components(separatedBy: " voted NO: ")
    guard parts.count == 2 else { return reason.components(separatedBy: ":").first ?? reason }
    let cause = parts[1].components(separatedBy: CharacterSet(charactersIn: ":")).first ?? parts[1]
    let words = cause.components(separatedBy: " for ").first ?? cause
    return "\(parts[0]): \(words)"
}

struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sends random orders and reports outcomes, throughput and latency.")

    @OptionGroup var cluster: ClusterOptions
    @Option(help: "Number of orders.") var txns = 1_000
    @Option(help: "Orders in flight at once.") var concurrency = 16
    @Option(help: "Seed of the generated orders (default: from the clock; printed).") var seed: UInt64?
    @Option(help: "Seconds to keep retrying a txn whose outcome is unknown, with the same txn ID.") var retryFor = 60
    @Option(help: "Write each txn's told outcome as JSON lines to this file.") var history: String?
    @Flag(help: "Print the summary as one JSON object.") var json = false

    func validate() throws {
        guard txns > 0 else { throw ValidationError("--txns must be positive") }
        guard (1...4_096).contains(concurrency) else { throw ValidationError("--concurrency must be in 1...4096") }
        guard retryFor >= 0 else { throw ValidationError("--retry-for must not be negative") }
    }

    func run() async throws {
        let config = try cluster.load()
        let runSeed = seed ?? UInt64(Date().timeIntervalSince1970 * 1_000)
        let connections = Connections()
        let router = Router(config: config, connections: connections)
        let stats = LoadStats()
        let started = ContinuousClock.now
        let total = txns
        let progress = Task { await Self.reportProgress(stats, total: total, started: started) }
        let worker = Worker(runSeed: runSeed, config: config, router: router, stats: stats, retryFor: .seconds(retryFor), keepHistory: history != nil)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while true {
                        let index = stats.nextIndex.add(1, ordering: .relaxed).oldValue
                        guard index < total else { return }
                        await worker.runOne(index)
                    }
                }
            }
        }
        progress.cancel()
        let elapsed = ContinuousClock.now - started
        FileHandle.standardError.write(Data("\n".utf8))
        try writeHistory(stats)
        printSummary(stats, elapsed: elapsed, runSeed: runSeed)
        await connections.close()
    }

    /// Sends one generated order and records what the client was told.
    struct Worker: Sendable {
        let runSeed: UInt64
        let config: ClusterConfig
        let router: Router
        let stats: LoadStats
        let retryFor: Duration
        let keepHistory: Bool

        func runOne(_ index: Int) async {
            let order = GeneratedOrder.make(index, runSeed: runSeed, seed: config.seed)
            let branches = orderBranches(config, orderID: order.txnID, user: order.user, sku: order.sku, qty: order.qty, amount: order.amount)
            let begin = ContinuousClock.now
            let result: Result<SubmitOutcome, RouterError>
            do {
                result = .success(try await router.submit(TxnID(order.txnID), branches: branches, retryFor: retryFor))
            } catch {
                result = .failure(error)
            }
            stats.record(order, result, micros: (ContinuousClock.now - begin).microseconds, keepHistory: keepHistory)
        }
    }

    private static func reportProgress(_ stats: LoadStats, total txns: Int, started: ContinuousClock.Instant) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let (committed, aborted, unknown) = stats.counts.withLock { ($0.committed, $0.aborted, $0.unknown) }
            let seconds = max((ContinuousClock.now - started).seconds, 0.001)
            let line = String(format: "\r[load] %d/%d done: %d committed, %d aborted, %d unknown, %.0f committed/s   ",
                              committed + aborted + unknown, txns, committed, aborted, unknown, Double(committed) / seconds)
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    private func writeHistory(_ stats: LoadStats) throws {
        guard let history else { return }
        let lines = stats.counts.withLock { $0.history.joined(separator: "\n") }
        do {
            try (lines + "\n").write(toFile: history, atomically: true, encoding: .utf8)
        } catch {
            throw CLIFailure.failed("cannot write history '\(history)': \(error.localizedDescription)")
        }
    }

    private func printSummary(_ stats: LoadStats, elapsed: Duration, runSeed: UInt64) {
        let counts = stats.counts.withLock { $0 }
        let seconds = elapsed.seconds
        let throughput = Double(counts.committed) / max(seconds, 0.001)
        let ms = { (q: Double) in Double(counts.histogram.valueAtPercentile(q)) / 1_000 }
        if json {
            let reasons = counts.abortReasons.sorted { $0.key < $1.key }.map { "\"\(jsonEscape($0.key))\":\($0.value)" }.joined(separator: ",")
            print(String(format: "{\"txns\":%d,\"concurrency\":%d,\"seed\":%llu,\"committed\":%d,\"aborted\":%d,\"unknown\":%d,\"retried\":%d,\"abortedByReason\":{%@},\"durationS\":%.3f,\"throughput\":%.1f,\"p50Ms\":%.2f,\"p90Ms\":%.2f,\"p99Ms\":%.2f,\"maxMs\":%.2f}",
                         txns, concurrency, runSeed, counts.committed, counts.aborted, counts.unknown, counts.retried, reasons, seconds, throughput, ms(50), ms(90), ms(99), Double(counts.histogram.max) / 1_000))
            return
        }
        print("load: \(txns) orders, concurrency \(concurrency), seed \(runSeed), \(String(format: "%.2f", seconds)) s")
        print("  committed  \(counts.committed)")
        print("  aborted    \(counts.aborted)")
        for (reason, count) in counts.abortReasons.sorted(by: { $0.value > $1.value }) {
            print("    \(count)\t\(reason)")
        }
        print("  unknown    \(counts.unknown)")
        print("  retried    \(counts.retried) (same txn ID, after a timeout or a node down)")
        print(String(format: "  throughput %.1f committed txn/s", throughput))
        print(String(format: "  latency    p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", ms(50), ms(90), ms(99), Double(counts.histogram.max) / 1_000))
    }
}

func jsonEscape(_ text: String) -> String {
    text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var microseconds: UInt64 { UInt64(max(0, seconds * 1e6)) }
}
