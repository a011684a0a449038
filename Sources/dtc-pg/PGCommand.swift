import ArgumentParser
import DTCPostgres
import DTCRuntime
import Foundation
import Logging

/// `dtc-pg`: makes a PostgreSQL database a dtc participant. It serves the rm `--name` of the
/// cluster config, whose "postgres" entry says where the database is.
@main
@available(macOS 15, *)
struct PGCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtc-pg", abstract: "Serves a PostgreSQL database as a dtc participant (branches of kind \"sql\").")

    @Option(help: "Path to the cluster config.") var config = "cluster.json"
    @Option(help: "This participant's name in the cluster config's rms (its entry has a \"postgres\" object).") var name: String
    @Flag(help: "Serve the admin RPC that injects faults on this participant's links (`dtc fault`).") var allowFaultInjection = false

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        do {
            let cluster = try ClusterConfig.load(path: config)
            try await servePostgresParticipant(
                config: cluster, name: name, allowFaultInjection: allowFaultInjection, logger: Logger(label: "dtc-pg.\(name)"))
        } catch let error as ConfigError {
            failExit(error.description)
        } catch let error as PostgresSetupError {
            failExit("dtc-pg: \(error.description)")
        } catch {
            failExit("dtc-pg: \(error)")
        }
    }
}

func failExit(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(1)
}
