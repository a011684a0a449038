import Foundation

/// Milliseconds for the core: wall-clock aligned at start (so start stamps of different nodes
/// are comparable), then monotonic (so timers never jump backwards).
public struct ProcessClock: Sendable {
    private let startWallMillis: UInt64
    private let start: ContinuousClock.Instant

    public init() {
        startWallMillis = UInt64(Date().timeIntervalSince1970 * 1000)
        start = ContinuousClock.now
    }

    public func elapsedMillis() -> UInt64 {
        let elapsed = ContinuousClock.now - start
        return UInt64(elapsed.components.seconds) * 1000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000_000)
    }

    public func now() -> UInt64 { startWallMillis + elapsedMillis() }
}
