import DTCCore

/// One deterministic run of the real cores (coordinator, replication, promises, takeover,
/// membership, participant) over a simulated network, disk and clock: one thread, one seed, a
/// priority queue of events ordered by (time, sequence). Each partition has a replica group
/// of three nodes; a leader's records go to the group and count once a quorum holds them;
/// suspected leaders are fenced and their partitions taken over. Faults (crashes, torn
/// writes, drops, duplicates, delays, network partitions, pauses, clock jumps) strike during
/// a fault phase; then they stop and every txn must reach an outcome at every RM.
/// Invariants are checked after every event.
public final class Simulation {
    public let seed: UInt64
    public let swarm: Swarm
    /// A deliberate bug in the cores, for the mutant tests.
    let mutant: Mutant?
    var random: SplitMix64
    var now: UInt64 = 0
    private var queue = EventQueue()
    private var trace = TraceHash()
    private(set) var recentEvents: [String] = []
    /// Receives every event as it is handled (`dtc-sim --seed S --trace`).
    public var traceSink: ((String) -> Void)?

    let map: PartitionMap
    var nodes: [SimNode]
    var rms: [SimRM]
    var clients: [SimClient]
    var checker = Checker()
    public internal(set) var faults: [String: Int] = [:]
    var takeovers = 0
    /// The last requester token handed to a node (a client's submit, an RM's inquiry).
    var nextRequester: UInt64 = 0
    let rmNames: [String]
    /// Links cut by the current network partition, as (from, to).
    private var cuts: Set<[Endpoint]> = []
    static let seedStock: Int64 = 60
    static let seedBalance: Int64 = 50_000

    public convenience init(seed: UInt64) {
        self.init(seed: seed, mutant: nil)
    }

    package init(seed: UInt64, mutant: Mutant?) {
        self.seed = seed
        self.mutant = mutant
        random = SplitMix64(seed: seed)
        let swarm = Swarm(&random)
        self.swarm = swarm
        let names = (0..<swarm.nodes).map { "n\($0)" }
        map = PartitionMap(nodes: names, partitionCount: UInt32(swarm.nodes * 4), replicationFactor: 3, virtualNodes: 16)
        nodes = names.indices.map { SimNode(index: $0) }
        let rmNames = Array(["inventory", "orders", "accounts", "inventory-2", "accounts-2"].prefix(swarm.rms))
        self.rmNames = rmNames
        rms = rmNames.indices.map { SimRM(index: $0, name: rmNames[$0]) }
        clients = (0..<swarm.clients).map { SimClient(index: $0) }
    }

    public var isFaultPhase: Bool { now < swarm.faultPhase }

    /// Runs to the end and returns what happened.
    public func run() -> SimulationResult {
        for index in nodes.indices { startNode(index) }
        for index in rms.indices { startRM(index) }
        for index in clients.indices { schedule(at: UInt64(index), .clientNext(index)) }
        if swarm.crashEvery > 0 { schedule(at: swarm.crashEvery, .crashSomething) }
        if swarm.partitionEvery > 0 { schedule(at: swarm.partitionEvery, .partitionSomething) }
        if swarm.pauseEvery > 0 { schedule(at: swarm.pauseEvery, .pauseSomething) }
        if swarm.clockJumpEvery > 0 { schedule(at: swarm.clockJumpEvery, .jumpAClock) }
        let deadline = swarm.faultPhase + 60_000
        while let (time, event) = queue.pop() {
            now = time
            if now > deadline {
                checker.fail("liveness: not every txn reached an outcome at every RM within 60 s after faults stopped: \(stuck())")
                break
            }
            handle(event)
            checker.check(self)
            if !checker.violations.isEmpty || isDone { break }
        }
        if checker.violations.isEmpty { checker.checkEnd(self) }
        return SimulationResult(
            seed: seed, swarm: swarm, traceHash: trace.value, violations: checker.violations, simulatedMs: now,
            txns: clients.reduce(0) { $0 + $1.told.count }, committed: checker.committedTxns.count, faults: faults,
            takeovers: takeovers, lastEvents: recentEvents)
    }

