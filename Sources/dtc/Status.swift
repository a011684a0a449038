import ArgumentParser
import DTCRouter
import DTCRuntime
import DTCWire
import Foundation

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Shows every node and RM: partitions led, counts, log sizes.")

    @OptionGroup var cluster: ClusterOptions

    func run() async throws {
        let config = try cluster.load()
        let connections = Connections()
        defer { Task { await connections.close() } }
        var options = Router(config: config, connections: connections).callOptions
        // A paused process must not hold up the whole table.
        options.timeout = .seconds(1)
        print("node  address          state  led  in-flight  committed  aborted  recovered  takeovers  log-rows  trimmed  syncs  messages  retries  peers (alive, last heard)")
        for node in config.nodes {
            guard let s = try? await connections.coordinator(node.address).status(Dtc_V1_StatusRequest(), options: options) else {
                print(pad(node.name, 6) + pad(node.address, 17) + "down")
                continue
            }
            let peers = s.peers.map { "\($0.node) \($0.alive ? "up" : "DOWN")\($0.lastHeardMsAgo == UInt64.max ? "" : " \($0.lastHeardMsAgo)ms")" }
            print(pad(node.name, 6) + pad(node.address, 17) + pad(s.ready ? "up" : "joining", 7) + pad("\(s.partitions.count)", 5)
                + pad("\(s.inFlight)", 11) + pad("\(s.committed)", 11) + pad("\(s.aborted)", 9) + pad("\(s.recovered)", 11)
                + pad("\(s.takeovers)", 11) + pad("\(s.logRecords)", 10) + pad("\(s.trimmed)", 9) + pad("\(s.logSyncs)", 7)
                + pad("\(s.messagesSent)", 10) + pad("\(s.retries)", 9) + peers.joined(separator: ", "))
        }
        print("")
        print("rm         address          state  prepared  committed  aborted  locks  stale-epoch-refusals  conflicting  syncs  messages  lock-waits (longest)")
        for rm in config.rms {
            guard let s = try? await connections.resourceManager(rm.address).status(Dtc_V1_RMStatusRequest(), options: options) else {
                print(pad(rm.name, 11) + pad(rm.address, 17) + "down")
                continue
            }
            print(pad(rm.name, 11) + pad(rm.address, 17) + pad("up", 7) + pad("\(s.prepared)", 10) + pad("\(s.committed)", 11)
                + pad("\(s.aborted)", 9) + pad("\(s.locksHeld)", 7) + pad("\(s.staleEpochRefusals)", 22)
                + pad("\(s.conflictingDecisions)", 13) + pad("\(s.logSyncs)", 7) + pad("\(s.messagesSent)", 10)
                + "\(s.lockWaits) (\(s.lockWaitLongestMs) ms)")
        }
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}
