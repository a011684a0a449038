import DTCCore
import DTCWire
import GRPCCore

/// What every participant server does with a coordinator's Exchange stream: each batch of
/// PREPAREs and decisions, checked (a bad one fails the call with INVALID_ARGUMENT and nothing
/// of it is acted on), goes to `receive`; the replies the participant queues for the stream go
/// back many per message, as they become ready.
public func serveExchange(
    request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>,
    open: (BatchQueue<ParticipantReply>) async -> ReplyRoute,
    receive: ([PrepareMessage], [DecisionMessage], ReplyRoute) async -> Void,
    close: @escaping @Sendable (ReplyRoute) async -> Void
) async throws {
    let replies = BatchQueue<ParticipantReply>()
    let route = await open(replies)
    defer { Task { await close(route) } }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
            while let batch = await replies.next() { try await response.write(Dtc_V1_RMResponse(replies: batch)) }
        }
        for try await message in request {
            let checked: (prepares: [PrepareMessage], decisions: [DecisionMessage])
            do throws(ValidationError) {
                checked = try message.validated()
            } catch {
                throw RPCError(code: .invalidArgument, message: error.description)
            }
            await receive(checked.prepares, checked.decisions, route)
        }
        replies.close()
        try await group.waitForAll()
    }
}

extension Dtc_V1_RMResponse {
    public init(replies: [ParticipantReply]) {
        self.init()
        for reply in replies {
            switch reply {
            case .vote(let vote): votes.append(vote.wire)
            case .ack(let ack): acks.append(ack.wire)
            }
        }
    }
}

extension Dtc_V1_ScanRequest {
    /// The most entries one Scan returns.
    public static let limitMax = 10_000

    /// The page size asked for: 0 means 1,000; more than `limitMax` is INVALID_ARGUMENT.
    public func checkedLimit() throws(RPCError) -> Int {
        let limit = self.limit == 0 ? 1_000 : Int(self.limit)
        guard limit <= Self.limitMax else {
            throw RPCError(code: .invalidArgument, message: "limit \(limit) is over the maximum of \(Self.limitMax)")
        }
        return limit
    }
}