    /// What keeps a run from finishing, for a liveness failure.
    private func stuck() -> String {
        let waiting = clients.compactMap { client in client.current.map { "c\(client.index) waits for \($0.txnID) (p\(map.partition(of: $0.txnID)), attempt \(client.attempt))" } }
        let prepared = rms.filter { ($0.machine?.preparedCount ?? 0) > 0 }.map { "\($0.name) holds \($0.machine!.preparedCount) prepared" }
        let inFlight = nodes.filter { ($0.machine?.inFlightCount ?? 1) > 0 }.map { "n\($0.index) \($0.machine.map { "has \($0.inFlightCount) in flight" } ?? "is down")" }
        let leaders = (0..<map.partitionCount).map { partition in
            "p\(partition):" + nodes.filter { $0.machine?.leads(partition) == true }.map { "n\($0.index)@\($0.machine!.coordinator.epochs[partition]!)" }.joined(separator: ",")
        }
        let leaderless = (0..<map.partitionCount).filter { partition in !nodes.contains { $0.machine?.leads(partition) == true } }.map { partition in
            "p\(partition) group \(map.replicaGroup(of: partition)): " + nodes.compactMap { node in
                node.machine.map { machine in
                    "n\(node.index)[ready \(machine.membership.isReady), knows \(machine.membership.leader(of: partition).map { "\($0.node)@\($0.epoch)" } ?? "-"), promised \(machine.promises[partition]), retry \(machine.retryTakeover(of: partition).map { "\($0)" } ?? "-"), takeover \(machine.takeoverInProgress ?? "-"), local \(localNow(node.index))]"
                }
            }.joined(separator: " ")
        }
        return (waiting + prepared + inFlight).joined(separator: "; ") + " | leaders " + leaders.joined(separator: " ") + " | " + leaderless.joined(separator: "; ")
    }

    /// After the fault phase: every client has its answers and no RM has a txn in progress (not
    /// even a decision waiting for its fsync: seed 7698 ended while one did, during a
    /// takeover, and reported the committed txn as not applied).
    private var isDone: Bool {
        !isFaultPhase && clients.allSatisfy(\.isFinished) && rms.allSatisfy { $0.machine?.activeCount == 0 }
            && nodes.allSatisfy { $0.machine?.inFlightCount == 0 }
    }

    // MARK: - Events

    enum Event {
        case deliver(Message)
        case tickNode(Int, generation: Int)
        case tickRM(Int, generation: Int)
        case syncNode(Int, generation: Int)
        case syncRM(Int, generation: Int)
        case crashSomething
        case partitionSomething
        case heal
        case pauseSomething
        case jumpAClock
        case restartNode(Int)
        case restartRM(Int)
        case clientNext(Int)
        case clientTimeout(Int, TxnID, attempt: Int)
    }

    func schedule(at time: UInt64, _ event: Event) {
        queue.push(time, event)
    }

    private func handle(_ event: Event) {
        // A paused node does nothing: what reaches it waits until it runs again.
        if let node = target(of: event), now < nodes[node].pausedUntil {
            schedule(at: nodes[node].pausedUntil, event)
            return
        }
        let text = describe(event)
        trace.add("\(now) \(text)")
        recentEvents.append("\(now) ms: \(text)")
        traceSink?("\(now) ms: \(text)")
        if recentEvents.count > 30 { recentEvents.removeFirst() }
        switch event {
        case .deliver(let message): deliver(message)
        case .tickNode(let index, let generation): tickNode(index, generation)
        case .tickRM(let index, let generation): tickRM(index, generation)
        case .syncNode(let index, let generation): syncNode(index, generation)
        case .syncRM(let index, let generation): syncRM(index, generation)
        case .crashSomething: crashSomething()
        case .partitionSomething: partitionSomething()
        case .heal: heal()
        case .pauseSomething: pauseSomething()
        case .jumpAClock: jumpAClock()
        case .restartNode(let index): startNode(index)
        case .restartRM(let index): startRM(index)
        case .clientNext(let index): clientNext(index)
        case .clientTimeout(let index, let txnID, let attempt): clientTimeout(index, txnID, attempt)
        }
    }

    private func describe(_ event: Event) -> String {
        switch event {
        case .deliver(let message): "deliver \(message.summary)"
        case .tickNode(let index, _): "tick n\(index)"
        case .tickRM(let index, _): "tick \(rmNames[index])"
        case .syncNode(let index, _): "fsync n\(index)"
        case .syncRM(let index, _): "fsync \(rmNames[index])"
        case .crashSomething: "crash"
        case .partitionSomething: "partition"
        case .heal: "heal"
        case .pauseSomething: "pause"
        case .jumpAClock: "clock jump"
        case .restartNode(let index): "restart n\(index)"
        case .restartRM(let index): "restart \(rmNames[index])"
        case .clientNext(let index): "client \(index) next"
        case .clientTimeout(let index, let txnID, let attempt): "client \(index) timeout \(txnID) attempt \(attempt)"
        }
    }

    // MARK: - Network

