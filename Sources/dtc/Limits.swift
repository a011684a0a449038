import ArgumentParser
import DTCRuntime
import DTCStorage
import DTCWire
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// `dtc limits`: what this machine allows dtc at most, measured with dtc's own storage and
/// transport, so a benchmark can set its figures beside them (scripts/bench.sh runs it in the
/// same run as the load).
struct Limits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measures durable LMDB commits/s (one small record each, synced as dtc's logs are) and messages/s over one gRPC stream on loopback.")

    @Option(help: "Seconds for each measurement.") var seconds = 3.0
    @Option(help: "Folder for the LMDB measurement (default: a new folder under the system's temporary folder, removed after).")
    var dir: String?
    @Flag(help: "Print one JSON object.") var json = false

    func run() async throws {
        guard seconds > 0, seconds <= 60 else { throw CLIFailure.usage("--seconds must be in (0, 60], got \(seconds)") }
        let commits = try measureDurableCommits()
        let messages = try await measureStreamMessages()
        if json {
            print(String(format: "{\"lmdbDurableCommitsPerS\":%.1f,\"lmdbCommitMeanUs\":%.1f,\"grpcStreamMessagesPerS\":%.1f}", commits, 1e6 / max(commits, 0.001), messages))
        } else {
            print(String(format: "LMDB durable commits (1 record, synced): %.0f/s (%.1f µs each)", commits, 1e6 / max(commits, 0.001)))
            print(String(format: "gRPC bidirectional stream on loopback:  %.0f messages/s (one reply per message)", messages))
        }
    }

    /// One-record write transactions, each committed with LMDB's default (synced) flags.
    private func measureDurableCommits() throws -> Double {
        let path = dir ?? NSTemporaryDirectory() + "dtc-limits-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { if dir == nil { try? FileManager.default.removeItem(atPath: path) } }
        let environment = try LMDBEnvironment(path: path, mapSizeBytes: 64 << 20)
        defer { environment.close() }
        let database = try environment.database("limits")
        let value = [UInt8](repeating: 7, count: 100)
        let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let started = ContinuousClock.now
        var count = 0
        while ContinuousClock.now < end {
            try environment.write { try $0.put(database, "k\(count % 1000)", value) }
            count += 1
        }
        return Double(count) / (ContinuousClock.now - started).seconds
    }

    /// An echo server and one client on loopback: the client keeps writing small messages on one
    /// bidirectional stream and counts the replies for `seconds`.
    private func measureStreamMessages() async throws -> Double {
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [EchoParticipant()])
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }
            guard let port = try await transport.listeningAddress.ipv4?.port else { throw CLIFailure.failed("the echo server did not listen") }
            let connections = Connections()
            let client = try connections.resourceManager("127.0.0.1:\(port)")
            let duration = Duration.milliseconds(Int(seconds * 1000))
            let request = Dtc_V1_RMRequest.with { $0.decisions = [.with { $0.txnID = "limits" }] }
            let replies = try await client.exchange { writer in
                let end = ContinuousClock.now + duration
                while ContinuousClock.now < end { try await writer.write(request) }
            } onResponse: { response in
                var count = 0
                for try await _ in response.messages { count += 1 }
                return count
            }
            await connections.close()
            server.beginGracefulShutdown()
            return Double(replies) / duration.seconds
        }
    }
}

/// Answers every Exchange message with one message, at once.
private struct EchoParticipant: Dtc_V1_ResourceManager.SimpleServiceProtocol {
    func exchange(
        request: RPCAsyncSequence<Dtc_V1_RMRequest, any Error>, response: RPCWriter<Dtc_V1_RMResponse>, context: ServerContext
    ) async throws {
        let reply = Dtc_V1_RMResponse.with { $0.acks = [.with { $0.txnID = "limits"; $0.accepted = true }] }
        for try await _ in request { try await response.write(reply) }
    }

    func scan(request: Dtc_V1_ScanRequest, context: ServerContext) async throws -> Dtc_V1_ScanResponse { Dtc_V1_ScanResponse() }
    func status(request: Dtc_V1_RMStatusRequest, context: ServerContext) async throws -> Dtc_V1_RMStatusResponse { Dtc_V1_RMStatusResponse() }
}
