import DTCClient
import DTCCore
import DTCStorage
import DTCWire
import Foundation
import GRPCCore
import Logging

/// The node's shell around the pure `Coordinator`: it feeds events in, writes the records the
/// core asks for, and releases messages and replies only once those records are durable.
actor NodeRuntime: RMReplyHandler {
    let name: String
    let config: ClusterConfig
    private var coordinator: Coordinator
    private let log: DurableLog
    private let links: [String: RMLink]
    private let clock: NodeClock
    private let logger: Logger
    private let map: PartitionMap

    /// Clients waiting for a txn's outcome (Submit, Resolve).
    private var waiters: [TxnID: [CheckedContinuation<TxnStatus, Never>]] = [:]
    /// Sync appends issued and made durable, counted; a release waits for all issued before it.
    private var syncsIssued: UInt64 = 0
    private var syncsDurable: UInt64 = 0
    private var held: [(after: UInt64, release: Release)] = []

    private enum Release {
        case messages([Envelope])
        case replies([ClientReply])
        case waiter(CheckedContinuation<Void, Never>)
    }

    init(name: String, config: ClusterConfig, coordinator: Coordinator, log: DurableLog, links: [String: RMLink], clock: NodeClock, logger: Logger) {
        self.name = name
        self.config = config
        self.coordinator = coordinator
        self.log = log
        self.links = links
        self.clock = clock
        self.logger = logger
        self.map = config.partitionMap
    }

    // MARK: - Client requests

    enum SubmitAnswer: Sendable {
        case status(TxnStatus, partition: UInt32)
        case redirect(Dtc_V1_Redirect)
        case overloaded(Int)
    }

    func submit(_ txnID: TxnID, branches: [Branch]) async -> SubmitAnswer {
        let partition = map.partition(of: txnID)
        guard coordinator.leads(partition) else { return .redirect(redirect(for: partition)) }
        switch coordinator.submit(txnID, branches: branches, partition: partition, now: clock.now()) {
        case .overloaded(let inFlight):
            return .overloaded(inFlight)
        case .accepted(let output):
            let status = await withCheckedContinuation { continuation in
                waiters[txnID, default: []].append(continuation)
                apply(output)
            }
            return .status(status, partition: partition)
        }
    }

    /// Termination protocol: the outcome for an RM that holds `txnID` prepared. PREPARING means
    /// "still undecided, ask again".
    func resolve(_ txnID: TxnID, partition: UInt32) async -> SubmitAnswer {
        guard coordinator.leads(partition) else { return .redirect(redirect(for: partition)) }
        guard let output = coordinator.resolve(txnID, partition: partition) else {
            return .status(.preparing, partition: partition)
        }
        let status = await withCheckedContinuation { continuation in
            waiters[txnID, default: []].append(continuation)
            apply(output)
        }
        return .status(status, partition: partition)
    }

    enum TxnAnswer: Sendable {
        case snapshot(TxnSnapshot)
        case redirect(Dtc_V1_Redirect)
        case notFound
    }

    /// A txn's state, answered only once everything appended so far is durable, so a decision
    /// is never reported before it is on disk.
    func txn(_ txnID: TxnID) async -> TxnAnswer {
        let partition = map.partition(of: txnID)
        guard coordinator.leads(partition) else { return .redirect(redirect(for: partition)) }
        guard let snapshot = coordinator.snapshot(of: txnID) else { return .notFound }
        await withCheckedContinuation { continuation in
            hold(.waiter(continuation))
        }
        return .snapshot(snapshot)
    }

    func status() -> Dtc_V1_StatusResponse {
        var response = Dtc_V1_StatusResponse()
        response.node = name
        response.partitions = coordinator.epochs.keys.sorted().map { partition in
            .with {
                $0.partition = partition
                $0.epochCounter = coordinator.epochs[partition]!.counter
                $0.epochNode = coordinator.epochs[partition]!.node
                $0.inFlight = UInt64(coordinator.inFlightCount(partition: partition))
            }
        }
        response.inFlight = UInt64(coordinator.inFlightCount)
        response.committed = coordinator.counters.committed
        response.aborted = coordinator.counters.aborted
        response.recovered = coordinator.counters.recovered
        response.logRecords = UInt64((try? log.recordCount()) ?? 0)
        response.logSyncs = log.syncCount
        response.uptimeMs = clock.elapsedMillis()
        return response
    }

    // MARK: - Events from RMs and time

    func votesReceived(_ votes: [(TxnID, Vote)], from rm: String) {
        let now = clock.now()
        var output = CoordinatorOutput()
        for (txnID, vote) in votes {
            output.merge(coordinator.voteReceived(vote, txn: txnID, from: rm, now: now))
        }
        apply(output)
    }

    func acksReceived(_ acks: [(TxnID, accepted: Bool, reason: String)], from rm: String) {
        var output = CoordinatorOutput()
        for (txnID, accepted, reason) in acks {
            if !accepted { logger.warning("\(rm) refused the decision for \(txnID): \(reason)") }
            output.merge(coordinator.ackReceived(txn: txnID, from: rm))
        }
        apply(output)
    }

    func tick() {
        apply(coordinator.tick(now: clock.now()))
    }

    /// Applies the output of recovery (called once before serving).
    func start(recoveredFrom records: [PartitionRecord]) {
        let output = coordinator.recover(records, now: clock.now())
        logger.info("recovered \(coordinator.counters.recovered) unfinished txns from \(records.count) log records")
        apply(output)
    }

    // MARK: - Persist before send

    /// Queues the records, sends what depends on nothing unsynced, and holds the rest until
    /// every sync append issued so far is durable.
    private func apply(_ output: CoordinatorOutput) {
        if !output.recordsToAppend.isEmpty {
            let records = output.recordsToAppend.map { (partition: $0.partition, payload: $0.record.encoded()) }
            if output.mustSync {
                syncsIssued += 1
                let ticket = syncsIssued
                log.append(records) { result in
                    if case .failure(let error) = result {
                        fatalError("dtc-node: log append failed, stopping to recover from the log: \(error)")
                    }
                    Task { await self.markDurable(ticket) }
                }
            } else {
                log.append(records) { result in
                    if case .failure(let error) = result {
                        fatalError("dtc-node: lazy log append failed, stopping to recover from the log: \(error)")
                    }
                }
            }
        }
        send(output.messagesNow)
        if !output.messagesAfterAppend.isEmpty { hold(.messages(output.messagesAfterAppend)) }
        if !output.replies.isEmpty { hold(.replies(output.replies)) }
    }

    private func hold(_ release: Release) {
        if syncsDurable >= syncsIssued {
            perform(release)
        } else {
            held.append((syncsIssued, release))
        }
    }

    private func markDurable(_ ticket: UInt64) {
        syncsDurable = max(syncsDurable, ticket)
        let ready = held.prefix { $0.after <= syncsDurable }
        held.removeFirst(ready.count)
        for item in ready { perform(item.release) }
    }

    private func perform(_ release: Release) {
        switch release {
        case .messages(let envelopes): send(envelopes)
        case .replies(let replies):
            for reply in replies {
                for waiter in waiters.removeValue(forKey: reply.txnID) ?? [] { waiter.resume(returning: reply.status) }
            }
        case .waiter(let continuation): continuation.resume()
        }
    }

    private func send(_ envelopes: [Envelope]) {
        guard !envelopes.isEmpty else { return }
        var prepares: [String: [PrepareMessage]] = [:]
        var decisions: [String: [DecisionMessage]] = [:]
        for envelope in envelopes {
            switch envelope {
            case .prepare(let rm, let message): prepares[rm, default: []].append(message)
            case .decision(let rm, let message): decisions[rm, default: []].append(message)
            }
        }
        for rm in Set(prepares.keys).union(decisions.keys) {
            guard let link = links[rm] else {
                preconditionFailure("no link to RM \(rm); branches are validated against cluster.json")
            }
            link.send(prepares[rm] ?? [], decisions[rm] ?? [])
        }
    }

    private func redirect(for partition: UInt32) -> Dtc_V1_Redirect {
        let leader = map.homeLeader(of: partition)
        return .with {
            $0.node = leader
            $0.address = config.node(named: leader)?.address ?? ""
            $0.partition = partition
        }
    }
}

/// Milliseconds for the core: wall-clock aligned at start (so start stamps of different nodes
/// are comparable), then monotonic (so timers never jump backwards).
struct NodeClock: Sendable {
    private let startWallMillis: UInt64
    private let start: ContinuousClock.Instant

    init() {
        startWallMillis = UInt64(Date().timeIntervalSince1970 * 1000)
        start = ContinuousClock.now
    }

    func elapsedMillis() -> UInt64 {
        let elapsed = ContinuousClock.now - start
        return UInt64(elapsed.components.seconds) * 1000 + UInt64(elapsed.components.attoseconds / 1_000_000_000_000_000)
    }

    func now() -> UInt64 { startWallMillis + elapsedMillis() }
}
