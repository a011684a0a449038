import GRPCCore

/// The header in which a dtc process names itself on every call it makes. A call without it
/// comes from the CLI and is never faulted.
public let senderHeader = "dtc-from"

/// Names the sending process on every call; installed when fault injection is off, so that
/// peers which have it on can still tell who is calling.
public struct SenderInterceptor: ClientInterceptor {
    let process: String

    public init(process: String) { self.process = process }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        request.metadata.replaceOrAddString(process, forKey: senderHeader)
        return try await next(request, context)
    }
}
