import GRPCCore
import Synchronization

/// Counts every gRPC message this process sends: its requests as a client and its responses
/// as a server (a batch is one message). `dtc status` shows it, and scripts/bench.sh divides it
/// by the committed txns: messages per txn, the cost that batching cuts.
public final class MessageCounter: Sendable {
    public static let shared = MessageCounter()
    private let sent = Atomic<UInt64>(0)

    public var messagesSent: UInt64 { sent.load(ordering: .relaxed) }

    func count(_ messages: Int) {
        sent.add(UInt64(messages), ordering: .relaxed)
    }

    /// Installs the counter on a client's calls.
    public var clientInterceptor: any ClientInterceptor { CountingClientInterceptor(counter: self) }
    /// Installs the counter on a server's responses.
    public var serverInterceptor: any ServerInterceptor { CountingServerInterceptor(counter: self) }
}

private struct CountingWriter<Element: Sendable>: RPCWriterProtocol {
    let base: RPCWriter<Element>
    let counter: MessageCounter

    func write(_ element: Element) async throws {
        try await base.write(element)
        counter.count(1)
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        let all = Array(elements)
        try await base.write(contentsOf: all)
        counter.count(all.count)
    }
}

private struct CountingClientInterceptor: ClientInterceptor {
    let counter: MessageCounter

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        let producer = request.producer
        let counter = counter
        request.producer = { writer in try await producer(RPCWriter(wrapping: CountingWriter(base: writer, counter: counter))) }
        return try await next(request, context)
    }
}

private struct CountingServerInterceptor: ServerInterceptor {
    let counter: MessageCounter

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        var response = try await next(request, context)
        guard case .success(var contents) = response.accepted else { return response }
        let producer = contents.producer
        let counter = counter
        contents.producer = { writer in try await producer(RPCWriter(wrapping: CountingWriter(base: writer, counter: counter))) }
        response.accepted = .success(contents)
        return response
    }
}
