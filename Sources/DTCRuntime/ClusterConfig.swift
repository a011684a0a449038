import DTCCore
import Foundation

/// The cluster as `cluster.json` describes it: nodes, RMs, partitioning, seed data and timing.
/// Scripts, the CLI and every process read the same file.
public struct ClusterConfig: Codable, Sendable {
    public struct Process: Codable, Sendable {
        public var name: String
        public var host: String
        public var port: Int
        public var dataDir: String
        /// RMs only: which service this participant runs, for the program that serves it
        /// (the shop's dtc-rm reads inventory, orders or accounts). dtc itself ignores it.
        public var service: String?
        /// RMs served by dtc-pg only: the PostgreSQL database this participant makes a branch
        /// of a dtc txn (scripts/postgres.sh starts a throwaway server for it).
        public var postgres: PostgresTarget?

        public var address: String { "\(host):\(port)" }
    }

    /// Where a PostgreSQL participant's database is, and who it logs in as.
    public struct PostgresTarget: Codable, Sendable {
        public var host: String
        public var port: Int
        public var database: String
        public var user: String
        public var password: String?

        public init(host: String, port: Int, database: String, user: String, password: String?) {
            self.host = host
            self.port = port
            self.database = database
            self.user = user
            self.password = password
        }
    }

    public struct Seed: Codable, Sendable {
        public var skus: Int
        public var unitsPerSku: Int64
        public var users: Int
        public var centsPerUser: Int64
    }

    public struct Timing: Codable, Sendable {
        public var tickMs: Int
        public var prepareTimeoutMs: Int
        public var lockWaitTimeoutMs: Int
        public var decisionRetryInitialMs: Int
        public var decisionRetryMaxMs: Int
        /// An RM asks the coordinator for the outcome of a txn prepared this long.
        public var inquiryAfterMs: Int
        public var rpcTimeoutMs: Int
        /// Nodes send each other a heartbeat this often.
        public var heartbeatMs: Int
        /// A node not heard from for this long is suspected, and its partitions are taken over.
        public var suspicionTimeoutMs: Int
        /// A txn's row is trimmed from the log this long after its END: the window in which a
        /// resubmitted txnID is answered from the log.
        public var logRetentionMs: Int
    }

    public var partitions: Int
    public var replicationFactor: Int
    public var virtualNodes: Int
    public var nodes: [Process]
    public var rms: [Process]
    /// The shop's seed data; absent in a cluster that runs no shop.
    public var seed: Seed?
    public var timing: Timing
    /// Bounds on what clients send; each is optional in the file.
    public var limitsSection: LimitsSection?
    /// How a coordinator retries a txn refused for contention; each is optional in the file.
    public var retries: Retries?

    public struct Retries: Codable, Sendable {
        /// Attempts per txn, the first included (20 by default; 1 turns retries off).
        public var attemptsMax: Int?
        /// No further attempt starts this long after the submit (3000 by default).
        public var windowMs: Int?
        /// Pause before a further attempt, doubling per attempt (2 ms up to 200 ms by default).
        public var backoffInitialMs: Int?
        public var backoffMaxMs: Int?
    }

    public struct LimitsSection: Codable, Sendable {
        /// A branch payload's largest size in bytes (64 KiB by default).
        public var payloadBytesMax: Int?
    }

    /// The directory the file was read from; relative data directories are resolved against it.
    public var baseDirectory = "."

    private enum CodingKeys: String, CodingKey {
        case partitions, replicationFactor, virtualNodes, nodes, rms, seed, timing, retries
        case limitsSection = "limits"
    }

