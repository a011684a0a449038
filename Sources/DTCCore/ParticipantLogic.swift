/// A participant's business rules, the one thing a participant's author writes: which keys a
/// branch locks, and what it writes, checked against committed state. Both are pure functions
/// of their inputs; everything else (locks, durability, fencing, idempotence, recovery) is the
/// participant machine's and its shell's.
public protocol ParticipantLogic: Sendable {
    /// The keys the branch reads or writes: its locks, held until the decision. An error (a
    /// payload that does not decode, a kind this participant does not run) votes NO with the
    /// error as the reason.
    func keys(for branch: Branch) throws -> [String]

    /// Checks the branch against the committed values of its keys (an absent key is missing
    /// from `committed`) and returns its writes, applied at COMMIT. Throw `PlanRefusal` to vote
    /// NO for a business reason; any other error votes NO as a participant error.
    func plan(_ branch: Branch, committed: [String: [UInt8]]) throws -> [Write]
}

extension ParticipantLogic {
    /// `keys(for:)` as a value: a thrown error becomes the NO vote's reason.
    public func lockKeys(for branch: Branch) -> Result<[String], PlanRefusal> {
        do {
            return .success(try keys(for: branch))
        } catch {
            return .failure(Self.refusal(error))
        }
    }

    /// `plan` as a value: a thrown error becomes the NO vote's reason.
    public func planned(_ branch: Branch, committed: [String: [UInt8]]) -> Result<[Write], PlanRefusal> {
        do {
            return .success(try plan(branch, committed: committed))
        } catch {
            return .failure(Self.refusal(error))
        }
    }

    private static func refusal(_ error: any Error) -> PlanRefusal {
        if let refusal = error as? PlanRefusal { return refusal }
        return PlanRefusal("participant error: \(error)")
    }
}
