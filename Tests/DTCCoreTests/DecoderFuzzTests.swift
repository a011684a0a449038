import Foundation
import Testing

@testable import DTCCore

/// Bytes from disk or the network, damaged every way a seeded generator can think of, must make
/// each decoder throw or return a value, never crash; and a value it returns must survive its
/// own encoding (what was read is what the bytes say, not a misreading). Seeded, so a failure
/// replays; bounded in iterations and time.
enum Fuzz {
    static let iterations = 20_000
    static let timeLimit = Duration.seconds(3)

    /// Damaged copies of `samples`: bit flips, truncations, extensions, overwritten length
    /// fields, spliced samples and random bytes.
    static func inputs(from samples: [[UInt8]], seed: UInt64) -> some Sequence<[UInt8]> {
        var rng = SplitMix64(seed: seed)
        let started = ContinuousClock.now
        return (0..<iterations).lazy.prefix { _ in ContinuousClock.now - started < timeLimit }.map { _ in
            damaged(samples[Int.random(in: 0..<samples.count, using: &rng)], samples: samples, rng: &rng)
        }
    }

    static func damaged(_ sample: [UInt8], samples: [[UInt8]], rng: inout SplitMix64) -> [UInt8] {
        var bytes = sample
        for _ in 0...Int.random(in: 0..<3, using: &rng) {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !bytes.isEmpty:
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[at] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            case 1 where !bytes.isEmpty:
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 2:
                bytes += (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 3 where bytes.count >= 4:
                // A length or count field overwritten with a large or edge value.
                let at = Int.random(in: 0...(bytes.count - 4), using: &rng)
                let value: UInt32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, UInt32.random(in: 0...UInt32.max, using: &rng)].randomElement(using: &rng)!
                for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * i)) }
            case 4:
                let other = samples[Int.random(in: 0..<samples.count, using: &rng)]
                let cut = Int.random(in: 0...bytes.count, using: &rng)
                bytes = Array(bytes.prefix(cut)) + other.dropFirst(Int.random(in: 0...other.count, using: &rng))
            default:
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        return bytes
    }
}

@Suite struct DecoderFuzzTests {
    static let epoch = Epoch(counter: 7, node: 2)
    static let branches = [
        Branch(rm: "inventory", kind: "reserve", payload: Array(#"{"order_id":"o1","sku":"sku-1","qty":2}"#.utf8)),
        Branch(rm: "accounts", kind: "debit", payload: []),
    ]

    static var logRecords: [LogRecord] {
        [
            .start(txnID: TxnID("t-1"), epoch: epoch, stamp: 42, branches: branches),
            .decision(txnID: TxnID("t-1"), outcome: .commit, reason: .none, epoch: epoch),
            .decision(txnID: TxnID("t-ü"), outcome: .abort, reason: AbortReason(.contention, "gave up after 3 attempts"), epoch: epoch),
            .end(txnID: TxnID("t-1")),
            .trim(txnID: TxnID("t-2")),
        ]
    }

    @Test func logRecordsNeverCrashAndRoundTripWhenRead() throws {
        var read = 0
        for input in Fuzz.inputs(from: Self.logRecords.map { $0.encoded() }, seed: 1) {
            guard let record = try? LogRecord(decoding: input) else { continue }
            read += 1
            #expect(try LogRecord(decoding: record.encoded()) == record)
        }
        #expect(read > 0, "some damaged records still decode (a flipped byte inside a string)")
    }

    @Test func txnRowsNeverCrashAndTheDecisionSpliceAgreesWithDecoding() throws {
        var row = TxnRow(txnID: TxnID("t-1"))
        for record in Self.logRecords.prefix(2) { row.apply(record) }
        var ended = row
        ended.apply(.end(txnID: TxnID("t-1")))
        let samples = [TxnRow(txnID: TxnID("t-9")).encoded(), row.encoded(), ended.encoded()]
        for input in Fuzz.inputs(from: samples, seed: 2) {
            let decoded = try? TxnRow(decoding: input)
            if let decoded { #expect(try TxnRow(decoding: decoded.encoded()) == decoded) }
            // The fast path on stored bytes: whatever it makes of damaged bytes must decode as
            // the slow path's result, or it must decline (nil) and leave the slow path to refuse.
            // (The store calls it only with records of the row's own txn, and never with TRIM.)
            for record in Self.logRecords where record.txnID == decoded?.txnID {
                if case .trim = record { continue }
                guard let spliced = TxnRow.applying(record, toEncoded: input), spliced != input, var slow = decoded else { continue }
                slow.apply(record)
                #expect(try TxnRow(decoding: spliced) == slow)
            }
        }
    }

    @Test func preparedTxnsAndLedgerEntriesNeverCrashAndRoundTripWhenRead() throws {
        let prepared = PreparedTxn(
            txnID: TxnID("t-1"), stamp: 9, attempt: 2, sender: Sender(partition: 3, epoch: Self.epoch, node: "n2"), kind: "reserve",
            keys: ["stock/sku-1", "resv/o1"], writes: [Write(key: "stock/sku-1", value: [1, 2]), Write(key: "gone", value: nil)],
            participants: ["inventory", "orders"])
        for input in Fuzz.inputs(from: [prepared.encoded()], seed: 3) {
            guard let read = try? PreparedTxn(decoding: input) else { continue }
            #expect(try PreparedTxn(decoding: read.encoded()) == read)
        }
        let entries = [
            LedgerEntry(outcome: .commit, attempt: 1, epoch: Self.epoch, seenEpoch: Self.epoch, applications: 1, participants: ["a", "b"]),
            LedgerEntry(outcome: .abort, epoch: Self.epoch),
        ]
        for input in Fuzz.inputs(from: entries.map { $0.encoded() }, seed: 4) {
            guard let read = try? LedgerEntry(decoding: input) else { continue }
            #expect(try LedgerEntry(decoding: read.encoded()) == read)
        }
    }
}
