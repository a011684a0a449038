import DTCCore
import DTCRuntime
import DTCWire
import GRPCCore
import Synchronization

/// What comes back from an RM, delivered to the node runtime in batches.
protocol RMReplyHandler: Sendable {
    func votesReceived(_ votes: [VoteReply], from rm: String) async
    func acksReceived(_ acks: [AckReply], from rm: String) async
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
    /// What waits to go out on the current stream. A stream that is given up gets no more:
    /// its queue is closed and what it held moves to a fresh one for the next stream.
    private let outgoing = Mutex(BatchQueue<Outgoing>())
    /// Since when something sent has had no answer at all (nil: nothing outstanding).
    private let unansweredSince = Mutex<ContinuousClock.Instant?>(nil)
    /// How long a stream may leave what was sent unanswered before it is given up.
    let silenceMax: Duration

    init(rm: String, address: String, connections: Connections, silenceMax: Duration = .seconds(3)) {
        self.rm = rm
        self.address = address
        self.connections = connections
        self.silenceMax = silenceMax
    }

    func send(_ prepares: [PrepareMessage], _ decisions: [DecisionMessage]) {
        let items = prepares.map(Outgoing.prepare) + decisions.map(Outgoing.decision)
        guard !items.isEmpty else { return }
        unansweredSince.withLock { $0 = $0 ?? .now }
        outgoing.withLock { $0.append(contentsOf: items) }
    }

    /// Keeps a stream open to the RM for as long as the task runs, reconnecting with capped
    /// backoff after a failure.
    func run(replies: any RMReplyHandler) async {
        var backoff = Duration.milliseconds(20)
        while !Task.isCancelled {
            let opened = ContinuousClock.now
            let failure = await watched(replies)
            await failUnanswered(failure, replies)
            // A stream that served for a while broke by chance: reconnect quickly again.
            if ContinuousClock.now - opened > .seconds(1) { backoff = .milliseconds(20) }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(1))
        }
    }

    /// Runs one stream until it breaks, or gives it up when what was sent on it has had no
    /// answer for `silenceMax`. A stream can stay open and carry nothing, in neither direction
    /// (a chaos run wedged one after the RM's side of it failed: its write never returned and
    /// no error ever came); giving it up means not waiting for it at all, since a write that
    /// never returns also never sees a cancellation. Returns why the stream ended.
    private func watched(_ replies: any RMReplyHandler) async -> String {
        let queue = outgoing.withLock { $0 }
        // What is outstanding waits for this stream's answer from now on.
        unansweredSince.withLock { $0 = $0.map { _ in .now } }
        let result = Mutex<String?>(nil)
        let stream = Task {
            let failure = await self.exchange(replies, from: queue)
            result.withLock { $0 = failure }
        }
        while true {
            if let failure = result.withLock({ $0 }) { return failure }
            if let since = unansweredSince.withLock({ $0 }), ContinuousClock.now - since > silenceMax {
                stream.cancel()
                abandon(queue)
                unansweredSince.withLock { $0 = nil }
                return "no answer from \(rm) for \(silenceMax) on an open stream"
            }
            try? await Task.sleep(for: .milliseconds(50))
            if Task.isCancelled {
                stream.cancel()
                return "link stopped"
            }
        }
    }

    /// Closes the given-up stream's queue and moves what it still held to a fresh one.
    private func abandon(_ queue: BatchQueue<Outgoing>) {
        outgoing.withLock { current in
            guard current === queue else { return }
            let fresh = BatchQueue<Outgoing>()
            fresh.append(contentsOf: queue.removeAll { _ in true })
            queue.close()
            current = fresh
        }
    }

    /// One stream, until it breaks; returns why.
    private func exchange(_ replies: any RMReplyHandler, from queue: BatchQueue<Outgoing>) async -> String {
        var options = CallOptions.defaults
        options.waitForReady = false
        do {
            try await connections.resourceManager(address).exchange(options: options) { writer in
                while let batch = await queue.next() {
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
        unansweredSince.withLock { $0 = nil }
        if !message.votes.isEmpty {
            await replies.votesReceived(message.votes.map(VoteReply.init(wire:)), from: rm)
        }
        if !message.acks.isEmpty {
            await replies.acksReceived(message.acks.map(AckReply.init(wire:)), from: rm)
        }
    }

    /// Every PREPARE in flight or queued when the stream broke is answered NO (the node's
    /// machine knows which it sent); the queued ones are not sent later.
    private func failUnanswered(_ reason: String, _ replies: any RMReplyHandler) async {
        _ = outgoing.withLock { $0.removeAll { if case .prepare = $0 { true } else { false } } }
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
