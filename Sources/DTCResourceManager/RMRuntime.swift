import DTCClient
import DTCCore
import DTCWire
import Foundation
import Logging

/// The RM's shell around the pure `Participant`: reads committed values for txns whose locks
/// were granted, persists what the core asks (group commit), and answers votes and acks only
/// as the core releases them, which is after the records are durable.
actor RMRuntime {
    let name: String
    let service: ServiceKind
    private var participant: Participant
    private let store: RMStore
    private let clock: ProcessClock
    private let logger: Logger
    private var voteWaiters: [TxnID: [ReplySink]] = [:]
    private var ackWaiters: [TxnID: [ReplySink]] = [:]
    private let inquire: @Sendable (PreparedTxn) async -> Outcome?

    init(name: String, service: ServiceKind, participant: Participant, store: RMStore, logger: Logger, inquire: @escaping @Sendable (PreparedTxn) async -> Outcome?) {
        self.name = name
        self.service = service
        self.participant = participant
        self.store = store
        self.clock = ProcessClock()
        self.logger = logger
        self.inquire = inquire
    }

    func recover() throws {
        let (prepared, finished) = try store.recoveryState()
        participant.recover(prepared: prepared, finished: finished, now: clock.now())
        logger.info("\(name): reloaded \(prepared.count) prepared txns (locks re-taken), \(finished.count) finished")
    }

    /// Runs a batch from one coordinator; each vote and ack goes to `sink` when the core
    /// releases it (a YES only after the prepared state is durable).
    func receive(prepares: [PrepareMessage], decisions: [DecisionMessage], replyTo sink: ReplySink) {
        let now = clock.now()
        for message in prepares {
            guard message.branch.op.service == service else {
                sink.send(.vote(VoteReply(txnID: message.txnID, vote: .no(reason: "\(message.branch.op.name) is not an operation of \(name) (\(service.rawValue))"))))
                continue
            }
            voteWaiters[message.txnID, default: []].append(sink)
            apply(participant.prepare(message, now: now))
        }
        for message in decisions {
            ackWaiters[message.txnID, default: []].append(sink)
            apply(participant.decide(message, now: now))
        }
    }

    func tick() {
        apply(participant.tick(now: clock.now()))
    }

    func status() -> Dtc_V1_RMStatusResponse {
        .with {
            $0.service = service.rawValue
            $0.prepared = UInt64(participant.preparedCount)
            $0.committed = participant.counters.committed
            $0.aborted = participant.counters.aborted
            $0.locksHeld = UInt64(participant.locks.lockCount)
            $0.staleEpochRefusals = participant.counters.staleEpochRefusals
            $0.conflictingDecisions = participant.counters.conflictingDecisions
            $0.logSyncs = store.committer.syncCount
        }
    }

    // MARK: - Running the core's output

    private func apply(_ output: ParticipantOutput) {
        for vote in output.votes {
            for sink in voteWaiters.removeValue(forKey: vote.txnID) ?? [] { sink.send(.vote(vote)) }
        }
        for ack in output.acks {
            if !ack.accepted { logger.warning("\(name): refused decision for \(ack.txnID): \(ack.reason)") }
            for sink in ackWaiters.removeValue(forKey: ack.txnID) ?? [] { sink.send(.ack(ack)) }
        }
        for record in output.recordsToPersist { persist(record) }
        for (txnID, keys) in output.reads.sorted(by: { $0.key < $1.key }) { read(txnID, keys) }
        for prepared in output.inquiries { askCoordinator(prepared) }
    }

    /// Locks are held, so the committed values cannot change before the decision.
    private func read(_ txnID: TxnID, _ keys: [String]) {
        guard let op = participant.operation(of: txnID) else { return }
        let plan: Result<[Write], PlanRefusal>
        do {
            plan = ServiceLogic.plan(op, committed: try store.committedValues(keys))
        } catch {
            fatalError("\(name): reading committed state failed: \(error)")
        }
        apply(participant.planned(txnID, plan, now: clock.now()))
    }

    private func persist(_ record: ParticipantRecord) {
        store.persist(record) { result in
            if case .failure(let error) = result { fatalError("dtc-rm: persist failed, stopping to recover: \(error)") }
            Task { await self.durable(record) }
        }
    }

    private func durable(_ record: ParticipantRecord) {
        switch record {
        case .prepared(let prepared): apply(participant.preparedDurable(prepared.txnID, now: clock.now()))
        case .committed(let txnID, _, _, _), .aborted(let txnID, _, _): apply(participant.decisionDurable(txnID, now: clock.now()))
        }
    }

    /// Termination protocol: ask the partition's leader how a long-prepared txn ended.
    private func askCoordinator(_ prepared: PreparedTxn) {
        let inquire = inquire
        Task {
            guard let outcome = await inquire(prepared) else { return }
            logger.info("\(name): resolved \(prepared.txnID) with the coordinator: \(outcome.rawValue)")
            self.receive(prepares: [], decisions: [DecisionMessage(txnID: prepared.txnID, outcome: outcome, sender: prepared.sender)], replyTo: .discard)
        }
    }
}

/// Where an RM's replies to one coordinator go: the exchange stream's outgoing queue.
struct ReplySink: Sendable {
    enum Reply: Sendable {
        case vote(VoteReply)
        case ack(AckReply)
    }

    let queue: BatchQueue<Reply>?

    static let discard = ReplySink(queue: nil)

    func send(_ reply: Reply) { queue?.append(contentsOf: [reply]) }
}
