/// One participant's part of a txn: the participant's name (an RM in cluster.json), a short
/// `kind` for humans and metrics, and an opaque payload that only that participant reads. The
/// coordinator checks names, duplicates and sizes, logs the payload and relays it in PREPARE;
/// it never decodes it.
public struct Branch: Hashable, Sendable {
    public var rm: String
    public var kind: String
    public var payload: [UInt8]

    public init(rm: String, kind: String, payload: [UInt8]) {
        self.rm = rm
        self.kind = kind
        self.payload = payload
    }

    /// Rejects an empty or oversize kind or payload; the error names the field and the limit.
    public func validate(limits: Limits, field: String) throws(ValidationError) {
        guard !kind.isEmpty else { throw .invalid(field: "\(field).kind", reason: "is empty") }
        guard kind.utf8.count <= limits.kindBytesMax else {
            throw .invalid(field: "\(field).kind", reason: "is \(kind.utf8.count) bytes, over the limit of \(limits.kindBytesMax)")
        }
        guard !payload.isEmpty else { throw .invalid(field: "\(field).payload", reason: "is empty") }
        guard payload.count <= limits.payloadBytesMax else {
            throw .invalid(field: "\(field).payload", reason: "is \(payload.count) bytes, over the limit of \(limits.payloadBytesMax)")
        }
    }
}

/// Validates a whole submission: ID, branch count, duplicates, each participant name, kind and
/// payload. `participants` are the RM names in the cluster config.
public func validateSubmission(
    txnID: String, branches: [Branch], participants: Set<String>, limits: Limits
) throws(ValidationError) -> TxnID {
    let id = try TxnID(validating: txnID, limits: limits)
    guard !branches.isEmpty else { throw .invalid(field: "branches", reason: "is empty") }
    guard branches.count <= limits.branchesPerTxnMax else {
        throw .invalid(field: "branches", reason: "has \(branches.count) entries, over \(limits.branchesPerTxnMax)")
    }
    var seen = Set<String>()
    for (index, branch) in branches.enumerated() {
        let field = "branches[\(index)]"
        guard participants.contains(branch.rm) else {
            throw .invalid(field: "\(field).rm", reason: "names unknown participant '\(branch.rm)' (known: \(participants.sorted().joined(separator: ", ")))")
        }
        guard seen.insert(branch.rm).inserted else {
            throw .invalid(field: "\(field).rm", reason: "duplicates the branch for participant '\(branch.rm)'")
        }
        try branch.validate(limits: limits, field: field)
    }
    return id
}

/// A digest of a txn's branches (FNV-1a, 64 bits, over their encoding), kept with the txn so a
/// txn ID submitted again with other branches is refused instead of answered as if it ran.
/// It guards against a client's mistake, not an adversary.
public func branchesDigest(_ branches: [Branch]) -> UInt64 {
    var writer = ByteWriter()
    for branch in branches { writer.write(branch) }
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in writer.bytes {
        hash ^= UInt64(byte)
        hash &*= 0x0000_0100_0000_01b3
    }
    return hash
}
