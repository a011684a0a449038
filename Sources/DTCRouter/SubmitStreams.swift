import DTCRuntime
import DTCWire
import GRPCCore
import Synchronization

/// One long-lived SubmitStream per node, shared by all of a router's submits: many txns per
/// message each way instead of an HTTP/2 stream per txn. A submit waits for its numbered answer
/// until its deadline; when a stream fails, every submit waiting on it fails as retriable
/// (UNAVAILABLE) and the next submit to that node opens a new stream. What the router does with
/// an answer or an error is the same as for a unary Submit.
final class SubmitStreams: Sendable {
    private let connections: Connections
    private let streams = Mutex<[String: SubmitStream]>([:])
    private let nextID = Atomic<UInt64>(0)

    init(connections: Connections) {
        self.connections = connections
    }

    func submit(_ request: Dtc_V1_SubmitRequest, to address: String, timeout: Duration) async throws -> Dtc_V1_SubmitResponse {
        let stream = try self.stream(to: address)
        let id = nextID.add(1, ordering: .relaxed).newValue
        let answer = try await stream.send(.with { $0.id = id; $0.request = request }, deadline: .now + timeout)
        guard answer.errorCode == 0 else {
            throw RPCError(code: Status.Code(rawValue: Int(answer.errorCode)).flatMap { RPCError.Code($0) } ?? .unknown, message: answer.errorMessage)
        }
        return answer.response
    }

    /// Ends every stream once what was sent on it is answered: the request side closes, the
    /// node finishes the submits it has and ends the call.
    func finish() {
        for stream in streams.withLock({ Array($0.values) }) { stream.finishSending() }
    }

    private func stream(to address: String) throws -> SubmitStream {
        let client = try connections.coordinator(address)
        let (stream, isNew) = streams.withLock { streams -> (SubmitStream, Bool) in
            if let stream = streams[address] { return (stream, false) }
            let stream = SubmitStream(address: address)
            streams[address] = stream
            return (stream, true)
        }
        guard isNew else { return stream }
        Task {
            await stream.run(client)
            _ = self.streams.withLock { streams in
                if streams[address] === stream { streams[address] = nil }
            }
        }
        return stream
    }
}

/// One SubmitStream call and the submits waiting on it.
private final class SubmitStream: Sendable {
    private struct Waiting {
        var answer: CheckedContinuation<Dtc_V1_SubmitAnswer, any Error>
        var deadline: ContinuousClock.Instant
    }

    private struct State {
        var waiting: [UInt64: Waiting] = [:]
        var endedBecause: String?
    }

    let address: String
    private let outgoing = BatchQueue<Dtc_V1_NumberedSubmit>()
    private let state = Mutex(State())

    init(address: String) {
        self.address = address
    }

    func send(_ submit: Dtc_V1_NumberedSubmit, deadline: ContinuousClock.Instant) async throws -> Dtc_V1_SubmitAnswer {
        try await withCheckedThrowingContinuation { continuation in
            let ended = state.withLock { state -> String? in
                if let reason = state.endedBecause { return reason }
                state.waiting[submit.id] = Waiting(answer: continuation, deadline: deadline)
                return nil
            }
            if let ended {
                continuation.resume(throwing: RPCError(code: .unavailable, message: "submit stream to \(address) ended: \(ended)"))
            } else {
                outgoing.append(contentsOf: [submit])
            }
        }
    }

    /// Runs the call until it fails or ends, then fails whatever still waits.
    func run(_ client: Dtc_V1_Coordinator.Client<Transport>) async {
        let options = { var options = CallOptions.defaults; options.waitForReady = false; return options }()
        let reason: String
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.expireLate() }
                group.addTask {
                    try await client.submitStream(options: options) { writer in
                        while let batch = await self.outgoing.next() { try await writer.write(.with { $0.submits = batch }) }
                    } onResponse: { response in
                        for try await message in response.messages {
                            for answer in message.answers { self.answered(answer) }
                        }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
            reason = "closed by \(address)"
        } catch {
            reason = shortDescription(of: error)
        }
        end(because: reason)
    }

    func finishSending() {
        outgoing.close()
    }

    private func answered(_ answer: Dtc_V1_SubmitAnswer) {
        state.withLock { $0.waiting.removeValue(forKey: answer.id) }?.answer.resume(returning: answer)
    }

    /// A submit whose answer is late fails as a unary call past its deadline would.
    private func expireLate() async throws {
        while true {
            try await Task.sleep(for: .milliseconds(100))
            let now = ContinuousClock.now
            let late = state.withLock { state -> [Waiting] in
                let ids = state.waiting.filter { $0.value.deadline <= now }.map(\.key)
                return ids.compactMap { state.waiting.removeValue(forKey: $0) }
            }
            for waiting in late {
                waiting.answer.resume(throwing: RPCError(code: .deadlineExceeded, message: "no answer on the submit stream to \(address) in time"))
            }
        }
    }

    private func end(because reason: String) {
        outgoing.close()
        let waiting = state.withLock { state -> [Waiting] in
            state.endedBecause = reason
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for each in waiting {
            each.answer.resume(throwing: RPCError(code: .unavailable, message: "submit stream to \(address) ended: \(reason)"))
        }
    }
}
