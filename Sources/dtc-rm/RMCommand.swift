import ArgumentParser
import DTCParticipant
import DTCRuntime
import DTCShop
import Foundation
import Logging

/// `dtc-rm`: one of the shop's services (inventory, orders or accounts) as a dtc participant,
/// built on the DTCParticipant library like any participant.
@main
@available(macOS 15, *)
struct RMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtc-rm", abstract: "Runs one of the shop's participants (inventory, orders or accounts).")

    @Option(help: "Path to the cluster config.") var config = "cluster.json"
    @Option(help: "The service to run: inventory, orders or accounts.") var service: ShopService?
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
            let (rmName, rmService) = try resolved(cluster)
            let seed = try seedData.map(loadSeed) ?? defaultSeed(cluster)
            try await serveParticipant(
                ShopLogic(service: rmService), config: cluster, name: rmName, initialState: seed.values(for: rmService),
                allowFaultInjection: allowFaultInjection, logger: Logger(label: "dtc-rm.\(rmName)"))
        } catch let error as ConfigError {
            failExit(error.description)
        } catch {
            failExit("dtc-rm: \(error)")
        }
    }

    /// The RM's name and the shop service it runs (its `service` in the config, or --service).
    private func resolved(_ cluster: ClusterConfig) throws -> (String, ShopService) {
        if let name {
            guard let rm = cluster.rm(named: name) else { throw ConfigError("no rm named '\(name)' in the cluster config") }
            guard let runs = service ?? rm.service.flatMap(ShopService.init(rawValue:)) else {
                throw ConfigError("rm '\(name)' runs no shop service: its \"service\" in the cluster config must be inventory, orders or accounts")
            }
            return (name, runs)
        }
        guard let service, let rm = cluster.rm(forService: service.rawValue) else { throw ConfigError("no rm runs --service in the cluster config") }
        return (rm.name, service)
    }

    private func defaultSeed(_ cluster: ClusterConfig) throws -> ShopSeed {
        guard let seed = cluster.seed else { throw ConfigError("the cluster config has no \"seed\" for the shop; add one or give --seed-data") }
        return ShopSeed(skus: seed.skus, unitsPerSku: seed.unitsPerSku, users: seed.users, centsPerUser: seed.centsPerUser)
    }

    private func loadSeed(_ path: String) throws -> ShopSeed {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError("cannot read seed data '\(path)'") }
        do {
            return try JSONDecoder().decode(ShopSeed.self, from: data)
        } catch {
            throw ConfigError("malformed seed data '\(path)': expected {\"stock\": {...}, \"balances\": {...}}")
        }
    }
}

extension ShopService: ExpressibleByArgument {}

func failExit(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}
