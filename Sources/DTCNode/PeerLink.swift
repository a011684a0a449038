import DTCClient
import DTCCore
import DTCWire
import GRPCCore
import Synchronization

/// What a follower's acknowledgements tell the leader.
protocol PeerReplyHandler: Sendable {
    func appendsAcked(_ acks: [Dtc_V1_AppendAck], from peer: String) async
    /// A new stream to `peer` is open: send it what it needs to catch up before new appends.
    func peerConnected(_ peer: String) async
}

/// A leader's stream of partition records to one follower. Appends queue up and go out many
/// per message; acks come back once the follower has them durably. After a reconnect the
/// runtime first sends the follower every in-flight txn again (`peerConnected`), so that its
/// later acks cover everything still undecided.
final class PeerLink: Sendable {
    let peer: String
    private let address: String
    private let connections: Connections
    private let outgoing = BatchQueue<Dtc_V1_Append>()
    private let current = Mutex<Task<Void, Never>?>(nil)

    init(peer: String, address: String, connections: Connections) {
        self.peer = peer
        self.address = address
        self.connections = connections
    }

    func send(_ appends: [Dtc_V1_Append]) {
        outgoing.append(contentsOf: appends)
    }

    /// Drops what is queued: a catch-up replaces it.
    func discardQueued() {
        _ = outgoing.removeAll { _ in true }
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
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .milliseconds(500))
        }
    }

    /// Drops the current stream: the next one starts with a catch-up. For a stream that stays
    /// open but brings no acks back (the runtime sees the follower fall behind and stay silent).
    func restart() {
        current.withLock { $0?.cancel() }
    }

    private func exchange(_ replies: any PeerReplyHandler) async {
        var options = CallOptions.defaults
        options.waitForReady = false
        _ = try? await connections.replica(address).replicate(options: options) { writer in
            await replies.peerConnected(self.peer)
            while let batch = await self.outgoing.next() {
                try await writer.write(.with { $0.appends = batch })
            }
        } onResponse: { response in
            for try await message in response.messages {
                await replies.appendsAcked(message.acks, from: self.peer)
            }
        }
    }
}
