import DTCWire
import GRPCCore

/// The admin RPC that sets and shows a process's faults. Every dtc-node and dtc-rm serves it;
/// it refuses everything unless the process was started with --allow-fault-injection.
public struct AdminService: Dtc_V1_Admin.SimpleServiceProtocol {
    /// Nil when fault injection is off.
    let faults: FaultInjector?
    let process: String

    public init(process: String, faults: FaultInjector?) {
        self.process = process
        self.faults = faults
    }

    public func setFaults(request: Dtc_V1_SetFaultsRequest, context: ServerContext) async throws -> Dtc_V1_FaultsResponse {
        let faults = try enabled()
        let link = request.hasLink ? request.link : nil
        let cutOff = request.hasCutOff ? request.cutOff : nil
        do throws(FaultRuleError) {
            let direction = try cutOff.map { cut throws(FaultRuleError) in try CutDirection(wire: cut.direction) }
            try faults.set(
                link: link.map { ($0.drop, $0.delayMs, $0.jitterMs, $0.duplicate, $0.hasSeed ? $0.seed : nil) },
                cutOff: cutOff.map { ($0.from, direction ?? .both) })
        } catch {
            throw RPCError(code: .invalidArgument, message: error.description)
        }
        return Self.response(faults)
    }

    public func getFaults(request: Dtc_V1_GetFaultsRequest, context: ServerContext) async throws -> Dtc_V1_FaultsResponse {
        Self.response(try enabled())
    }

    private func enabled() throws -> FaultInjector {
        guard let faults else {
            throw RPCError(
                code: .failedPrecondition,
                message: "\(process) was started without --allow-fault-injection: its fault injection is disabled")
        }
        return faults
    }

    static func response(_ faults: FaultInjector) -> Dtc_V1_FaultsResponse {
        let (rules, seed, counters) = faults.state
        return .with {
            $0.process = faults.process
            $0.link = .with {
                $0.drop = rules.drop
                $0.delayMs = rules.delayMs
                $0.jitterMs = rules.jitterMs
                $0.duplicate = rules.duplicate
                $0.seed = seed
            }
            $0.cutOff = .with {
                $0.from = rules.cutOff.sorted()
                $0.direction = rules.cutDirection.wire
            }
            $0.counters = .with {
                $0.dropped = counters.dropped
                $0.delayed = counters.delayed
                $0.duplicated = counters.duplicated
                $0.cut = counters.cut
            }
        }
    }
}

extension CutDirection {
    public init(wire: Dtc_V1_CutDirection) throws(FaultRuleError) {
        switch wire {
        case .both: self = .both
        case .in: self = .in
        case .out: self = .out
        case .UNRECOGNIZED(let value): throw FaultRuleError("direction: \(value) is not both, in or out")
        }
    }

    public var wire: Dtc_V1_CutDirection {
        switch self {
        case .both: .both
        case .in: .in
        case .out: .out
        }
    }
}