    /// Reads and checks `path`; every problem is one readable line.
    public static func load(path: String) throws(ConfigError) -> ClusterConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("cannot read cluster config '\(path)': no such file or not readable")
        }
        var config: ClusterConfig
        do {
            config = try JSONDecoder().decode(ClusterConfig.self, from: data)
        } catch let error as DecodingError {
            throw ConfigError("malformed cluster config '\(path)': \(describe(error))")
        } catch {
            throw ConfigError("malformed cluster config '\(path)': \(error)")
        }
        config.baseDirectory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try config.check(path)
        return config
    }

    public var partitionMap: PartitionMap {
        PartitionMap(nodes: nodes.map(\.name), partitionCount: UInt32(partitions), replicationFactor: replicationFactor, virtualNodes: virtualNodes)
    }

    public func node(named name: String) -> Process? { nodes.first { $0.name == name } }
    public func rm(named name: String) -> Process? { rms.first { $0.name == name } }

    /// Every process's address (host:port) and name: how a process knows whom it calls.
    public var processNames: [String: String] {
        Dictionary((nodes + rms).map { ($0.address, $0.name) }, uniquingKeysWith: { first, _ in first })
    }

    /// Position of the node in the list, used in start stamps and epochs.
    public func nodeIndex(of name: String) -> Int? { nodes.firstIndex { $0.name == name } }

    /// The participant names: what a branch may name.
    public var participantNames: Set<String> { Set(rms.map(\.name)) }

    /// The first RM that runs `service` (the shop's orders touch one RM of each service).
    public func rm(forService service: String) -> Process? { rms.first { $0.service == service } }

    public func dataDirectory(of process: Process) -> String {
        process.dataDir.hasPrefix("/") ? process.dataDir : baseDirectory + "/" + process.dataDir
    }

    public var limits: Limits {
        var limits = Limits()
        limits.prepareTimeout = UInt64(timing.prepareTimeoutMs)
        limits.lockWaitTimeout = UInt64(timing.lockWaitTimeoutMs)
        limits.decisionRetryInitial = UInt64(timing.decisionRetryInitialMs)
        limits.decisionRetryMax = UInt64(timing.decisionRetryMaxMs)
        if let payloadBytesMax = limitsSection?.payloadBytesMax { limits.payloadBytesMax = payloadBytesMax }
        // Out-of-range values are clamped here and refused by `check` (through `validated`).
        if let attempts = retries?.attemptsMax { limits.attemptsMax = UInt32(clamping: attempts) }
        if let window = retries?.windowMs { limits.retryWindow = UInt64(clamping: window) }
        if let initial = retries?.backoffInitialMs { limits.retryBackoffInitial = UInt64(clamping: initial) }
        if let maximum = retries?.backoffMaxMs { limits.retryBackoffMax = UInt64(clamping: maximum) }
        return limits
    }

    private func check(_ path: String) throws(ConfigError) {
        func fail(_ message: String) -> ConfigError { ConfigError("invalid cluster config '\(path)': \(message)") }
        guard !nodes.isEmpty else { throw fail("no nodes") }
        guard nodes.count <= 16 else { throw fail("\(nodes.count) nodes, at most 16 are supported") }
        guard partitions > 0, partitions <= 65_536 else { throw fail("partitions must be in 1...65536") }
        guard replicationFactor >= 1, replicationFactor <= nodes.count else {
            throw fail("replicationFactor \(replicationFactor) must be in 1...\(nodes.count) (the node count)")
        }
        guard virtualNodes > 0 else { throw fail("virtualNodes must be positive") }
        let names = nodes.map(\.name) + rms.map(\.name)
        guard Set(names).count == names.count else { throw fail("process names repeat") }
        for process in nodes + rms where !(1...65_535).contains(process.port) {
            throw fail("\(process.name) has port \(process.port), outside 1...65535")
        }
        guard !rms.isEmpty else { throw fail("no rms (participants)") }
        guard timing.tickMs > 0, timing.rpcTimeoutMs > 0, timing.heartbeatMs > 0, timing.logRetentionMs > 0 else {
            throw fail("timing values must be positive")
        }
        guard timing.suspicionTimeoutMs >= 3 * timing.heartbeatMs else {
            throw fail("timing.suspicionTimeoutMs must be at least 3 heartbeats (\(3 * timing.heartbeatMs) ms)")
        }
        do { _ = try limits.validated() } catch { throw fail(error.description) }
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, let context): "missing field '\(path(context.codingPath + [key]))'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            "wrong type at '\(path(context.codingPath))'"
        case .dataCorrupted(let context):
            context.codingPath.isEmpty ? "not valid JSON" : "bad value at '\(path(context.codingPath))'"
        @unknown default: "\(error)"
        }
    }

    private static func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: ["."])
    }
}

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
