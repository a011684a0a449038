/// Every bound dtc enforces, in one place (STYLE.md §8). At a limit the answer is an explicit
/// rejection, never an unbounded queue.
public struct Limits: Sendable, Equatable {
    public var txnIDBytesMax = 128
    public var branchesPerTxnMax = 16
    /// A branch's opaque payload; cluster.json's `limits.payloadBytesMax` sets it.
    public var payloadBytesMax = 65_536
    public var kindBytesMax = 64
    public var inFlightTxnsMax = 20_000
    public var finishedTxnsRetainedMax = 1_000_000
    /// Finished txns a participant keeps in memory to answer repeats at once; older ones are
    /// looked up in its durable ledger, so its memory stays bounded however long it runs.
    public var finishedTxnsCachedMax = 10_000
    /// Keys (locks) one branch may take at a participant.
    public var keysPerBranchMax = 1_024
    /// Ticks (milliseconds) a txn may wait for all votes; no vote in time counts as NO.
    public var prepareTimeout: UInt64 = 2_000
    /// First retry of an unacknowledged COMMIT/ROLLBACK; doubles up to `decisionRetryMax`.
    public var decisionRetryInitial: UInt64 = 100
    public var decisionRetryMax: UInt64 = 2_000
    /// How long an RM waits for a lock before it votes NO.
    public var lockWaitTimeout: UInt64 = 500
    /// Attempts a txn gets when participants refuse it for contention (wait-die, a lock wait
    /// timeout): each further attempt keeps the txn's start stamp. 1 turns retries off.
    public var attemptsMax: UInt32 = 20
    /// Ticks from a txn's submit after which no further attempt starts.
    public var retryWindow: UInt64 = 3_000
    /// Pause before a further attempt: doubles per attempt up to `retryBackoffMax`.
    public var retryBackoffInitial: UInt64 = 2
    public var retryBackoffMax: UInt64 = 200

    public init() {}

    public static let standard = Limits()

    /// Checks the limits against each other at start-up.
    public func validated() throws(ValidationError) -> Limits {
        guard txnIDBytesMax > 0, branchesPerTxnMax > 0, inFlightTxnsMax > 0, payloadBytesMax > 0, kindBytesMax > 0,
            finishedTxnsCachedMax > 0, keysPerBranchMax > 0
        else {
            throw .invalid(field: "limits", reason: "must be positive")
        }
        guard decisionRetryInitial > 0, decisionRetryInitial <= decisionRetryMax else {
            throw .invalid(field: "limits.decisionRetry", reason: "initial must be in 1...max")
        }
        guard attemptsMax >= 1, attemptsMax <= 1_000 else {
            throw .invalid(field: "retries.attemptsMax", reason: "must be in 1...1000 (1: no retries)")
        }
        guard retryBackoffInitial > 0, retryBackoffInitial <= retryBackoffMax else {
            throw .invalid(field: "retries.backoffInitialMs", reason: "must be in 1...backoffMaxMs")
        }
        return self
    }
}
