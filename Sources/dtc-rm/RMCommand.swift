import ArgumentParser
import DTCClient
import DTCCore
import DTCResourceManager
import Foundation
import Logging

/// `dtc-rm`: one resource manager (inventory, orders or accounts) with its own LMDB store.
@main
@available(macOS 15, *)
struct RMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtc-rm", abstract: "Runs one dtc resource manager.")

    @Option(help: "Path to the cluster config.") var config = "cluster.json"
    @Option(help: "The service to run: inventory, orders or accounts.") var service: ServiceKind?
    @Option(help: "This RM's name in the cluster config (default: the RM that runs --service).") var name: String?
    @Option(help: "JSON file {\"stock\": {sku: units}, \"balances\": {user: cents}} to seed an empty store (default: the seed in the cluster config).")
    var seedData: String?
    @Flag(help: "Serve the admin RPC that injects faults on this RM's links (`dtc fault`).") var allowFaultInjection = false

    func validate() throws {
        guard service != nil || name != nil else { throw ValidationError("give --service or --name") }
    }

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        do {
            let cluster = try ClusterConfig.load(path: config)
            let rmName = try resolvedName(cluster)
            let seed = try seedData.map(loadSeed) ?? SeedData(cluster.seed)
            try await runResourceManager(
                config: cluster, name: rmName, seed: seed, allowFaultInjection: allowFaultInjection, logger: Logger(label: "dtc-rm.\(rmName)"))
        } catch let error as ConfigError {
            failExit(error.description)
        } catch {
            failExit("dtc-rm: \(error)")
        }
    }

    private func resolvedName(_ cluster: ClusterConfig) throws -> String {
        if let name { return name }
        guard let service, let rm = cluster.rm(for: service) else { throw ConfigError("no rm runs --service in the cluster config") }
        return rm.name
    }

    private func loadSeed(_ path: String) throws -> SeedData {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError("cannot read seed data '\(path)'") }
        do {
            return try JSONDecoder().decode(SeedData.self, from: data)
        } catch {
            throw ConfigError("malformed seed data '\(path)': expected {\"stock\": {...}, \"balances\": {...}}")
        }
    }
}

extension ServiceKind: ExpressibleByArgument {}

func failExit(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}

