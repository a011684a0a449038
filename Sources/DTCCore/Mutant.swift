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
    /// Recovery aborts a txn whose COMMIT was already durable.
    case abortDecidedOnRecovery
    /// An RM applies a repeated COMMIT again.
    case applyDuplicateCommit
}
