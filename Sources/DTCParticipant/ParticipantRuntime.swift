import DTCCore
import DTCRuntime
import DTCWire
import Logging

/// The library's shell around the pure `ParticipantMachine`: runs the user's logic where the
/// machine asks for a plan, persists what it asks (group commit) and reports it durable, and
/// sends each vote and ack to the stream the machine routes it to: only as the machine
/// releases them, which is after their records are durable.
actor ParticipantRuntime {
    let name: String
    private let logic: any ParticipantLogic
    private var machine: ParticipantMachine
    private let store: ParticipantStore
    private let clock: ProcessClock
    private let logger: Logger
    /// Records made durable and not yet reported to the machine.
    private nonisolated let durableReports = CompletionBatch<[ParticipantRecord]>(empty: [])
    /// The open Exchange streams, by the route the machine knows them as.
    private var streams: [ReplyRoute: BatchQueue<ParticipantReply>] = [:]
    private var nextRoute: ReplyRoute = 0
    private let inquire: @Sendable (PreparedTxn) async -> Outcome?

    init(
        name: String, logic: any ParticipantLogic, machine: ParticipantMachine, store: ParticipantStore, logger: Logger,
        inquire: @escaping @Sendable (PreparedTxn) async -> Outcome?
    ) {
        self.name = name
        self.logic = logic
        self.machine = machine
        self.store = store
        self.clock = ProcessClock()
        self.logger = logger
        self.inquire = inquire
    }

    func recover() throws {
        let prepared = try store.preparedTxns()
        machine.recover(prepared: prepared, now: clock.now())
        logger.info("\(name): reloaded \(prepared.count) prepared txns (locks re-taken)")
    }

    /// A coordinator's stream opened: its replies go to `queue` until `close`.
    func open(_ queue: BatchQueue<ParticipantReply>) -> ReplyRoute {
        nextRoute += 1
        streams[nextRoute] = queue
        return nextRoute
    }

    func close(_ route: ReplyRoute) {
        streams[route] = nil
    }

    /// Runs a batch from one coordinator stream.
    func receive(prepares: [PrepareMessage], decisions: [DecisionMessage], from route: ReplyRoute) {
        let now = clock.now()
        var output = ParticipantOutput()
        for message in prepares {
            let keys = logic.lockKeys(for: message.branch)
            output.merge(machine.prepare(message, keys: keys, replyTo: route, now: now, ledger: ledgerEntry))
        }
        for message in decisions {
            output.merge(machine.decide(message, replyTo: route, now: now, ledger: ledgerEntry))
        }
        apply(output)
    }

    /// An outcome learned through the termination inquiry: applied like a decision, with no
    /// stream to acknowledge to.
    private func resolved(_ decision: DecisionMessage) {
        apply(machine.decide(decision, replyTo: nil, now: clock.now(), ledger: ledgerEntry))
    }

    func tick() {
        apply(machine.tick(now: clock.now()))
    }

    func status() -> Dtc_V1_RMStatusResponse {
        .with {
            $0.service = name
            $0.prepared = UInt64(machine.preparedCount)
            $0.committed = machine.counters.committed
            $0.aborted = machine.counters.aborted
            $0.refused = machine.counters.refused
            $0.locksHeld = UInt64(machine.locks.lockCount)
            $0.staleEpochRefusals = machine.counters.staleEpochRefusals
            $0.conflictingDecisions = machine.counters.conflictingDecisions
            $0.logSyncs = store.committer.syncCount
            $0.messagesSent = MessageCounter.shared.messagesSent
            $0.active = UInt64(machine.activeCount)
            $0.cachedFinished = UInt64(machine.cachedFinishedCount)
            $0.ledgerLookups = machine.counters.ledgerLookups
            $0.lockWaits = machine.counters.lockWaits
            $0.lockWaitLongestMs = machine.counters.lockWaitLongestMs
        }
    }

    // MARK: - Running the machine's output

    private func apply(_ output: ParticipantOutput) {
        var pending = output
        while !pending.isEmpty {
            send(pending.replies)
            if !pending.recordsToPersist.isEmpty { persist(pending.recordsToPersist) }
            for prepared in pending.inquiries { askCoordinator(prepared) }
            // Planning feeds the machine again; its output is run in the next round.
            let plans = pending.plans
            pending = ParticipantOutput()
            for request in plans { pending.merge(plan(request)) }
        }
    }

    private func send(_ replies: [RoutedReply]) {
        guard !replies.isEmpty else { return }
        var byRoute: [ReplyRoute: [ParticipantReply]] = [:]
        for routed in replies {
            if case .ack(let ack) = routed.reply, !ack.accepted { logger.warning("\(name): refused decision for \(ack.txnID): \(ack.reason)") }
            byRoute[routed.route, default: []].append(routed.reply)
        }
        for (route, batch) in byRoute { streams[route]?.append(contentsOf: batch) }
    }

    /// Locks are held, so the committed values cannot change before the decision.
    private func plan(_ request: PlanRequest) -> ParticipantOutput {
        let committed: [String: [UInt8]]
        do {
            committed = try store.committedValues(request.keys)
        } catch {
            fatalError("\(name): reading committed state failed, stopping to recover: \(error)")
        }
        return machine.planned(request.txnID, logic.planned(request.branch, committed: committed), now: clock.now())
    }

    private func persist(_ records: [ParticipantRecord]) {
        let reported = durableReports
        store.persist(records) { result in
            if case .failure(let error) = result { fatalError("\(self.name): persist failed, stopping to recover: \(error)") }
            if reported.add({ $0 += records }) { Task { await self.reportDurable() } }
        }
    }

    /// One round of the machine for everything a group commit made durable: the votes and acks
    /// it frees go out together, not one message per persist.
    private func reportDurable() {
        apply(machine.recordsDurable(durableReports.take(), now: clock.now()))
    }

    /// The ledger answers for finished txns the machine no longer keeps in memory. A read that
    /// fails stops the process: answering "unknown" for a txn the ledger holds could let a
    /// tombstone overwrite a COMMIT.
    private nonisolated func ledgerEntry(_ txnID: TxnID) -> LedgerEntry? {
        do {
            return try store.ledgerEntry(txnID)
        } catch {
            fatalError("\(name): reading the ledger failed, stopping to recover: \(error)")
        }
    }

    /// Termination protocol: ask the partition's leader how a long-prepared txn ended.
    private func askCoordinator(_ prepared: PreparedTxn) {
        let inquire = inquire
        Task {
            guard let outcome = await inquire(prepared) else { return }
            logger.info("\(name): resolved \(prepared.txnID) with the coordinator: \(outcome.rawValue)")
            self.resolved(DecisionMessage(txnID: prepared.txnID, outcome: outcome, sender: prepared.sender))
        }
    }
}
