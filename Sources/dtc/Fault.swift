import ArgumentParser
import DTCFaults
import DTCRuntime
import DTCWire
import Foundation
import GRPCCore

/// `dtc fault`: makes running processes misbehave on their gRPC links, through the admin RPC
/// they serve when started with --allow-fault-injection.
struct Fault: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Injects faults on the links of processes started with --allow-fault-injection.",
        subcommands: [FaultSet.self, FaultPartition.self, FaultClear.self, FaultShow.self])
}

struct FaultSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Drops, delays and duplicates the messages a process sends and receives (replaces its earlier set).")

    @Argument(help: "The process: a node or RM name from the cluster config.") var name: String
    @Option(help: "Fraction of messages lost, 0 to 1.") var drop = 0.0
    @Option(help: "Delay of every message: 20ms, 1s, 1.5s.") var delay = "0"
    @Option(help: "Extra delay drawn uniformly from 0 up to this.") var jitter = "0"
    @Option(help: "Fraction of messages delivered twice, 0 to 1.") var duplicate = 0.0
    @Option(help: "Seed of the process's fault generator (default: derived from its name).") var seed: UInt64?
    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let delayMs = try parseDuration(delay, "--delay")
        let jitterMs = try parseDuration(jitter, "--jitter")
        var request = Dtc_V1_SetFaultsRequest()
        request.link = .with {
            $0.drop = drop
            $0.delayMs = delayMs
            $0.jitterMs = jitterMs
            $0.duplicate = duplicate
            if let seed { $0.seed = seed }
        }
        let admin = try AdminClient(cluster.load())
        defer { admin.close() }
        print(FaultTable.row(try await admin.set(name, request)))
    }
}

struct FaultPartition: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "partition",
        abstract: "Cuts a process off from others (replaces its earlier cut-off).")

    @Argument(help: "The process to cut off.") var name: String
    @Option(help: "The processes it is cut off from, comma-separated.") var from: String
    @Option(help: "in: it hears nothing from them; out: they hear nothing from it; both.") var direction = "both"
    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        guard let cut = CutDirection(rawValue: direction) else {
            throw CLIFailure.usage("--direction must be in, out or both, not '\(direction)'")
        }
        let others = from.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !others.isEmpty, !others.contains(where: \.isEmpty) else {
            throw CLIFailure.usage("--from needs process names, e.g. --from n1,n2")
        }
        var request = Dtc_V1_SetFaultsRequest()
        request.cutOff = .with {
            $0.from = others
            $0.direction = cut.wire
        }
        let admin = try AdminClient(cluster.load())
        defer { admin.close() }
        print(FaultTable.row(try await admin.set(name, request)))
    }
}

struct FaultClear: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clear", abstract: "Clears every fault of one process, or of every process that has fault injection on.")

    @Argument(help: "The process (default: all).") var name: String?
    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let config = try cluster.load()
        let admin = AdminClient(config)
        defer { admin.close() }
        var request = Dtc_V1_SetFaultsRequest()
        request.link = Dtc_V1_LinkFaults()
        request.cutOff = Dtc_V1_CutOff()
        if let name {
            _ = try await admin.set(name, request)
            print("\(name): faults cleared")
            return
        }
        for process in config.nodes + config.rms {
            do {
                _ = try await admin.set(process.name, request)
                print("\(process.name): faults cleared")
            } catch let failure as CLIFailure {
                print(failure.message)
            }
        }
    }
}

struct FaultShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Shows every process's faults and what they have injected so far.")

    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let config = try cluster.load()
        let admin = AdminClient(config)
        defer { admin.close() }
        print(FaultTable.header)
        for process in config.nodes + config.rms {
            do {
                print(FaultTable.row(try await admin.get(process.name)))
            } catch let error as RPCError where error.code == .failedPrecondition {
                print(FaultTable.pad(process.name, 11) + "disabled (started without --allow-fault-injection)")
            } catch {
                print(FaultTable.pad(process.name, 11) + "down")
            }
        }
    }
}

/// The admin RPC of the processes in the cluster config. Failures become one-line CLI errors.
struct AdminClient {
    let config: ClusterConfig
    let connections = Connections()

    init(_ config: ClusterConfig) { self.config = config }

    func close() { Task { await connections.close() } }

    func set(_ name: String, _ request: Dtc_V1_SetFaultsRequest) async throws -> Dtc_V1_FaultsResponse {
        let address = try address(of: name)
        do {
            return try await connections.admin(address).setFaults(request, options: options)
        } catch {
            throw failure(name, address, error)
        }
    }

    /// Throws the RPCError itself, so that `show` can tell disabled from down.
    func get(_ name: String) async throws -> Dtc_V1_FaultsResponse {
        try await connections.admin(try address(of: name)).getFaults(Dtc_V1_GetFaultsRequest(), options: options)
    }

    private func address(of name: String) throws -> String {
        guard let process = config.node(named: name) ?? config.rm(named: name) else {
            let names = (config.nodes + config.rms).map(\.name).joined(separator: ", ")
            throw CLIFailure.usage("no process named '\(name)' in the cluster config (processes: \(names))")
        }
        return process.address
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .seconds(2)
        options.waitForReady = false
        return options
    }

    private func failure(_ name: String, _ address: String, _ error: any Error) -> CLIFailure {
        guard let rpc = error as? RPCError else { return .failed("\(name): \(error)") }
        switch rpc.code {
        case .invalidArgument: return .usage("\(name): \(shortDescription(of: rpc))")
        case .failedPrecondition: return .failed("\(name): \(shortDescription(of: rpc))")
        case .unavailable, .deadlineExceeded: return .failed("\(name) at \(address) is not answering (\(shortDescription(of: rpc)))")
        default: return .failed("\(name): \(shortDescription(of: rpc))")
        }
    }
}

enum FaultTable {
    static let header = pad("process", 11) + pad("drop", 7) + pad("delay", 8) + pad("jitter", 8) + pad("duplicate", 11)
        + pad("cut-off-from", 24) + pad("dropped", 9) + pad("delayed", 9) + pad("duplicated", 12) + "cut"

    static func row(_ faults: Dtc_V1_FaultsResponse) -> String {
        let link = faults.link
        let counters = faults.counters
        return pad(faults.process, 11) + pad(fraction(link.drop), 7) + pad("\(link.delayMs)ms", 8) + pad("\(link.jitterMs)ms", 8)
            + pad(fraction(link.duplicate), 11) + pad(cutOff(faults.cutOff), 24) + pad("\(counters.dropped)", 9)
            + pad("\(counters.delayed)", 9) + pad("\(counters.duplicated)", 12) + "\(counters.cut)"
    }

    private static func fraction(_ value: Double) -> String { value == 0 ? "0" : "\(value)" }

    private static func cutOff(_ cut: Dtc_V1_CutOff) -> String {
        guard !cut.from.isEmpty else { return "-" }
        let direction = (try? CutDirection(wire: cut.direction)) ?? .both
        return cut.from.joined(separator: ",") + (direction == .both ? "" : " (\(direction.rawValue))")
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

private func parseDuration(_ text: String, _ option: String) throws -> UInt64 {
    do {
        return try FaultDuration.milliseconds(parsing: text)
    } catch {
        throw CLIFailure.usage("\(option): \(error.description)")
    }
}
