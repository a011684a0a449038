/// What a participant keeps durably besides its own state: the writes a prepared branch will
/// apply, and the ledger of how each txn ended there. Domain-free: keys are strings and values
/// opaque bytes that only the participant's own logic reads.

/// One key's new value, applied at COMMIT; `nil` deletes the key.
public struct Write: Hashable, Sendable {
    public var key: String
    public var value: [UInt8]?

    public init(key: String, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// Why a branch cannot be prepared (the reason in a NO vote).
public struct PlanRefusal: Error, Hashable, Sendable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation, CustomStringConvertible {
    public var reason: String
    public init(stringLiteral value: String) { reason = value }
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// An RM's durable record of how a txn ended there: the ledger the checker compares across
/// RMs. `epoch` decided it; `seenEpoch` is the highest epoch the RM had seen for the txn
/// before (a decision with `epoch < seenEpoch` came from a fenced leader: invariant 2 at the
/// participant); `applications` counts how many times a decision was written for the txn
/// (more than one means an effect was applied twice: invariant 5); `participants` are every
/// participant of the txn as its PREPARE named them (empty for a tombstone), so a checker can
/// tell from the ledgers alone that every branch of a committed txn committed (invariant 1).
///
/// `attempt` is the attempt committed or, for an abort, the last attempt rolled back
/// (`Attempt.max` for the txn's final ABORT). A rollback of one attempt is followed by the next
/// attempt's entry, which replaces it: `applications` counts decisions of the entry's attempt.
///
/// `sequence` is the entry's place in the order in which this participant applied decisions
/// (strictly increasing per participant, across restarts; 0 = unknown: an entry of format 2, or
/// of a participant that keeps no order, such as dtc-pg). `keys` are the keys the txn locked
/// here (a commit's; empty for aborts and tombstones). Together they give, per key, the order in
/// which committed txns held its lock: the precedence graph that proves the committed txns
/// serializable (`Serializability`).
public struct LedgerEntry: Hashable, Sendable {
    public var outcome: Outcome
    public var attempt: Attempt
    public var epoch: Epoch
    public var seenEpoch: Epoch
    public var applications: UInt32
    public var participants: [String]
    public var sequence: UInt64
    public var keys: [String]

    /// The first byte of every entry. Version 3 added the attempt, the sequence and the keys;
    /// version 2 is read as the first attempt's commit or a final abort, with sequence 0 and no
    /// keys; any other is refused. (Version 1, 0x4c, had no participants.)
    public static let formatVersion: UInt8 = 3

    public init(
        outcome: Outcome, attempt: Attempt? = nil, epoch: Epoch, seenEpoch: Epoch = .zero, applications: UInt32 = 1,
        participants: [String] = [], sequence: UInt64 = 0, keys: [String] = []
    ) {
        self.outcome = outcome
        self.attempt = attempt ?? (outcome == .commit ? 0 : .max)
        self.epoch = epoch
        self.seenEpoch = seenEpoch
        self.applications = applications
        self.participants = participants
        self.sequence = sequence
        self.keys = keys
    }

    public var isFromStaleEpoch: Bool { epoch < seenEpoch }

    /// Whether this entry ends the txn here: a commit, or the final ABORT. A rolled-back attempt
    /// is followed by the next one.
    public var isFinal: Bool { outcome == .commit || attempt == .max }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.formatVersion)
        writer.write(outcome == .commit ? UInt8(1) : UInt8(2))
        writer.write(attempt)
        writer.write(epoch)
        writer.write(seenEpoch)
        writer.write(applications)
        writer.write(strings: participants)
        writer.write(sequence)
        writer.write(strings: keys)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        let version = try reader.readVersion(accepting: 2...Self.formatVersion)
        switch try reader.readByte() {
        case 1: outcome = .commit
        case 2: outcome = .abort
        case let other: throw .badTag(other, at: 1)
        }
        attempt = version >= 3 ? try reader.readUInt32() : (outcome == .commit ? 0 : .max)
        epoch = try reader.readEpoch()
        seenEpoch = try reader.readEpoch()
        applications = try reader.readUInt32()
        participants = try reader.readStrings()
        sequence = version >= 3 ? try reader.readUInt64() : 0
        keys = version >= 3 ? try reader.readStrings() : []
        guard reader.isAtEnd else { throw .trailingBytes(at: reader.offset) }
    }
}
