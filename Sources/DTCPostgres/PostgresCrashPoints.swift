import Foundation
import Synchronization

/// Points at which dtc-pg can be made to die on purpose, for scripts/pg-test.sh:
/// `DTC_CRASH_AT=pg-after-prepare` (or `point:N` for the N-th time). The process exits at
/// once, like `kill -9`. Off unless the variable is set; dtc-pg logs it at start-up.
enum PostgresCrashPoint: String, Sendable {
    /// PREPARE TRANSACTION returned (PostgreSQL holds the branch), before the vote is sent.
    case afterPrepare = "pg-after-prepare"
    /// COMMIT PREPARED returned, before the ack is sent.
    case afterCommit = "pg-after-commit"
}

final class PostgresCrashPoints: Sendable {
    private let armed: PostgresCrashPoint?
    private let after: Int
    private let hits = Atomic<Int>(0)

    static let shared = PostgresCrashPoints(ProcessInfo.processInfo.environment["DTC_CRASH_AT"])

    init(_ setting: String?) {
        let parts = setting?.split(separator: ":").map(String.init) ?? []
        armed = parts.first.flatMap(PostgresCrashPoint.init(rawValue:))
        after = parts.count > 1 ? Int(parts[1]) ?? 1 : 1
    }

    var description: String? { armed.map { "\($0.rawValue) (at hit \(after))" } }

    func reached(_ point: PostgresCrashPoint) {
        guard point == armed, hits.add(1, ordering: .relaxed).newValue >= after else { return }
        FileHandle.standardError.write(Data("dtc-pg: crash point \(point.rawValue) reached; exiting\n".utf8))
        _exit(137)
    }
}
