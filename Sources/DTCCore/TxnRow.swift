/// Everything a partition's log knows about one txn: its START, its decision and whether it
/// ENDed. A node stores one row per txn of each partition it leads or replicates; records
/// from the leader, and rows from other members during a takeover, merge into it. Per txn the
/// decision with the highest epoch wins (DESIGN.md, "Failover").
public struct TxnRow: Hashable, Sendable {
    public struct Decided: Hashable, Sendable {
        public var outcome: Outcome
        public var reason: AbortReason
        public var epoch: Epoch
    }

    public var txnID: TxnID
    public var stamp: StartStamp = 0
    public var branches: [Branch] = []
    public var decision: Decided?
    public var isEnded = false

    public init(txnID: TxnID) {
        self.txnID = txnID
    }

    public mutating func apply(_ record: LogRecord) {
        precondition(record.txnID == txnID, "record of \(record.txnID) applied to the row of \(txnID)")
        switch record {
        case .start(_, _, let stamp, let branches):
            if self.branches.isEmpty {
                self.stamp = stamp
                self.branches = branches
            }
        case .decision(_, let outcome, let reason, let epoch):
            adopt(Decided(outcome: outcome, reason: reason, epoch: epoch))
        case .end:
            isEnded = true
        case .trim:
            preconditionFailure("TRIM of \(txnID) applied to its row; a TRIM deletes the row")
        }
    }

    public mutating func merge(_ other: TxnRow) {
        precondition(other.txnID == txnID, "row of \(other.txnID) merged into the row of \(txnID)")
        if branches.isEmpty {
            stamp = other.stamp
            branches = other.branches
        }
        if let decided = other.decision { adopt(decided) }
        isEnded = isEnded || other.isEnded
    }

    /// One leader decides a txn at most once per epoch, so two decisions at the same epoch
    /// must agree; a higher epoch's decision replaces a lower one.
    private mutating func adopt(_ decided: Decided) {
        guard let current = decision else {
            decision = decided
            return
        }
        if decided.epoch > current.epoch {
            decision = decided
        } else if decided.epoch == current.epoch {
            precondition(decided.outcome == current.outcome, "\(txnID): two decisions at epoch \(decided.epoch)")
        }
    }

    /// The records that rebuild this row, in order.
    public var records: [LogRecord] {
        var records: [LogRecord] = []
        if !branches.isEmpty { records.append(.start(txnID: txnID, epoch: decision?.epoch ?? .zero, stamp: stamp, branches: branches)) }
        if let decision { records.append(.decision(txnID: txnID, outcome: decision.outcome, reason: decision.reason, epoch: decision.epoch)) }
        if isEnded { records.append(.end(txnID: txnID)) }
        return records
    }

    /// The first byte of every stored row. Version 2 made branches opaque; rows of version 1
    /// (dtc before format versions, which began with the txn ID's length) are refused.
    public static let formatVersion: UInt8 = 2

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.formatVersion)
        writer.write(txnID.rawValue)
        writer.write(stamp)
        writer.write(UInt32(branches.count))
        for branch in branches { writer.write(branch) }
        writer.write(decision != nil)
        if let decision {
            writer.write(decision.outcome == .commit)
            writer.write(decision.reason)
            writer.write(decision.epoch)
        }
        writer.write(isEnded)
        return writer.bytes
    }

    /// Whether an encoded row holds its txn's END, read without decoding it: `encoded()`
    /// writes the END flag last.
    public static func isEnded(encoded bytes: [UInt8]) -> Bool {
        bytes.first == formatVersion && bytes.last == 1
    }

    /// `record` applied to an encoded row, without decoding it, for the two records that
    /// follow a START on every member: an END (the last byte) and the first decision (spliced
    /// in before it). A row that holds its END already is returned as it is for either (a
    /// catch-up carries the decision and END of every txn still to be trimmed). Nil for
    /// anything else (a decision over another, a START, a row that does not parse): the caller
    /// decodes, applies and encodes. Equal to that, byte for byte.
    public static func applying(_ record: LogRecord, toEncoded bytes: [UInt8]) -> [UInt8]? {
        guard bytes.first == formatVersion, bytes.count >= 2, bytes[bytes.count - 1] <= 1 else { return nil }
        switch record {
        case .end where isEnded(encoded: bytes), .decision where isEnded(encoded: bytes):
            return bytes
        case .end:
            var ended = bytes
            ended[ended.count - 1] = 1
            return ended
        case .decision(_, let outcome, let reason, let epoch):
            guard let flag = decisionFlagOffset(bytes), flag == bytes.count - 2, bytes[flag] == 0 else { return nil }
            var writer = ByteWriter()
            writer.write(true)
            writer.write(outcome == .commit)
            writer.write(reason)
            writer.write(epoch)
            writer.write(false)  // not ENDed (checked above)
            return Array(bytes[..<flag]) + writer.bytes
        case .start, .trim:
            return nil
        }
    }

    /// Where `encoded()` put the decision flag: after the version, txnID, stamp and branches,
    /// found by skipping their lengths. Nil if the bytes do not parse that far.
    private static func decisionFlagOffset(_ bytes: [UInt8]) -> Int? {
        var reader = ByteReader(bytes)
        do {
            try reader.expectVersion(formatVersion)
            try reader.skipSized()  // txnID
            _ = try reader.readUInt64()  // stamp
            for _ in 0..<(try reader.readUInt32()) {
                for _ in 0..<3 { try reader.skipSized() }  // participant, kind, payload
            }
        } catch {
            return nil
        }
        return reader.isAtEnd ? nil : reader.offset
    }

    public init(decoding bytes: [UInt8]) throws(RecordDecodingError) {
        var reader = ByteReader(bytes)
        try reader.expectVersion(Self.formatVersion)
        txnID = TxnID(try reader.readString())
        stamp = try reader.readUInt64()
        for _ in 0..<(try reader.readUInt32()) { branches.append(try reader.readBranch()) }
        if try reader.readBool() {
            let outcome: Outcome = try reader.readBool() ? .commit : .abort
            decision = Decided(outcome: outcome, reason: try reader.readAbortReason(), epoch: try reader.readEpoch())
        }
        isEnded = try reader.readBool()
        // Bytes after the END flag are damage, not a longer row: the fast path on stored
        // bytes (`applying`) takes the last byte for the flag, so both must refuse them.
        guard reader.isAtEnd else { throw .trailingBytes(at: reader.offset) }
    }
}

/// Merges the rows that several members returned for one partition.
public func mergeRows(_ rows: [TxnRow]) -> [TxnRow] {
    var merged: [TxnID: TxnRow] = [:]
    for row in rows {
        if merged[row.txnID] == nil { merged[row.txnID] = row } else { merged[row.txnID]!.merge(row) }
    }
    return merged.values.sorted { $0.txnID < $1.txnID }
}
