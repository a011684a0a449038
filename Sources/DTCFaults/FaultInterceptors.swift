import DTCRuntime
import GRPCCore

// `senderHeader` (the `dtc-from` header) and `SenderInterceptor` are in DTCRuntime: a process
// with fault injection off names itself too, so that peers with it on can fault its calls.

/// Set by a sender whose fault model chose to duplicate a unary request: the receiver runs
/// the call twice. (One HTTP/2 stream carries one request, so the copy is made there.)
let duplicateHeader = "dtc-fault-duplicate"

/// The RPCs that are long-lived streams. On these a lost message breaks the stream, as a lost
/// connection would: gRPC streams are ordered and reliable, and the protocol may rely on it
/// (replication acknowledges by ticket, so a message silently missing from the middle of a
/// stream is something no real network can do to it).
let streamingMethods: Set<String> = ["dtc.v1.ResourceManager/Exchange", "dtc.v1.Replica/Replicate"]
let adminService = "dtc.v1.Admin"

/// How long a call whose request or answer was lost waits before it fails when it has no
/// deadline of its own (every call dtc processes make has one).
let lostCallWaitMax = Duration.seconds(10)

/// Applies the process's faults to what it sends and receives as the client of `target`. It
/// names the process in `senderHeader` itself, so it is installed instead of a `SenderInterceptor`.
public struct FaultClientInterceptor: ClientInterceptor {
    let faults: FaultInjector
    /// The process at the other end; nil for an address outside the cluster config.
    let target: String?

    public init(faults: FaultInjector, target: String?) {
        self.faults = faults
        self.target = target
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        request.metadata.replaceOrAddString(faults.process, forKey: senderHeader)
        guard let target, context.descriptor.service.fullyQualifiedService != adminService else {
            return try await next(request, context)
        }
        if streamingMethods.contains(context.descriptor.fullyQualifiedMethod) {
            return try await stream(request, context, target, next)
        }
        return try await unary(request, context, target, next)
    }

    private func unary<Input: Sendable, Output: Sendable>(
        _ request: StreamingClientRequest<Input>, _ context: ClientContext, _ target: String,
        _ next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        var request = request
        switch faults.fate(.outgoing, peer: target, canDuplicate: true) {
        case .dropped, .cut:
            try await waitAsLost()
        case .deliver(let delayMs, let copies):
            try await sleep(delayMs)
            if copies > 1 { request.metadata.replaceOrAddString("1", forKey: duplicateHeader) }
        }
        let response = try await next(request, context)
        switch faults.fate(.incoming, peer: target, canDuplicate: false) {
        case .dropped, .cut: try await waitAsLost()
        case .deliver(let delayMs, _): try await sleep(delayMs)
        }
        return response
    }

    private func stream<Input: Sendable, Output: Sendable>(
        _ request: StreamingClientRequest<Input>, _ context: ClientContext, _ target: String,
        _ next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        let faults = faults
        // The stream's opening is a message to the target, too.
        if faults.isCut(.outgoing, peer: target) { throw lost(faults.process, target) }
        var request = request
        let producer = request.producer
        request.producer = { writer in
            try await producer(RPCWriter(wrapping: FaultyWriter(base: writer, faults: faults, peer: target)))
        }
        var response = try await next(request, context)
        if case .success(var contents) = response.accepted {
            contents.bodyParts = RPCAsyncSequence(wrapping: FaultyMessages(base: contents.bodyParts, faults: faults, peer: target) {
                if case .message = $0 { true } else { false }
            })
            response.accepted = .success(contents)
        }
        return response
    }
}

/// Applies the process's faults to what it receives and sends as a server, to and from the
/// process named in the caller's `dtc-from` header.
public struct FaultServerInterceptor: ServerInterceptor {
    let faults: FaultInjector

