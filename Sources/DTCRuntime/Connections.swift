import DTCWire
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

public typealias Transport = HTTP2ClientTransport.Posix

/// One long-lived gRPC client per peer address, created on first use. gRPC reconnects by
/// itself, so a peer that restarts is reached again through the same client.
///
/// The interceptors each client installs come from the caller, so that this module does not
/// depend on fault injection: a dtc process with fault injection on gets its connections from
/// DTCFaults' `Connections(sender:faults:)`.
public final class Connections: Sendable {
    private let clients = Mutex<[String: GRPCClient<Transport>]>([:])
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// The interceptors installed on the client for an address, asked once per address.
    private let interceptors: @Sendable (_ address: String) -> [any ClientInterceptor]

    /// Connections whose client for `address` installs `interceptors(address)`. A dtc process's
    /// interceptors must name it in the `senderHeader`, as `SenderInterceptor` does: peers with
    /// fault injection on fault only the calls of processes they can name.
    public init(interceptors: @escaping @Sendable (_ address: String) -> [any ClientInterceptor]) {
        self.interceptors = interceptors
    }

    /// The CLI's connections: it names no process and is never faulted.
    public convenience init() {
        self.init(interceptors: { _ in [] })
    }

    /// A dtc process's connections without fault injection: every call names `sender`.
    public convenience init(sender: String) {
        let naming: [any ClientInterceptor] = [MessageCounter.shared.clientInterceptor, SenderInterceptor(process: sender)]
        self.init(interceptors: { _ in naming })
    }

    public func client(for address: String) throws -> GRPCClient<Transport> {
        try clients.withLock { clients in
            if let client = clients[address] { return client }
            let client = try Self.makeClient(address, interceptors: interceptors(address))
            clients[address] = client
            tasks.withLock { $0.append(Task { try? await client.runConnections() }) }
            return client
        }
    }

    public func coordinator(_ address: String) throws -> Dtc_V1_Coordinator.Client<Transport> {
        Dtc_V1_Coordinator.Client(wrapping: try client(for: address))
    }

    public func resourceManager(_ address: String) throws -> Dtc_V1_ResourceManager.Client<Transport> {
        Dtc_V1_ResourceManager.Client(wrapping: try client(for: address))
    }

    public func replica(_ address: String) throws -> Dtc_V1_Replica.Client<Transport> {
        Dtc_V1_Replica.Client(wrapping: try client(for: address))
    }

    public func admin(_ address: String) throws -> Dtc_V1_Admin.Client<Transport> {
        Dtc_V1_Admin.Client(wrapping: try client(for: address))
    }

    /// Closes every connection and waits for them to wind down.
    public func close() async {
        let all = clients.withLock { clients in
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        for client in all { client.beginGracefulShutdown() }
        for task in tasks.withLock({ $0 }) { await task.value }
    }

    private static func makeClient(_ address: String, interceptors: [any ClientInterceptor]) throws -> GRPCClient<Transport> {
        let (host, port) = try splitAddress(address)
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.backoff.initial = .milliseconds(20)
        config.backoff.max = .milliseconds(500)
        config.connection.maxIdleTime = nil
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port), transportSecurity: .plaintext, config: config)
        return GRPCClient(transport: transport, interceptors: interceptors)
    }
}

func splitAddress(_ address: String) throws -> (String, Int) {
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
        throw RPCError(code: .invalidArgument, message: "bad address '\(address)', expected host:port")
    }
    return (String(address[..<colon]), port)
}

/// An error in one line: the gRPC code and message, or the error itself.
public func shortDescription(of error: any Error) -> String {
    if let rpc = error as? RPCError { return "\(rpc.code): \(rpc.message)" }
    return "\(error)"
}

/// The largest message between nodes. A FENCE's answer carries the member's rows of every
/// partition fenced, and a replication catch-up every row a follower shares with its leader:
/// their size grows with the txns of the retention period, far past gRPC's 4 MiB default. A
/// message over the limit never arrives, so the takeover or catch-up that needs it would be
/// tried again for ever (seen in a 60-minute chaos run: 4.3 MB fence answers).
public let peerMessageBytesMax = 256 << 20

extension CallOptions {
    /// Options for calls between nodes: messages up to `peerMessageBytesMax` each way.
    public mutating func allowPeerSizedMessages() {
        maxRequestMessageBytes = peerMessageBytesMax
        maxResponseMessageBytes = peerMessageBytesMax
    }
}
