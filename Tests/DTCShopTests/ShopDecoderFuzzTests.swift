import DTCCore
import Testing

@testable import DTCShop

/// Payloads and stored values, damaged by a seeded generator: the decoders throw or return,
/// never crash, and what they return re-encodes to something they read the same way.
@Suite struct ShopDecoderFuzzTests {
    static func damaged(_ samples: [[UInt8]], seed: UInt64, count: Int = 20_000) -> [[UInt8]] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            var bytes = samples[Int.random(in: 0..<samples.count, using: &rng)]
            switch Int.random(in: 0..<4, using: &rng) {
            case 0 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            case 1 where !bytes.isEmpty: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 2: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
            default: bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            return bytes
        }
    }

    @Test func branchPayloadsNeverCrashTheParser() throws {
        let samples = [
            ShopOperation.reserve(orderID: "o1", sku: "sku-1", qty: 2).payload,
            ShopOperation.createOrder(orderID: "o1", userID: "u\"1", sku: "s", qty: 1, amount: 300).payload,
            ShopOperation.credit(transferID: "x1", userID: "ü", amount: 5).payload,
            Array(#"{"a":-9223372036854775808,"b":"\u0000\n"}"#.utf8),
        ]
        for input in Self.damaged(samples, seed: 11) {
            guard let fields = try? FlatJSON.decode(input) else { continue }
            #expect(try FlatJSON.decode(FlatJSON.encode(fields.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })) == fields)
        }
    }

    @Test func storedValuesNeverCrashTheDecoder() throws {
        let samples = [
            StateValue.count(-5), .reservation(sku: "sku-1", qty: 3), .order(userID: "u", sku: "s", qty: 1, amount: 2),
            .debit(userID: "u", amount: 9), .credit(userID: "v", amount: 1),
        ].map { $0.encoded() }
        for input in Self.damaged(samples, seed: 12) {
            guard let value = try? StateValue(decoding: input) else { continue }
            #expect(try StateValue(decoding: value.encoded()) == value)
        }
    }
}