    public init(faults: FaultInjector) { self.faults = faults }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>, context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        guard let peer = request.metadata[stringValues: senderHeader].first(where: { _ in true }),
            context.descriptor.service.fullyQualifiedService != adminService
        else {
            return try await next(request, context)
        }
        if streamingMethods.contains(context.descriptor.fullyQualifiedMethod) {
            return try await stream(request, context, peer, next)
        }
        return try await unary(request, context, peer, next)
    }

    private func unary<Input: Sendable, Output: Sendable>(
        _ request: StreamingServerRequest<Input>, _ context: ServerContext, _ peer: String,
        _ next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        var copies = request.metadata[stringValues: duplicateHeader].contains { _ in true } ? 2 : 1
        switch faults.fate(.incoming, peer: peer, canDuplicate: true) {
        case .dropped, .cut:
            try await waitAsLost(context)
        case .deliver(let delayMs, let drawn):
            try await sleep(delayMs)
            copies = max(copies, drawn)
        }
        let single = try await ServerRequest(stream: request)
        let response = try await next(StreamingServerRequest(single: single), context)
        if copies > 1 {
            // The copy arrives after the original: it runs, and its answer goes nowhere.
            let copy = try await next(StreamingServerRequest(single: single), context)
            if case .success(let contents) = copy.accepted { _ = try? await contents.producer(RPCWriter(wrapping: DiscardingWriter())) }
        }
        switch faults.fate(.outgoing, peer: peer, canDuplicate: false) {
        case .dropped, .cut: try await waitAsLost(context)
        case .deliver(let delayMs, _): try await sleep(delayMs)
        }
        return response
    }

    private func stream<Input: Sendable, Output: Sendable>(
        _ request: StreamingServerRequest<Input>, _ context: ServerContext, _ peer: String,
        _ next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let faults = faults
        if faults.isCut(.incoming, peer: peer) { throw lost(faults.process, peer) }
        var request = request
        request.messages = RPCAsyncSequence(wrapping: FaultyMessages(base: request.messages, faults: faults, peer: peer) { _ in true })
        var response = try await next(request, context)
        if case .success(var contents) = response.accepted {
            let producer = contents.producer
            contents.producer = { writer in
                try await producer(RPCWriter(wrapping: FaultyWriter(base: writer, faults: faults, peer: peer)))
            }
            response.accepted = .success(contents)
        }
        return response
    }
}

// MARK: - Messages on streams

/// Sends each message as its fate says: later, twice, or not at all, in which case the stream
/// breaks.
struct FaultyWriter<Element: Sendable>: RPCWriterProtocol {
    let base: RPCWriter<Element>
    let faults: FaultInjector
    let peer: String

    func write(_ element: Element) async throws {
        switch faults.fate(.outgoing, peer: peer, canDuplicate: true) {
        case .dropped, .cut: throw lost(faults.process, peer)
        case .deliver(let delayMs, let copies):
            try await sleep(delayMs)
            for _ in 0..<copies { try await base.write(element) }
        }
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
        for element in elements { try await write(element) }
    }
}

/// Receives each message as its fate says; a lost one breaks the stream. Order is kept: a
/// delayed message holds up those behind it.
struct FaultyMessages<Element: Sendable>: AsyncSequence {
    typealias Failure = any Error
    let base: RPCAsyncSequence<Element, any Error>
    let faults: FaultInjector
    let peer: String
    /// Which elements are messages (the rest, e.g. trailing metadata, pass untouched).
    let isMessage: @Sendable (Element) -> Bool

    func makeAsyncIterator() -> Iterator {
        Iterator(base: base.makeAsyncIterator(), faults: faults, peer: peer, isMessage: isMessage)
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: RPCAsyncSequence<Element, any Error>.AsyncIterator
        let faults: FaultInjector
        let peer: String
        let isMessage: @Sendable (Element) -> Bool
        var copy: Element?

        mutating func next() async throws -> Element? {
            if let copy {
                self.copy = nil
                return copy
            }
            guard let element = try await base.next() else { return nil }
            guard isMessage(element) else { return element }
            switch faults.fate(.incoming, peer: peer, canDuplicate: true) {
            case .dropped, .cut: throw lost(faults.process, peer)
            case .deliver(let delayMs, let copies):
                try await sleep(delayMs)
                if copies > 1 { copy = element }
                return element
            }
        }
    }
}

struct DiscardingWriter<Element: Sendable>: RPCWriterProtocol {
    func write(_ element: Element) async throws {}
    func write(contentsOf elements: some Sequence<Element>) async throws {}
}

// MARK: - Helpers

/// What a broken connection looks like to gRPC's callers (the message reaches the peer, too).
func lost(_ process: String, _ peer: String) -> RPCError {
    RPCError(code: .unavailable, message: "connection between \(process) and \(peer) lost")
}

func sleep(_ milliseconds: UInt64) async throws {
    if milliseconds > 0 { try await Task.sleep(for: .milliseconds(milliseconds)) }
}

/// A client whose request or answer was lost hears nothing until its deadline cancels the call.
func waitAsLost() async throws {
    try await Task.sleep(for: lostCallWaitMax)
    throw RPCError(code: .deadlineExceeded, message: "no answer within \(lostCallWaitMax)")
}

/// A server that lost a request (or whose answer will be lost) holds the call until the
/// client gives up on it (its deadline, or the stream reset), so that the client learns
/// nothing, as with a real loss.
func waitAsLost(_ context: ServerContext) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await context.cancellation.cancelled }
        group.addTask { try await Task.sleep(for: lostCallWaitMax) }
        _ = try await group.next()
        group.cancelAll()
    }
    throw RPCError(code: .deadlineExceeded, message: "no answer within the caller's deadline")
}
