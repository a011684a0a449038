/// Deliberate bugs that the simulator's mutant tests switch on, to prove that its checkers
/// catch each kind of mistake. Only code in this package can set one (`package` access);
/// dtc-node and dtc-rm never do.
package enum Mutant: String, Sendable, CaseIterable {
    /// The coordinator sends COMMIT before its decision record is durable.
    case commitBeforeDurable
    /// An RM votes YES before its prepared state is durable.
    case yesBeforeDurable
    /// An RM accepts decisions from any epoch.
    case ignoreEpochs
    /// A new leader aborts a txn whose COMMIT a quorum holds.
    case takeoverAbortsCommitted
    /// A follower that refused an append keeps acknowledging the rest of the leader's stream,
    /// so its acks claim records it never stored.
    case followerKeepsSessionAfterRefusal
    /// An RM applies a repeated COMMIT again.
    case applyDuplicateCommit
    /// A participant that restarts does not re-take the locks of its prepared txns, so another
    /// txn can plan against state a prepared txn is about to change.
    case skipRelockOnRecovery
    /// A leader releases what waited for the quorum (decisions, outcomes) once its own copy
    /// is durable, without waiting for any follower.
    case releaseOnLocalSync
    /// A follower acknowledges appends as they arrive, before they are durable.
    case followerAcksBeforeDurable
    /// A coordinator retries a txn's PREPARE under a fresh start stamp, so a retried txn never
    /// ages and wait-die can starve it.
    case retryWithFreshStamp
    /// A coordinator retries a txn's PREPARE under the attempt number it just rolled back.
    case retryReusesAttempt
    /// A participant applies the rollback of an attempt to a later attempt it holds.
    case rollbackAnyAttempt
}
