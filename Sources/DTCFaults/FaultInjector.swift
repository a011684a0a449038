import Synchronization

/// One process's faults, shared by its gRPC client and server interceptors and its admin
/// service. Off (no rules) until the admin RPC sets some.
public final class FaultInjector: Sendable {
    /// This process's name in the cluster config; sent to peers in the `dtc-from` header.
    public let process: String
    /// Every process in the cluster config.
    public let processes: Set<String>
    /// Peer address (host:port) to process name, for the client side.
    private let names: [String: String]
    private let model: Mutex<FaultModel>

    public init(process: String, addresses: [String: String]) {
        self.process = process
        self.names = addresses
        self.processes = Set(addresses.values).union([process])
        self.model = Mutex(FaultModel(seed: FaultModel.seed(for: process)))
    }

    /// The process listening at `address`, if it is one of the cluster's.
    public func process(atAddress address: String) -> String? { names[address] }

    public func fate(_ direction: LinkDirection, peer: String?, canDuplicate: Bool) -> MessageFate {
        model.withLock { $0.fate(direction, peer: peer, canDuplicate: canDuplicate) }
    }

    public func isCut(_ direction: LinkDirection, peer: String?) -> Bool {
        model.withLock { $0.isCut(direction, peer: peer) }
    }

    public var state: (rules: FaultRules, seed: UInt64, counters: FaultCounters) {
        model.withLock { ($0.rules, $0.seed, $0.counters) }
    }

    /// Applies the parts given, after checking both, so that bad input changes nothing.
    public func set(
        link: (drop: Double, delayMs: UInt64, jitterMs: UInt64, duplicate: Double, seed: UInt64?)?,
        cutOff: (names: [String], direction: CutDirection)?
    ) throws(FaultRuleError) {
        if let link { try FaultRules.checkLink(drop: link.drop, delayMs: link.delayMs, jitterMs: link.jitterMs, duplicate: link.duplicate) }
        if let cutOff { try FaultRules.checkCutOff(cutOff.names, process: process, known: processes) }
        let process = process
        model.withLock { model in
            if let link {
                model.setLink(
                    drop: link.drop, delayMs: link.delayMs, jitterMs: link.jitterMs, duplicate: link.duplicate,
                    seed: link.seed ?? FaultModel.seed(for: process))
            }
            if let cutOff { model.setCutOff(Set(cutOff.names), direction: cutOff.direction) }
        }
    }
}
