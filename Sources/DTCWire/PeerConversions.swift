import DTCCore
import Foundation

/// Node-to-node messages (`PeerMessage`) to and from the Replica service's wire types.

extension Dtc_V1_PartitionEpoch {
    init(_ partition: UInt32, _ epoch: Epoch, leader: String = "") {
        self.init()
        self.partition = partition
        epochCounter = epoch.counter
        epochNode = epoch.node
        self.leader = leader
    }

    var epoch: Epoch { Epoch(counter: epochCounter, node: epochNode) }
}

private func epochList(_ epochs: [UInt32: Epoch], leader: String = "") -> [Dtc_V1_PartitionEpoch] {
    epochs.sorted { $0.key < $1.key }.map { Dtc_V1_PartitionEpoch($0.key, $0.value, leader: leader) }
}

private func epochMap(_ list: [Dtc_V1_PartitionEpoch]) -> [UInt32: Epoch] {
    Dictionary(list.map { ($0.partition, $0.epoch) }, uniquingKeysWith: max)
}

extension Dtc_V1_AppendBatch {
    public init(_ message: AppendMessage, from leader: String) {
        self.init()
        self.leader = leader
        session = message.session
        sequence = message.sequence
        appends = message.appends.map { append in
            .with {
                $0.partition = append.partition
                $0.epochCounter = append.epoch.counter
                $0.epochNode = append.epoch.node
                $0.ticket = append.ticket
                $0.records = append.records.map { Data($0.encoded()) }
            }
        }
    }
}

extension AppendMessage {
    public init(wire: Dtc_V1_AppendBatch) throws(RecordDecodingError) {
        var appends: [PartitionAppend] = []
        for append in wire.appends {
            var records: [LogRecord] = []
            for bytes in append.records { records.append(try LogRecord(decoding: [UInt8](bytes))) }
            appends.append(
                PartitionAppend(
                    partition: append.partition, epoch: Epoch(counter: append.epochCounter, node: append.epochNode), ticket: append.ticket,
                    records: records))
        }
        self.init(session: wire.session, sequence: wire.sequence, appends: appends)
    }
}

extension Dtc_V1_AppendAcks {
    public init(_ acks: [AppendAck]) {
        self.init()
        self.acks = acks.map { ack in
            .with {
                $0.session = ack.session
                $0.partition = ack.partition
                $0.ticket = ack.ticket
                switch ack.kind {
                case .accepted:
                    $0.accepted = true
                case .refused(let promised):
                    $0.promisedCounter = promised.counter
                    $0.promisedNode = promised.node
                case .gap:
                    $0.gap = true
                }
            }
        }
    }

    public var decoded: [AppendAck] {
        acks.map { ack in
            let kind: AppendAck.Kind =
                ack.gap ? .gap : ack.accepted ? .accepted : .refused(promised: Epoch(counter: ack.promisedCounter, node: ack.promisedNode))
            return AppendAck(session: ack.session, partition: ack.partition, ticket: ack.ticket, kind: kind)
        }
    }
}

extension Dtc_V1_HeartbeatRequest {
    public init(_ heartbeat: Heartbeat, from node: String) {
        self.init()
        self.node = node
        leads = epochList(heartbeat.leads, leader: node)
    }

    public var heartbeat: Heartbeat { Heartbeat(leads: epochMap(leads), promised: [:], isReady: true, isReply: false) }
}

extension Dtc_V1_HeartbeatResponse {
    public init(_ heartbeat: Heartbeat, from node: String) {
        self.init()
        self.node = node
        leads = epochList(heartbeat.leads, leader: node)
        promised = epochList(heartbeat.promised)
        ready = heartbeat.isReady
    }

    public var heartbeat: Heartbeat { Heartbeat(leads: epochMap(leads), promised: epochMap(promised), isReady: ready, isReply: true) }
}

extension Dtc_V1_FenceRequest {
    public init(_ request: FenceRequest, from candidate: String) {
        self.init()
        self.candidate = candidate
        attempt = request.attempt
        partitions = epochList(request.epochs)
    }

    public var request: FenceRequest { FenceRequest(attempt: attempt, epochs: epochMap(partitions)) }
}

extension Dtc_V1_FenceResponse {
    public init(_ answer: FenceAnswer) {
        self.init()
        attempt = answer.attempt
        let promised = answer.promised.sorted { $0.key < $1.key }.map { partition, rows in
            Dtc_V1_PartitionPromise.with {
                $0.partition = partition
                $0.promised = true
                $0.rows = rows.map { Data($0.encoded()) }
            }
        }
        let refused = answer.refused.sorted { $0.key < $1.key }.map { partition, epoch in
            Dtc_V1_PartitionPromise.with {
                $0.partition = partition
                $0.promised = false
                $0.promisedCounter = epoch.counter
                $0.promisedNode = epoch.node
            }
        }
        promises = promised + refused
    }

    public func answer() throws -> FenceAnswer {
        var promised: [UInt32: [TxnRow]] = [:]
        var refused: [UInt32: Epoch] = [:]
        for promise in promises {
            if promise.promised {
                promised[promise.partition] = try promise.rows.map { try TxnRow(decoding: [UInt8]($0)) }
            } else {
                refused[promise.partition] = Epoch(counter: promise.promisedCounter, node: promise.promisedNode)
            }
        }
        return FenceAnswer(attempt: attempt, promised: promised, refused: refused)
    }
}
