import ArgumentParser
import DTCNode
import DTCRuntime
import Foundation
import Logging

/// `dtc-node`: one coordinator process of the cluster that cluster.json describes.
@main
@available(macOS 15, *)
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtc-node", abstract: "Runs one dtc coordinator node.")

    @Option(help: "Path to the cluster config.") var config = "cluster.json"
    @Option(help: "This node's name in the cluster config (e.g. n1).") var name: String
    @Flag(help: "Serve the admin RPC that injects faults on this node's links (`dtc fault`).") var allowFaultInjection = false

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let logger = Logger(label: "dtc-node.\(name)")
        do {
            let cluster = try ClusterConfig.load(path: config)
            try await runNode(config: cluster, name: name, allowFaultInjection: allowFaultInjection, logger: logger)
        } catch let error as ConfigError {
            failExit(error.description)
        } catch {
            failExit("dtc-node \(name): \(error)")
        }
    }
}

func failExit(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}

