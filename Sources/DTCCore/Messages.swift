/// What a coordinator and an RM say to each other, and what the coordinator logs.

/// The partition, its epoch and its leader: every message to an RM carries it (fencing).
public struct Sender: Hashable, Sendable {
    public var partition: UInt32
    public var epoch: Epoch
    public var node: String

    public init(partition: UInt32, epoch: Epoch, node: String) {
        self.partition = partition
        self.epoch = epoch
        self.node = node
    }
}

/// A txn's attempt at its participants, 0 for the first. A PREPARE that some participant
/// refused for contention (wait-die, a lock wait timeout) is rolled back everywhere and sent
/// again as the next attempt, with the txn's original start stamp, so a retried txn ages and
/// wait-die cannot starve it. A participant refuses a PREPARE of an attempt older than one it
/// has seen, and a rollback of an attempt never touches a later one.
public typealias Attempt = UInt32

public struct PrepareMessage: Hashable, Sendable {
    public var txnID: TxnID
    public var stamp: StartStamp
    public var attempt: Attempt
    public var sender: Sender
    public var branch: Branch
    /// Every participant of the txn (this one included): a participant's ledger keeps them, so
    /// a checker can tell from the ledgers alone whether every branch of a committed txn
    /// committed.
    public var participants: [String]

    public init(txnID: TxnID, stamp: StartStamp, attempt: Attempt = 0, sender: Sender, branch: Branch, participants: [String]) {
        self.txnID = txnID
        self.stamp = stamp
        self.attempt = attempt
        self.sender = sender
        self.branch = branch
        self.participants = participants
    }
}

public enum Outcome: String, Hashable, Sendable {
    case commit
    case abort
}

/// The txn's decision (`rolledBackAttempt` nil): COMMIT applies to the attempt the participant
/// holds prepared, ABORT to every attempt. Or the rollback of one attempt before the next
/// (`rolledBackAttempt` set, outcome ABORT): it rolls back that attempt or an earlier one the
/// participant holds, never a later one, and is not the txn's end. A coordinator prepares the
/// next attempt only once every participant acknowledged the rollback, so a participant never
/// holds two attempts of a txn and a COMMIT needs no attempt number.
public struct DecisionMessage: Hashable, Sendable {
    public var txnID: TxnID
    public var outcome: Outcome
    public var sender: Sender
    public var rolledBackAttempt: Attempt?

    public init(txnID: TxnID, outcome: Outcome, sender: Sender, rolledBackAttempt: Attempt? = nil) {
        precondition(rolledBackAttempt == nil || outcome == .abort, "only an ABORT rolls back one attempt")
        self.txnID = txnID
        self.outcome = outcome
        self.sender = sender
        self.rolledBackAttempt = rolledBackAttempt
    }

    public var isFinal: Bool { rolledBackAttempt == nil }
}

public enum Vote: Hashable, Sendable {
    case yes
    case no(reason: AbortReason)
}

/// Why a txn aborted, so a client can tell a conflict worth retrying from a refusal.
public enum AbortCause: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Not aborted (the reason of a COMMIT decision).
    case none = 0
    /// A participant voted NO for a business reason, or could not read its payload.
    case refused = 1
    /// A lock conflict at a participant (wait-die, lock wait timeout): a retry may succeed.
    case contention = 2
    /// No vote within the prepare timeout.
    case timeout = 3
    /// A participant could not be reached.
    case unavailable = 4
    /// The partition's leader changed before it decided (presumed abort).
    case leaderChanged = 5
    /// A participant asked about a txn its partition never heard of (presumed abort).
    case unknownTxn = 6

    public var description: String {
        switch self {
        case .none: "none"
        case .refused: "refused"
        case .contention: "contention"
        case .timeout: "timeout"
        case .unavailable: "unavailable"
        case .leaderChanged: "leader-changed"
        case .unknownTxn: "unknown-txn"
        }
    }
}

/// A cause and the text that explains it (which participant said what).
public struct AbortReason: Hashable, Sendable, CustomStringConvertible {
    public var cause: AbortCause
    public var text: String

