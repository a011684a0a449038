import DTCRuntime
import GRPCCore

extension Connections {
    /// A dtc process's connections (dtc-node's, and a participant's through DTCParticipant).
    /// With `faults` (fault injection on), the client for an address suffers them as the link to
    /// the process listening there; without, every call just names `sender`.
    public convenience init(sender: String, faults: FaultInjector?) {
        guard let faults else {
            self.init(sender: sender)
            return
        }
        self.init(interceptors: { address in
            [MessageCounter.shared.clientInterceptor, FaultClientInterceptor(faults: faults, target: faults.process(atAddress: address))]
        })
    }
}