    private func target(of event: Event) -> Int? {
        switch event {
        case .deliver(let message):
            if case .node(let index) = message.route.to { return index }
            return nil
        case .tickNode(let index, _), .syncNode(let index, _): return index
        case .tickRM, .syncRM, .crashSomething, .partitionSomething, .heal, .pauseSomething, .jumpAClock, .restartNode, .restartRM,
            .clientNext, .clientTimeout:
            return nil
        }
    }

    /// Sends with the swarm's delay, drop and duplication (during the fault phase only); a
    /// link the current network partition cuts loses everything.
    func send(_ message: Message) {
        let route = message.route
        if !cuts.isEmpty, cuts.contains([route.from, route.to]) { return }
        if isFaultPhase, Double.random(in: 0..<1, using: &random) < swarm.dropRate {
            faults["drop", default: 0] += 1
            return
        }
        schedule(at: now + delay(), .deliver(message))
        if isFaultPhase, Double.random(in: 0..<1, using: &random) < swarm.duplicateRate {
            faults["duplicate", default: 0] += 1
            schedule(at: now + delay(), .deliver(message))
        }
    }

    /// Uniform, with a heavy tail one time in fifty.
    private func delay() -> UInt64 {
        let base = UInt64.random(in: 1...max(1, swarm.delayMax), using: &random)
        return Int.random(in: 0..<50, using: &random) == 0 ? base * 10 : base
    }

    /// Mostly quick; now and then slow, which widens the windows where a crash hurts.
    func fsyncDelay() -> UInt64 {
        Int.random(in: 0..<20, using: &random) == 0 ? UInt64.random(in: 20...300, using: &random) : UInt64.random(in: 1...4, using: &random)
    }

    private func deliver(_ message: Message) {
        switch message {
        case .submit(let txnID, let branches, let client, let node): nodeReceivesSubmit(txnID, branches, client: client, node: node)
        case .reply(let reply, let client, _): clientReceives(reply, client: client)
        case .redirect(let txnID, let leader, let client, _): clientRedirected(txnID, to: leader, client: client)
        case .retryLater(let txnID, let client, _): clientToldToRetry(txnID, client: client)
        case .prepare(let prepare, let rm): rmReceivesPrepare(prepare, rm: rm)
        case .vote(let vote, let rm, let node): nodeReceivesVote(vote, rm: rm, node: node)
        case .decision(let decision, let rm): rmReceivesDecision(decision, rm: rm, ackTo: Self.nodeIndex(decision.sender.node))
        case .ack(let ack, let rm, let node): nodeReceivesAck(ack, rm: rm, node: node)
        case .inquire(let prepared, let rm, let node): nodeReceivesInquiry(prepared, rm: rm, node: node)
        case .inquiryAnswer(let txnID, let outcome, let sender, let rm):
            rmReceivesDecision(DecisionMessage(txnID: txnID, outcome: outcome, sender: sender), rm: rm, ackTo: nil)
        case .peer(let message, let from, let to): nodeReceivesPeer(message, from: from, node: to)
        }
    }

    // MARK: - Faults

    private func crashSomething() {
        guard isFaultPhase else { return }
        let pick = Int.random(in: 0..<(nodes.count + rms.count), using: &random)
        let downFor = UInt64.random(in: 20...800, using: &random)
        if pick < nodes.count {
            if nodes[pick].machine != nil {
                crashNode(pick)
                faults["crash node", default: 0] += 1
                schedule(at: now + downFor, .restartNode(pick))
            }
        } else if rms[pick - nodes.count].machine != nil {
            crashRM(pick - nodes.count)
            faults["crash rm", default: 0] += 1
            schedule(at: now + downFor, .restartRM(pick - nodes.count))
        }
        schedule(at: now + UInt64.random(in: swarm.crashEvery / 2...swarm.crashEvery * 3 / 2, using: &random), .crashSomething)
    }

