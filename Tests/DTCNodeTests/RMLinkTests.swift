import DTCCore
import Testing

@testable import DTCNode

/// A backlog of PREPAREs goes to a participant in messages it accepts, in order.
@Suite struct RMLinkTests {
    private func prepare(_ id: Int, payloadBytes: Int) -> RMLink.Outgoing {
        let branch = Branch(rm: "tickets", kind: "book", payload: [UInt8](repeating: 1, count: payloadBytes))
        return .prepare(PrepareMessage(
            txnID: TxnID("t\(id)"), stamp: UInt64(id), sender: Sender(partition: 0, epoch: .zero, node: "n1"), branch: branch,
            participants: ["tickets"]))
    }

    @Test func aLargeBacklogIsSplitIntoBoundedMessagesInOrder() {
        let batch = (0..<200).map { prepare($0, payloadBytes: 65_536) }
        let requests = RMLink.requests(batch)
        #expect(requests.count > 1)
        #expect(requests.allSatisfy { $0.prepares.reduce(0) { $0 + $1.branch.payload.count } <= RMLink.requestPayloadBytesMax })
        #expect(requests.flatMap(\.prepares).map(\.txnID) == (0..<200).map { "t\($0)" })
    }

    @Test func aSmallBatchIsOneMessage() {
        let batch = (0..<100).map { prepare($0, payloadBytes: 64) }
        #expect(RMLink.requests(batch).count == 1)
        #expect(RMLink.requests([]).isEmpty)
    }
}
