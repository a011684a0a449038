import Foundation
import Synchronization

/// Named points at which a node can be made to die on purpose, for the failover tests:
/// `DTC_CRASH_AT=after-commit-local` (or `point:N` to die at the N-th time the point is
/// reached). The process exits at once, like `kill -9`: no cleanup, nothing flushed but what
/// is already durable. Off unless the variable is set; the node logs it at start-up.
enum CrashPoint: String, CaseIterable, Sendable {
    /// A batch with PREPAREs was written to an RM's stream.
    case afterPreparesSent = "after-prepares-sent"
    /// Every vote of a txn is in (all YES), before its COMMIT is appended.
    case afterVotes = "after-votes"
    /// A COMMIT is durable in the leader's own log, before a quorum holds it.
    case afterCommitLocal = "after-commit-local"
    /// A quorum holds a COMMIT, before any COMMIT is sent to an RM.
    case afterCommitQuorum = "after-commit-quorum"
    /// COMMITs were written to one RM's stream but not yet to the others.
    case midwayCommits = "midway-commits"
}

final class CrashPoints: Sendable {
    private let armed: CrashPoint?
    private let after: Int
    private let hits = Atomic<Int>(0)

    static let shared = CrashPoints(ProcessInfo.processInfo.environment["DTC_CRASH_AT"])

    init(_ setting: String?) {
        let parts = setting?.split(separator: ":").map(String.init) ?? []
        armed = parts.first.flatMap(CrashPoint.init(rawValue:))
        after = parts.count > 1 ? Int(parts[1]) ?? 1 : 1
    }

    func isArmed(_ point: CrashPoint) -> Bool { armed == point }

    var description: String? { armed.map { "\($0.rawValue) (at hit \(after))" } }

    func reached(_ point: CrashPoint) {
        guard point == armed else { return }
        guard hits.add(1, ordering: .relaxed).newValue >= after else { return }
        FileHandle.standardError.write(Data("dtc-node: crash point \(point.rawValue) reached, exiting\n".utf8))
        _exit(99)
    }
}