    /// Cuts links for a while: a minority of nodes from the other nodes, one direction
    /// between two nodes, an RM from some nodes, or a node from everyone.
    private func partitionSomething() {
        guard isFaultPhase else { return }
        heal()
        let nodeCount = nodes.count
        let all = nodes.indices.map { Endpoint.node($0) } + rms.indices.map { Endpoint.rm($0) } + clients.indices.map { Endpoint.client($0) }
        let kind = Int.random(in: 0..<4, using: &random)
        switch kind {
        case 0:
            let minority = Set(nodes.indices.shuffled(using: &random).prefix(Int.random(in: 1...(nodeCount - 1) / 2, using: &random)).map { Endpoint.node($0) })
            for inside in minority {
                for outside in nodes.indices.map({ Endpoint.node($0) }) where !minority.contains(outside) { cutBothWays(inside, outside) }
            }
            faults["partition nodes", default: 0] += 1
        case 1:
            let pair = nodes.indices.shuffled(using: &random).prefix(2).map { Endpoint.node($0) }
            cuts.insert([pair[0], pair[1]])
            faults["partition one-way", default: 0] += 1
        case 2:
            let rm = Endpoint.rm(Int.random(in: 0..<rms.count, using: &random))
            for node in nodes.indices where Bool.random(using: &random) { cutBothWays(rm, .node(node)) }
            faults["partition rm", default: 0] += 1
        default:
            let node = Endpoint.node(Int.random(in: 0..<nodeCount, using: &random))
            for other in all where other != node { cutBothWays(node, other) }
            faults["isolate node", default: 0] += 1
        }
        let healAt = min(now + UInt64.random(in: 100...2_000, using: &random), swarm.faultPhase)
        schedule(at: healAt, .heal)
        schedule(at: now + UInt64.random(in: swarm.partitionEvery / 2...swarm.partitionEvery * 3 / 2, using: &random), .partitionSomething)
    }

    private func cutBothWays(_ a: Endpoint, _ b: Endpoint) {
        cuts.insert([a, b])
        cuts.insert([b, a])
    }

    private func heal() {
        cuts = []
    }

    /// Stops a node for longer than the suspicion timeout (SIGSTOP, a long GC pause).
    private func pauseSomething() {
        guard isFaultPhase else { return }
        let node = Int.random(in: 0..<nodes.count, using: &random)
        nodes[node].pausedUntil = max(nodes[node].pausedUntil, now + UInt64.random(in: Self.suspicionTimeoutMs...5 * Self.suspicionTimeoutMs, using: &random))
        faults["pause node", default: 0] += 1
        schedule(at: now + UInt64.random(in: swarm.pauseEvery / 2...swarm.pauseEvery * 3 / 2, using: &random), .pauseSomething)
    }

    /// One node's clock leaps forward.
    private func jumpAClock() {
        guard isFaultPhase else { return }
        let node = Int.random(in: 0..<nodes.count, using: &random)
        nodes[node].clockOffset += UInt64.random(in: 100...3_000, using: &random)
        faults["clock jump", default: 0] += 1
        schedule(at: now + UInt64.random(in: swarm.clockJumpEvery / 2...swarm.clockJumpEvery * 3 / 2, using: &random), .jumpAClock)
    }
}

public struct SimulationResult: Sendable {
    public var seed: UInt64
    public var swarm: Swarm
    public var traceHash: UInt64
    public var violations: [String]
    public var simulatedMs: UInt64
    public var txns: Int
    public var committed: Int
    public var faults: [String: Int]
    public var takeovers: Int
    public var lastEvents: [String]
}

/// FNV-1a over the trace of handled events: the same seed must give the same value.
struct TraceHash {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ text: String) {
        for byte in text.utf8 {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
    }
}

/// A binary heap of events ordered by (time, sequence): equal times keep their order.
struct EventQueue {
    private var heap: [(time: UInt64, sequence: UInt64, event: Simulation.Event)] = []
    private var sequence: UInt64 = 0

    mutating func push(_ time: UInt64, _ event: Simulation.Event) {
        sequence += 1
        heap.append((time, sequence, event))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.less(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (UInt64, Simulation.Event)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, Self.less(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count, Self.less(heap[right], heap[smallest]) { smallest = right }
            guard smallest != parent else { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return (top.time, top.event)
    }

    private static func less(
        _ a: (time: UInt64, sequence: UInt64, event: Simulation.Event), _ b: (time: UInt64, sequence: UInt64, event: Simulation.Event)
    ) -> Bool {
        (a.time, a.sequence) < (b.time, b.sequence)
    }
}

extension Simulation {
    static let tickMs: UInt64 = 20
    static let suspicionTimeoutMs = NodeTiming.simulated.suspicionTimeoutMs
    static let timing = NodeTiming.simulated
    /// A client resubmits a txn for this long after its first submit, then gives up. It must
    /// stay well inside the retention (the dedup window), or a late submit would run the txn
    /// again.
    static let retryHorizonMs: UInt64 = 1_200

    static func nodeIndex(_ name: String) -> Int { Int(name.dropFirst())! }

    func localNow(_ index: Int) -> UInt64 { now + nodes[index].clockOffset }

    var limits: Limits { .simulated }
}
