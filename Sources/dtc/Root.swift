import ArgumentParser
import DTCRuntime
import Foundation

/// `dtc`: the router CLI. It sends orders to the node that leads each txn's partition, runs
/// load, checks the business invariants and shows the cluster.
@main
struct DTC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dtc",
        abstract: "Client of a dtc cluster: orders, load, checks, status and fault injection.",
        subcommands: [Order.self, Submit.self, Load.self, Check.self, Verify.self, Status.self, Txn.self, Fault.self, Limits.self])

    /// Usage errors exit 2 with one line; a failure the command reports exits 1; never a trace.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let failure as CLIFailure {
            FileHandle.standardError.write(Data("error: \(failure.message)\n".utf8))
            Foundation.exit(failure.code)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("\(message)\n".utf8))
            Foundation.exit(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

/// An error a command reports as one line, with its exit code.
struct CLIFailure: Error {
    var message: String
    var code: Int32

    static func usage(_ message: String) -> CLIFailure { CLIFailure(message: message, code: 2) }
    static func failed(_ message: String) -> CLIFailure { CLIFailure(message: message, code: 1) }
}

struct ClusterOptions: ParsableArguments {
    @Option(help: "Path to the cluster config.") var config = "cluster.json"

    func load() throws -> ClusterConfig {
        do {
            return try ClusterConfig.load(path: config)
        } catch {
            throw CLIFailure.usage(error.description)
        }
    }
}