    public init(_ cause: AbortCause, _ text: String) {
        self.cause = cause
        self.text = text
    }

    public static let none = AbortReason(.none, "")

    public var description: String { text }
}

/// A message from a coordinator to one RM.
public enum Envelope: Hashable, Sendable {
    case prepare(rm: String, PrepareMessage)
    case decision(rm: String, DecisionMessage)

    public var rm: String {
        switch self {
        case .prepare(let rm, _), .decision(let rm, _): rm
        }
    }
}

/// A txn's state as a client sees it.
public enum TxnStatus: Hashable, Sendable {
    case preparing
    case committed
    case aborted(reason: AbortReason)
}

/// An answer that becomes true once its records are durable.
public struct ClientReply: Hashable, Sendable {
    public var txnID: TxnID
    public var status: TxnStatus
    /// Attempts the coordinator made (1: prepared once); 0 where it does not know (a txn
    /// finished before a takeover, or never started).
    public var attempts: Attempt

    public init(txnID: TxnID, status: TxnStatus, attempts: Attempt = 0) {
        self.txnID = txnID
        self.status = status
        self.attempts = attempts
    }
}

/// A record of a partition's log. START is appended lazily, a DECISION is forced before anyone
/// learns it, END is lazy (presumed abort: a txn with no COMMIT is aborted). TRIM removes an
/// ENDed txn's row: the leader appends it once every member of the replica group holds the
/// END (and the retention period has passed), so no member keeps an older row of the txn that
/// a later takeover could mistake for the truth.
public enum LogRecord: Hashable, Sendable {
    case start(txnID: TxnID, epoch: Epoch, stamp: StartStamp, branches: [Branch])
    case decision(txnID: TxnID, outcome: Outcome, reason: AbortReason, epoch: Epoch)
    case end(txnID: TxnID)
    case trim(txnID: TxnID)

    public var txnID: TxnID {
        switch self {
        case .start(let id, _, _, _), .decision(let id, _, _, _), .end(let id), .trim(let id): id
        }
    }

    /// The first byte of every encoded record. Version 2 made branches opaque (participant,
    /// kind, payload); a record of any other version is refused, never misread.
    public static let formatVersion: UInt8 = 2

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.formatVersion)
        switch self {
        case .start(let txnID, let epoch, let stamp, let branches):
            writer.write(UInt8(1)); writer.write(txnID.rawValue); writer.write(epoch); writer.write(stamp)
            writer.write(UInt32(branches.count))
            for branch in branches { writer.write(branch) }
        case .decision(let txnID, let outcome, let reason, let epoch):
            writer.write(UInt8(2)); writer.write(txnID.rawValue); writer.write(outcome == .commit)
            writer.write(reason); writer.write(epoch)
        case .end(let txnID):
            writer.write(UInt8(3)); writer.write(txnID.rawValue)
        case .trim(let txnID):
            writer.write(UInt8(4)); writer.write(txnID.rawValue)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        try reader.expectVersion(Self.formatVersion)
        switch try reader.readByte() {
        case 1:
            let id = TxnID(try reader.readString())
            let epoch = try reader.readEpoch()
            let stamp = try reader.readUInt64()
            let count = try reader.readUInt32()
            var branches: [Branch] = []
            for _ in 0..<count { branches.append(try reader.readBranch()) }
            self = .start(txnID: id, epoch: epoch, stamp: stamp, branches: branches)
        case 2:
            let id = TxnID(try reader.readString())
            let outcome: Outcome = try reader.readBool() ? .commit : .abort
            self = .decision(txnID: id, outcome: outcome, reason: try reader.readAbortReason(), epoch: try reader.readEpoch())
        case 3:
            self = .end(txnID: TxnID(try reader.readString()))
        case 4:
            self = .trim(txnID: TxnID(try reader.readString()))
        case let tag:
            throw .badTag(tag, at: 1)
        }
    }
}

/// A log record and the partition whose log it belongs to.
public struct PartitionRecord: Hashable, Sendable {
    public var partition: UInt32
    public var record: LogRecord

    public init(partition: UInt32, record: LogRecord) {
        self.partition = partition
        self.record = record
    }
}
