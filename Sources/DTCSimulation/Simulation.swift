import DTCCore

/// One deterministic run of the real cores (`Coordinator`, `Participant`) over a simulated
/// network, disk and clock: one thread, one seed, a priority queue of events ordered by
/// (time, sequence). Faults strike during a fault phase; then they stop and every txn must
/// reach an outcome at every RM. Invariants are checked after every event.
///
/// Each partition's replica group is its single home node here (R = 1): a crashed node's
/// partitions wait for its restart and its own recovery. Replication and takeover are not yet
/// simulated; they live partly in the node shell (see the closing notes).
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

    let map: PartitionMap
    var nodes: [SimNode]
    var rms: [SimRM]
    var clients: [SimClient]
    var checker = Checker()
    public private(set) var faults: [String: Int] = [:]
    static let rmNames = ["inventory", "orders", "accounts"]
    static let seedStock: Int64 = 60
    static let seedBalance: Int64 = 50_000

    public convenience init(seed: UInt64) {
        self.init(seed: seed, mutant: nil)
    }

    package init(seed: UInt64, mutant: Mutant?) {
        self.seed = seed
        self.mutant = mutant
        random = SplitMix64(seed: seed)
        swarm = Swarm(&random)
        let names = (0..<swarm.nodes).map { "n\($0)" }
        map = PartitionMap(nodes: names, partitionCount: UInt32(swarm.nodes * 4), replicationFactor: 1, virtualNodes: 16)
        nodes = names.indices.map { SimNode(index: $0) }
        rms = Self.rmNames.indices.map { SimRM(index: $0, name: Self.rmNames[$0]) }
        clients = (0..<swarm.clients).map { SimClient(index: $0) }
    }

    public var isFaultPhase: Bool { now < swarm.faultPhase }

    /// Runs to the end and returns what happened.
    public func run() -> SimulationResult {
        for index in nodes.indices { startNode(index) }
        for index in rms.indices { startRM(index) }
        for index in clients.indices { schedule(at: UInt64(index), .clientNext(index)) }
        if swarm.crashEvery > 0 { schedule(at: swarm.crashEvery, .crashSomething) }
        let deadline = swarm.faultPhase + 60_000
        while let (time, event) = queue.pop() {
            now = time
            if now > deadline {
                checker.fail("liveness: not every txn reached an outcome at every RM within 60 s after faults stopped")
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
            lastEvents: recentEvents)
    }

    /// After the fault phase: every client has its answers and no RM holds anything prepared.
    private var isDone: Bool {
        !isFaultPhase && clients.allSatisfy(\.isFinished) && rms.allSatisfy { $0.core?.preparedCount == 0 }
            && nodes.allSatisfy { $0.core?.inFlightCount == 0 }
    }

    // MARK: - Events

    enum Event {
        case deliver(Message)
        case tickNode(Int, generation: Int)
        case tickRM(Int, generation: Int)
        case syncNode(Int, generation: Int)
        case syncRM(Int, generation: Int)
        case crashSomething
        case restartNode(Int)
        case restartRM(Int)
        case clientNext(Int)
        case clientTimeout(Int, TxnID, attempt: Int)
    }

    func schedule(at time: UInt64, _ event: Event) {
        queue.push(time, event)
    }

    private func handle(_ event: Event) {
        let text = describe(event)
        trace.add("\(now) \(text)")
        recentEvents.append("\(now) ms: \(text)")
        if recentEvents.count > 30 { recentEvents.removeFirst() }
        switch event {
        case .deliver(let message): deliver(message)
        case .tickNode(let index, let generation): tickNode(index, generation)
        case .tickRM(let index, let generation): tickRM(index, generation)
        case .syncNode(let index, let generation): syncNode(index, generation)
        case .syncRM(let index, let generation): syncRM(index, generation)
        case .crashSomething: crashSomething()
        case .restartNode(let index): startNode(index)
        case .restartRM(let index): startRM(index)
        case .clientNext(let index): clientNext(index)
        case .clientTimeout(let index, let txnID, let attempt): clientTimeout(index, txnID, attempt)
        }
    }

    private func describe(_ event: Event) -> String {
        switch event {
        case .deliver(let message): "deliver \(message)"
        case .tickNode(let index, _): "tick n\(index)"
        case .tickRM(let index, _): "tick \(Self.rmNames[index])"
        case .syncNode(let index, _): "fsync n\(index)"
        case .syncRM(let index, _): "fsync \(Self.rmNames[index])"
        case .crashSomething: "crash"
        case .restartNode(let index): "restart n\(index)"
        case .restartRM(let index): "restart \(Self.rmNames[index])"
        case .clientNext(let index): "client \(index) next"
        case .clientTimeout(let index, let txnID, let attempt): "client \(index) timeout \(txnID) attempt \(attempt)"
        }
    }

    // MARK: - Network

    /// Sends with the swarm's delay, drop and duplication (during the fault phase only).
    func send(_ message: Message) {
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
        case .submit(let txnID, let branches, let client): nodeReceivesSubmit(txnID, branches, client: client)
        case .reply(let reply, let client): clientReceives(reply, client: client)
        case .prepare(let prepare, let rm): rmReceivesPrepare(prepare, rm: rm)
        case .vote(let txnID, let vote, let rm, let node): nodeReceivesVote(txnID, vote, rm: rm, node: node)
        case .decision(let decision, let rm): rmReceivesDecision(decision, rm: rm, ackTo: Int(decision.sender.node.dropFirst()))
        case .ack(let txnID, let rm, let node): nodeReceivesAck(txnID, rm: rm, node: node)
        case .inquire(let prepared, let rm, let node): nodeReceivesInquiry(prepared, rm: rm, node: node)
        case .inquiryAnswer(let txnID, let outcome, let sender, let rm):
            rmReceivesDecision(DecisionMessage(txnID: txnID, outcome: outcome, sender: sender), rm: rm, ackTo: nil)
        }
    }

    func homeNode(of txnID: TxnID) -> Int {
        Int(map.homeLeader(of: map.partition(of: txnID)).dropFirst())!
    }

    // MARK: - Crashes

    private func crashSomething() {
        guard isFaultPhase else { return }
        let pick = Int.random(in: 0..<(nodes.count + rms.count), using: &random)
        let downFor = UInt64.random(in: 20...800, using: &random)
        if pick < nodes.count {
            if nodes[pick].core != nil {
                crashNode(pick)
                faults["crash node", default: 0] += 1
                schedule(at: now + downFor, .restartNode(pick))
            }
        } else if rms[pick - nodes.count].core != nil {
            crashRM(pick - nodes.count)
            faults["crash rm", default: 0] += 1
            schedule(at: now + downFor, .restartRM(pick - nodes.count))
        }
        schedule(at: now + UInt64.random(in: swarm.crashEvery / 2...swarm.crashEvery * 3 / 2, using: &random), .crashSomething)
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
