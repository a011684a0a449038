import DTCFaults
import DTCWire
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

public typealias Transport = HTTP2ClientTransport.Posix

/// One long-lived gRPC client per peer address, created on first use. gRPC reconnects by
/// itself, so a peer that restarts is reached again through the same client.
public final class Connections: Sendable {
    private let clients = Mutex<[String: GRPCClient<Transport>]>([:])
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// The process these connections belong to (nil for the CLI), named on every call.
    private let sender: String?
    /// The process's faults, applied to every call when fault injection is on.
    private let faults: FaultInjector?

    /// The CLI's connections: it names no process and is never faulted.
    public init() {
        sender = nil
        faults = nil
    }

    /// A dtc process's connections: every call names `sender`; with `faults`, every call
    /// suffers them.
    public init(sender: String, faults: FaultInjector?) {
        self.sender = sender
        self.faults = faults
    }

    public func client(for address: String) throws -> GRPCClient<Transport> {
        try clients.withLock { clients in
            if let client = clients[address] { return client }
            let client = try Self.makeClient(address, interceptors: interceptors(for: address))
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

    private func interceptors(for address: String) -> [any ClientInterceptor] {
        if let faults { return [FaultClientInterceptor(faults: faults, target: faults.process(atAddress: address))] }
        if let sender { return [SenderInterceptor(process: sender)] }
        return []
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
