import DTCCore
import DTCRuntime
import DTCWire
import GRPCCore
import Synchronization

/// What a follower's acknowledgements tell the leader.
protocol PeerReplyHandler: Sendable {
    func appendAcksReceived(_ acks: Dtc_V1_AppendAcks, from peer: String) async
}

/// A leader's stream of replication messages to one follower. Messages queue up and go out in
/// order; acks come back on the same stream. The link knows nothing of sessions: if the stream
/// breaks it reconnects and goes on with what is queued, and the follower, seeing a gap,
/// asks the leader's machine for a new session. `restart` drops the stream and the queue when
/// the machine opens a new session itself (a silent follower).
final class PeerLink: Sendable {
    let peer: String
    private let address: String
    private let connections: Connections
    private let outgoing = BatchQueue<Dtc_V1_AppendBatch>()
    private let current = Mutex<Task<Void, Never>?>(nil)
    /// Set by `restart`: the stream was ended on purpose, so the next one opens at once
    /// (a backoff here would hold up the catch-up the machine just queued).
    private let restarted = Mutex(false)

    init(peer: String, address: String, connections: Connections) {
        self.peer = peer
        self.address = address
        self.connections = connections
    }

    func send(_ batch: Dtc_V1_AppendBatch) {
        outgoing.append(contentsOf: [batch])
    }

    func run(replies: any PeerReplyHandler) async {
        var backoff = Duration.milliseconds(20)
        while !Task.isCancelled {
            let opened = ContinuousClock.now
            let stream = Task { await self.exchange(replies) }
            current.withLock { $0 = stream }
            await withTaskCancellationHandler { await stream.value } onCancel: { stream.cancel() }
            // A stream that served for a while broke by chance: reconnect quickly again.
            if ContinuousClock.now - opened > .seconds(1) { backoff = .milliseconds(20) }
            if restarted.withLock({ was in defer { was = false }; return was }) { continue }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .milliseconds(500))
        }
    }

    /// Drops the current stream and everything queued: the message the machine sends next (a
    /// new session's catch-up) goes first on a fresh stream.
    func restart() {
        _ = outgoing.removeAll { _ in true }
        restarted.withLock { $0 = true }
        current.withLock { $0?.cancel() }
    }

    private func exchange(_ replies: any PeerReplyHandler) async {
        var options = CallOptions.defaults
        options.waitForReady = false
        options.allowPeerSizedMessages()
        _ = try? await connections.replica(address).replicate(options: options) { writer in
            while let batches = await self.outgoing.next() {
                try await writer.write(contentsOf: batches)
            }
        } onResponse: { response in
            for try await message in response.messages {
                await replies.appendAcksReceived(message, from: self.peer)
            }
        }
    }
}
