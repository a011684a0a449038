import DTCCore
import DTCRuntime
import DTCWire
import GRPCCore
import Synchronization

/// What comes back from an RM, delivered to the node runtime in batches.
protocol RMReplyHandler: Sendable {
    func votesReceived(_ votes: [(TxnID, Vote)], from rm: String) async
    func acksReceived(_ acks: [(TxnID, accepted: Bool, reason: String)], from rm: String) async
    /// The stream broke: every PREPARE sent on it and not answered counts as NO.
    func streamBroken(to rm: String, reason: String) async
}

/// The node's link to one RM: one long-lived bidirectional stream. PREPAREs and decisions
/// queue up and go out many per message, and votes and acks come back as the RM has them, so
/// a PREPARE waiting for a lock holds up nobody else. Unary gRPC would cost far more CPU per
/// txn. If the stream breaks, every PREPARE not yet answered counts as NO (the RM may have
/// prepared it: the abort's ROLLBACK will reach it); decisions are resent by the coordinator's
/// retry timer, so none is lost.
final class RMLink: Sendable {
    enum Outgoing: Sendable {
        case prepare(PrepareMessage)
        case decision(DecisionMessage)
    }

    let rm: String
    private let address: String
    private let connections: Connections
    private let outgoing = BatchQueue<Outgoing>()

    init(rm: String, address: String, connections: Connections) {
        self.rm = rm
        self.address = address
        self.connections = connections
    }

    func send(_ prepares: [PrepareMessage], _ decisions: [DecisionMessage]) {
        outgoing.append(contentsOf: prepares.map(Outgoing.prepare) + decisions.map(Outgoing.decision))
    }

    /// Keeps a stream open to the RM for as long as the task runs, reconnecting with capped
    /// backoff after a failure.
    func run(replies: any RMReplyHandler) async {
        var backoff = Duration.milliseconds(20)
        while !Task.isCancelled {
            let opened = ContinuousClock.now
            let failure = await exchange(replies)
            await failUnanswered(failure, replies)
            // A stream that served for a while broke by chance: reconnect quickly again.
            if ContinuousClock.now - opened > .seconds(1) { backoff = .milliseconds(20) }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    /// One stream, until it breaks; returns why.
    private func exchange(_ replies: any RMReplyHandler) async -> String {
        var options = CallOptions.defaults
        options.waitForReady = false
        do {
            try await connections.resourceManager(address).exchange(options: options) { writer in
                while let batch = await self.outgoing.next() {
                    for request in Self.requests(batch) {
                        try await writer.write(request)
                        if !request.prepares.isEmpty { CrashPoints.shared.reached(.afterPreparesSent) }
                        if request.decisions.contains(where: \.commit) { CrashPoints.shared.reached(.midwayCommits) }
                    }
                }
            } onResponse: { response in
                for try await message in response.messages {
                    await self.deliver(message, replies)
                }
            }
            return "stream to \(rm) closed"
        } catch {
            return "\(rm) unreachable: \(shortDescription(of: error))"
        }
    }

    private func deliver(_ message: Dtc_V1_RMResponse, _ replies: any RMReplyHandler) async {
        if !message.votes.isEmpty {
            let votes = message.votes.map { (TxnID($0.txnID), Vote(wire: $0)) }
            await replies.votesReceived(votes, from: rm)
        }
        if !message.acks.isEmpty {
            await replies.acksReceived(message.acks.map { (TxnID($0.txnID), $0.accepted, $0.reason) }, from: rm)
        }
    }

    /// Every PREPARE in flight or queued when the stream broke is answered NO (the node's
    /// machine knows which it sent); the queued ones are not sent later.
    private func failUnanswered(_ reason: String, _ replies: any RMReplyHandler) async {
        _ = outgoing.removeAll { if case .prepare = $0 { true } else { false } }
        await replies.streamBroken(to: rm, reason: reason)
    }

    /// A message carries at most about this many bytes of payload: participants accept 16 MiB
    /// messages, and a backlog of PREPAREs with 64 KiB payloads must not exceed that.
    static let requestPayloadBytesMax = 4 << 20

    /// The batch in order, as few messages as the size bound allows.
    static func requests(_ batch: [Outgoing]) -> [Dtc_V1_RMRequest] {
        var requests: [Dtc_V1_RMRequest] = []
        var request = Dtc_V1_RMRequest()
        var bytes = 0
        for item in batch {
            let size: Int
            switch item {
            case .prepare(let message): size = message.branch.payload.count + 256
            case .decision: size = 128
            }
            if bytes + size > requestPayloadBytesMax, bytes > 0 {
                requests.append(request)
                (request, bytes) = (Dtc_V1_RMRequest(), 0)
            }
            bytes += size
            switch item {
            case .prepare(let message): request.prepares.append(message.wire)
            case .decision(let message): request.decisions.append(message.wire)
            }
        }
        if bytes > 0 { requests.append(request) }
        return requests
    }
}
