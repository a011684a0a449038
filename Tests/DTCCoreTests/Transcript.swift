// Golden transcripts for `NodeMachine`, in the manner of etcd-io/raft's testdata/*.txt.
//
// Each file in Transcripts/ is a scenario: `# comment` lines say what it shows, `> command`
// lines drive a tiny deterministic cluster of NodeMachines, and the lines after a command are
// what that command made the nodes do. The test runs every file and compares what the
// commands print with the text in the file; on a mismatch it prints a diff. Run with
// DTC_UPDATE_TRANSCRIPTS=1 to rewrite the files with what the commands print now (then read
// the diff before committing it). DTC_TRANSCRIPT_MUTANT=<mutant> runs every node with that
// `Mutant` switched on, to see which transcripts notice the bug.
//
// The cluster. Nodes share one clock (it starts at 0 and moves only in `tick` and `run`).
// Between every two endpoints (node or RM) there is a FIFO link; a message waits on its link
// until a command delivers it. A cut link loses what is sent on it; a crashed node's links
// lose what is queued on them; a paused node gets nothing delivered (its messages wait) and
// no ticks; a leader that restarts its stream to a follower drops the appends queued on it.
// Every node has a disk of synced and pending writes: a write stays pending until the node's
// disk syncs (`durable`, or `stabilize`/`run` for disks left on auto), and only synced writes
// survive a crash or are seen by the node's `log` reads. There is one partition, p0, whose
// replica group holds every node (replication factor 3), in the ring's order.
//
// Commands (durations are `20ms`, `1s` or a number of ms; `a→b` may be written `a->b`):
//   cluster n1 n2 n3 [rms inventory orders] [retention D]   start the nodes (at 0 ms), name
//                   the RMs, shorten the retention of ENDed rows (3.5 s, as in dtc-sim)
//   tick [D]        advance D (default 20ms) in 20 ms steps, ticking every live, unpaused
//                   node each step; nothing is delivered and no disk syncs
//   run D           like tick, but after each step `stabilize`
//   stabilize       deliver and sync (disks on auto) until nothing moves
//   deliver [a→b]   deliver what is queued (on one link), and what that sends, until quiet;
//                   nothing syncs
//   drop a→b        lose what is queued on a link
//   durable n...    sync these nodes' disks; each node hears `.durable` of its last write
//   disk n manual|auto   whether stabilize and run sync n's disk
//   crash n         the machine is gone; pending writes and queued messages are lost
//   wipe n          a crashed node loses its synced data too (an empty restart follows)
//   restart n       a new machine from the synced promises, incarnation + 1
//   pause n / resume n   a resumed node ticks at once, before anything is delivered to it
//   partition a | b c    cut every link between the two sides (RMs stay reachable)
//   cut a→b         cut one direction of one link
//   heal            restore every link
//   submit n t rm...     a client submits txn t with one branch per RM at node n
//   resolve n t     an RM asks node n for t's outcome (termination protocol)
//   query n t       a client asks node n for t's state
//   vote rm t yes|no     the RM votes on t to the node whose PREPARE it holds
//   ack rm t        the RM acknowledges t's decision to the node that sent it
//   rms auto|manual      auto: RMs vote YES to each PREPARE and ack each decision delivered
//   show heartbeats / hide heartbeats   heartbeats are hidden by default (they are many)
//   mutant name|none     switch a `Mutant` on for every node (this run only)
//   status          per node: what it leads or knows of p0's leader, its promise, txns in
//                   flight, readiness, a takeover under way or held off, writes pending
//   log n           the rows of p0 in n's synced log
//
// Output. A step's actions print as `actor: what` or `from→to: message`, in this order:
// observations, writes, stream restarts, peer messages (by destination, each link's in
// order), RM messages, answers. Observations that other lines already show (tickets issued,
// acks claimed, decisions released) are left out. Lines of `tick` and `run` start with the
// clock (`@420ms`). A message sent on a cut link or to a crashed node ends with `(lost)`.
// Deliveries print nothing themselves. Sessions print as `s<incarnation>.<count>`,
// tickets as `#<number within the leader's tenure>`, epochs as `counter.node`, records as
// `start t1`, `commit t1@1.2`, `abort t1@1.2 (cause)`, `end t1`, `trim t1`.

import Foundation
import Testing

@testable import DTCCore

// MARK: - The test

@Suite struct TranscriptTests {
    static let directory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("Transcripts")

    static let files: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
        .filter { $0.hasSuffix(".txt") }.sorted()

    @Test func thereAreTranscripts() {
        #expect(Self.files.count >= 8, "found \(Self.files) in \(Self.directory.path)")
    }

    @Test(arguments: files) func transcript(_ file: String) throws {
        let url = Self.directory.appendingPathComponent(file)
        let expected = try String(contentsOf: url, encoding: .utf8)
        let script = TranscriptScript(parsing: expected)
        var cluster = TranscriptCluster(mutant: ProcessInfo.processInfo.environment["DTC_TRANSCRIPT_MUTANT"].flatMap(Mutant.init(rawValue:)))
        let actual = script.rendered(outputs: script.blocks.map { cluster.execute($0.command) })
        guard actual != expected else { return }
        if ProcessInfo.processInfo.environment["DTC_UPDATE_TRANSCRIPTS"] == "1" {
            try actual.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        Issue.record("\(file) differs (- expected, + actual; DTC_UPDATE_TRANSCRIPTS=1 rewrites it):\n\(lineDiff(expected, actual))")
    }
}

// MARK: - Files

/// A transcript file: blocks of comment lines, a command and its expected output. A block's
/// output ends at a blank line; rendering puts one blank line between blocks. The test
/// compares whole files, so the expected output is skipped here, not kept.
struct TranscriptScript {
    struct Block {
        var preamble: [String]
        var command: String
    }

    var blocks: [Block] = []
    var trailing: [String] = []

    init(parsing text: String) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var preamble: [String] = []
        var index = 0
        while index < lines.count {
            let line = lines[index]
            index += 1
            guard line.hasPrefix("> ") else {
                preamble.append(line)
                continue
            }
            while index < lines.count, !lines[index].isEmpty, !lines[index].hasPrefix(">"), !lines[index].hasPrefix("#") {
                index += 1
            }
            if index < lines.count, lines[index].isEmpty { index += 1 }
            blocks.append(Block(preamble: preamble, command: String(line.dropFirst(2))))
            preamble = []
        }
        trailing = preamble
    }

    func rendered(outputs: [[String]]) -> String {
        var lines: [String] = []
        for (index, block) in blocks.enumerated() {
            if index > 0 { lines.append("") }
            lines += block.preamble + ["> " + block.command] + outputs[index]
        }
        if !trailing.isEmpty { lines += [""] + trailing }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// A line diff (longest common subsequence; transcripts are small) with two lines of context.
func lineDiff(_ old: String, _ new: String) -> String {
    let a = old.split(separator: "\n", omittingEmptySubsequences: false)
    let b = new.split(separator: "\n", omittingEmptySubsequences: false)
    var common = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in stride(from: a.count - 1, through: 0, by: -1) {
        for j in stride(from: b.count - 1, through: 0, by: -1) {
            common[i][j] = a[i] == b[j] ? common[i + 1][j + 1] + 1 : max(common[i + 1][j], common[i][j + 1])
        }
    }
    var edits: [(mark: Character, line: Substring)] = []
    var (i, j) = (0, 0)
    while i < a.count || j < b.count {
        if i < a.count, j < b.count, a[i] == b[j] {
            edits.append((" ", a[i])); i += 1; j += 1
        } else if j < b.count, i == a.count || common[i][j + 1] >= common[i + 1][j] {
            edits.append(("+", b[j])); j += 1
        } else {
            edits.append(("-", a[i])); i += 1
        }
    }
    let changed = edits.indices.filter { edits[$0].mark != " " }
    let shown = Set(changed.flatMap { max(0, $0 - 2)...min(edits.count - 1, $0 + 2) })
    var out: [String] = []
    for index in edits.indices where shown.contains(index) {
        if index > 0, !shown.contains(index - 1), !out.isEmpty { out.append("…") }
        out.append("\(edits[index].mark) \(edits[index].line)")
    }
    return out.joined(separator: "\n")
}

// MARK: - The cluster

/// One direction between two endpoints (nodes or RMs).
struct TranscriptLink: Hashable, Comparable, CustomStringConvertible {
    var from: String
    var to: String

    static func < (lhs: Self, rhs: Self) -> Bool { (lhs.from, lhs.to) < (rhs.from, rhs.to) }

    var description: String { "\(from)→\(to)" }
}

/// What travels on a link.
enum TranscriptPacket {
    case peer(PeerMessage)
    case toRM(Envelope)
    case vote(TxnID, Vote)
    case ack(TxnID)

    var isHeartbeat: Bool {
        if case .peer(.heartbeat) = self { return true }
        return false
    }

    var isAppend: Bool {
        if case .peer(.append) = self { return true }
        return false
    }
}

struct TranscriptNode {
    var machine: NodeMachine?
    var synced: [NodeWrite] = []
    var pending: [NodeWriteBatch] = []
    var incarnation: UInt64 = 1
    var isPaused = false
    var syncsByItself = true

    /// The rows of a partition in the synced log (a TRIM deletes its row).
    func rows(of partition: UInt32) -> [TxnRow] { synced.rows(of: partition) }

    var syncedPromises: [UInt32: Epoch] { synced.highestPromises }
}

/// A scripted participant: it remembers who sent it each PREPARE and decision, so a vote or
/// an ack goes back to that node.
struct TranscriptRM {
    var preparedBy: [TxnID: String] = [:]
    var decidedBy: [TxnID: String] = [:]
}

struct TranscriptCluster {
    static let tickMs: UInt64 = 20
    static let limits = Limits.simulated

    /// dtc-sim's timing; `cluster … retention D` shortens the retention.
    var timing = NodeTiming.simulated
    var now: UInt64 = 0
    var names: [String] = []
    var map = PartitionMap(nodes: ["n1"], partitionCount: 1, replicationFactor: 1)
    var nodes: [String: TranscriptNode] = [:]
    var rms: [String: TranscriptRM] = [:]
    var links: [TranscriptLink: [TranscriptPacket]] = [:]
    var cuts: Set<TranscriptLink> = []
    var rmsAnswerByThemselves = false
    var showsHeartbeats = false
    var mutant: Mutant?
    var asked: [Requester: (kind: String, txnID: TxnID)] = [:]
    var lastRequester: UInt64 = 0
    /// What the current command printed, and the clock prefix of `tick` and `run`.
    var lines: [String] = []
    var clockPrefix = ""

    init(mutant: Mutant? = nil) {
        self.mutant = mutant
    }

    struct Failure: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Runs one command line; returns what it printed.
    mutating func execute(_ line: String) -> [String] {
        lines = []
        clockPrefix = ""
        let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
        do {
            try execute(words)
        } catch let failure as Failure {
            lines.append("error: \(failure.message)")
        } catch {
            lines.append("error: \(error)")
        }
        return lines
    }

    private mutating func execute(_ words: [String]) throws {
        guard let verb = words.first else { return }
        let args = Array(words.dropFirst())
        switch verb {
        case "cluster": try startCluster(args)
        case "tick": advance(by: try args.first.map(duration) ?? Self.tickMs, settling: false)
        case "run": advance(by: try duration(try one(args)), settling: true)
        case "stabilize": stabilize()
        case "deliver": deliver(on: try args.first.map(link))
        case "drop": dropQueued(on: try link(try one(args)))
        case "durable": for name in args { try sync(node(name)) }
        case "disk": try setDisk(args)
        case "crash": try crash(node(try one(args)))
        case "wipe": try wipe(node(try one(args)))
        case "restart": try restart(node(try one(args)))
        case "pause": nodes[try node(try one(args))]!.isPaused = true
        case "resume": resume(try node(try one(args)))
        case "partition": try partition(args)
        case "cut": for arrow in args { cut(try link(arrow)) }
        case "heal": cuts = []
        case "submit": try submit(args)
        case "resolve": try ask("resolve", args)
        case "query": try ask("query", args)
        case "vote": try vote(args)
        case "ack": try rmAck(args)
        case "rms": rmsAnswerByThemselves = try choice(args, "auto", "manual") == "auto"
        case "show", "hide":
            _ = try choice(args, "heartbeats")
            showsHeartbeats = verb == "show"
        case "mutant": try setMutant(one(args))
        case "status": status()
        case "log": try printLog(node(try one(args)))
        default: throw Failure("unknown command \(verb)")
        }
    }

    // MARK: Arguments

    private func one(_ args: [String]) throws -> String {
        guard args.count == 1 else { throw Failure("expected one argument, got \(args)") }
        return args[0]
    }

    private func choice(_ args: [String], _ choices: String...) throws -> String {
        let word = try one(args)
        guard choices.contains(word) else { throw Failure("expected \(choices.joined(separator: " or ")), got \(word)") }
        return word
    }

    private func duration(_ text: String) throws -> UInt64 {
        if text.hasSuffix("ms"), let ms = UInt64(text.dropLast(2)) { return ms }
        if text.hasSuffix("s"), let seconds = UInt64(text.dropLast()) { return seconds * 1_000 }
        if let ms = UInt64(text) { return ms }
        throw Failure("bad duration \(text)")
    }

    private func node(_ name: String) throws -> String {
        guard nodes[name] != nil else { throw Failure("no node \(name)") }
        return name
    }

    private func link(_ arrow: String) throws -> TranscriptLink {
        let ends = arrow.replacingOccurrences(of: "->", with: "→").split(separator: "→").map(String.init)
        guard ends.count == 2 else { throw Failure("bad link \(arrow) (write a→b)") }
        return TranscriptLink(from: ends[0], to: ends[1])
    }

    private func isLive(_ name: String) -> Bool {
        guard let node = nodes[name] else { return rms[name] != nil }
        return node.machine != nil
    }

    // MARK: Setup

    private mutating func startCluster(_ args: [String]) throws {
        var nodeNames: [String] = []
        var rmNames = ["inventory", "orders"]
        var rest = args[...]
        while let word = rest.popFirst() {
            switch word {
            case "rms":
                rmNames = Array(rest.prefix { $0 != "retention" })
                rest = rest.dropFirst(rmNames.count)
            case "retention":
                timing.retentionMs = try duration(rest.popFirst() ?? "")
            default:
                nodeNames.append(word)
            }
        }
        names = nodeNames
        map = PartitionMap(nodes: names, partitionCount: 1, replicationFactor: 3)
        for name in names {
            nodes[name] = TranscriptNode()
            startMachine(name)
        }
        for rm in rmNames { rms[rm] = TranscriptRM() }
        lines.append("p0 replica group: \(map.replicaGroup(of: 0).joined(separator: " ")) (its first live member takes it)")
    }

    private mutating func startMachine(_ name: String) {
        var node = nodes[name]!
        var machine = NodeMachine(
            name: name, nodes: names, map: map, timing: timing, limits: Self.limits, promised: node.syncedPromises,
            incarnation: node.incarnation, now: now)
        machine.mutant = mutant
        node.machine = machine
        node.pending = []
        nodes[name] = node
    }

    private mutating func setMutant(_ name: String) throws {
        if name == "none" {
            mutant = nil
        } else {
            guard let chosen = Mutant(rawValue: name) else { throw Failure("no mutant \(name)") }
            mutant = chosen
        }
        for name in names where nodes[name]!.machine != nil { nodes[name]!.machine!.mutant = mutant }
    }

    private mutating func setDisk(_ args: [String]) throws {
        guard args.count == 2, ["manual", "auto"].contains(args[1]) else { throw Failure("disk n manual|auto") }
        nodes[try node(args[0])]!.syncsByItself = args[1] == "auto"
    }

    // MARK: Time

    private mutating func advance(by duration: UInt64, settling: Bool) {
        let end = now + duration
        while now < end {
            now += Self.tickMs
            clockPrefix = "@\(now)ms "
            for name in names where isLive(name) && !nodes[name]!.isPaused { step(name, .tick) }
            if settling { stabilize() }
        }
    }

    /// Delivers and syncs until nothing moves: the network and every disk on auto work.
    private mutating func stabilize() {
        for _ in 0..<10_000 {
            var moved = deliverRound(only: nil)
            for name in names where isLive(name) && !nodes[name]!.isPaused && nodes[name]!.syncsByItself && !nodes[name]!.pending.isEmpty {
                sync(name)
                moved = true
            }
            if !moved { return }
        }
        lines.append("error: stabilize did not settle")
    }

    /// Delivers until nothing is queued (on `link`, or anywhere), or gives up: a node that
    /// answers every message with another would never settle.
    private mutating func deliver(on link: TranscriptLink? = nil) {
        var rounds = 0
        while deliverRound(only: link) {
            rounds += 1
            if rounds == 10_000 { return lines.append("error: deliver did not settle") }
        }
    }

    /// Delivers the first message of every link that can deliver (in link order); returns
    /// whether any was delivered.
    private mutating func deliverRound(only: TranscriptLink?) -> Bool {
        let ready = links.keys.sorted().filter { link in
            (only == nil || only == link) && !(links[link]?.isEmpty ?? true) && !cuts.contains(link) && isLive(link.to)
                && !(nodes[link.to]?.isPaused ?? false)
        }
        for link in ready { receive(links[link]!.removeFirst(), on: link) }
        return !ready.isEmpty
    }

    private mutating func receive(_ packet: TranscriptPacket, on link: TranscriptLink) {
        switch packet {
        case .peer(let message): step(link.to, .peer(message, from: link.from))
        case .vote(let txnID, let vote): step(link.to, .votes([VoteReply(txnID: txnID, vote: vote)], from: link.from))
        case .ack(let txnID): step(link.to, .acks([AckReply(txnID: txnID, accepted: true, reason: "")], from: link.from))
        case .toRM(let envelope): rmReceives(envelope, from: link.from)
        }
    }

    private mutating func rmReceives(_ envelope: Envelope, from node: String) {
        switch envelope {
        case .prepare(let rm, let message):
            rms[rm]!.preparedBy[message.txnID] = node
            if rmsAnswerByThemselves { send(.vote(message.txnID, .yes), from: rm, to: node) }
        case .decision(let rm, let message):
            rms[rm]!.decidedBy[message.txnID] = node
            if rmsAnswerByThemselves { send(.ack(message.txnID), from: rm, to: node) }
        }
    }

    // MARK: Disks and faults

    private mutating func sync(_ name: String) {
        guard nodes[name]!.machine != nil, let last = nodes[name]!.pending.last else { return }
        nodes[name]!.synced += nodes[name]!.pending.flatMap(\.items)
        nodes[name]!.pending = []
        step(name, .durable(last.id))
    }

    private mutating func crash(_ name: String) {
        let lost = nodes[name]!.pending.count
        nodes[name]!.machine = nil
        nodes[name]!.pending = []
        nodes[name]!.isPaused = false
        var dropped = 0
        for link in links.keys where link.from == name || link.to == name {
            dropped += links[link]!.filter { !$0.isHeartbeat || showsHeartbeats }.count
            links[link] = []
        }
        say(name, "crashed: \(lost) pending writes lost, \(dropped) queued messages dropped")
    }

    private mutating func wipe(_ name: String) throws {
        guard nodes[name]!.machine == nil else { throw Failure("\(name) is running; crash it first") }
        nodes[name]!.synced = []
        say(name, "disk wiped")
    }

    private mutating func restart(_ name: String) throws {
        guard nodes[name]!.machine == nil else { throw Failure("\(name) is running; crash it first") }
        nodes[name]!.incarnation += 1
        startMachine(name)
        say(name, "restarted (incarnation \(nodes[name]!.incarnation), promised \(describe(nodes[name]!.syncedPromises)))")
    }

    private mutating func resume(_ name: String) {
        nodes[name]!.isPaused = false
        if isLive(name) { step(name, .tick) }
    }

    private mutating func partition(_ args: [String]) throws {
        guard let bar = args.firstIndex(of: "|") else { throw Failure("partition a b | c d") }
        let left = try args[..<bar].map(node)
        let right = try args[(bar + 1)...].map(node)
        for a in left {
            for b in right {
                cut(TranscriptLink(from: a, to: b))
                cut(TranscriptLink(from: b, to: a))
            }
        }
    }

    /// A cut breaks the connection: what is queued on it is lost with it.
    private mutating func cut(_ link: TranscriptLink) {
        cuts.insert(link)
        links[link] = []
    }

    private mutating func dropQueued(on link: TranscriptLink) {
        for packet in links[link] ?? [] where !packet.isHeartbeat || showsHeartbeats {
            lines.append("dropped \(link): \(describe(packet))")
        }
        links[link] = []
    }

    // MARK: Clients and participants

    private mutating func submit(_ args: [String]) throws {
        guard args.count >= 3 else { throw Failure("submit node txn rm...") }
        let branches = args[2...].map { Branch(rm: $0, kind: "work", payload: Array("\(args[1]) at \($0)".utf8)) }
        let txnID = TxnID(args[1])
        step(try runningNode(args[0]), .submit(txnID, branches, from: requester("submit", txnID)))
    }

    private mutating func ask(_ kind: String, _ args: [String]) throws {
        guard args.count == 2 else { throw Failure("\(kind) node txn") }
        let txnID = TxnID(args[1])
        let asker = requester(kind, txnID)
        let event: NodeEvent = kind == "query" ? .query(txnID, from: asker) : .resolve(txnID, partition: map.partition(of: txnID), from: asker)
        step(try runningNode(args[0]), event)
    }

    private func runningNode(_ name: String) throws -> String {
        guard isLive(try node(name)), !nodes[name]!.isPaused else { throw Failure("\(name) is not running") }
        return name
    }

    private mutating func requester(_ kind: String, _ txnID: TxnID) -> Requester {
        lastRequester += 1
        asked[Requester(lastRequester)] = (kind, txnID)
        return Requester(lastRequester)
    }

    private mutating func vote(_ args: [String]) throws {
        guard args.count == 3, let rm = rms[args[0]], ["yes", "no"].contains(args[2]) else { throw Failure("vote rm txn yes|no") }
        let txnID = TxnID(args[1])
        guard let node = rm.preparedBy[txnID] else { throw Failure("\(args[0]) has no PREPARE of \(txnID)") }
        send(.vote(txnID, args[2] == "yes" ? .yes : .no(reason: AbortReason(.refused, "scripted"))), from: args[0], to: node)
    }

    private mutating func rmAck(_ args: [String]) throws {
        guard args.count == 2, let rm = rms[args[0]] else { throw Failure("ack rm txn") }
        let txnID = TxnID(args[1])
        guard let node = rm.decidedBy[txnID] else { throw Failure("\(args[0]) has no decision of \(txnID)") }
        send(.ack(txnID), from: args[0], to: node)
    }

    // MARK: Steps and actions

    private mutating func step(_ name: String, _ event: NodeEvent) {
        guard nodes[name]?.machine != nil else { return }
        let node = nodes[name]!
        let actions = nodes[name]!.machine!.step(event, now: now) { node.rows(of: $0) }
        perform(actions, by: name)
    }

    private mutating func perform(_ actions: NodeActions, by name: String) {
        for observation in actions.observations {
            if let text = describe(observation) { say(name, text) }
        }
        for batch in actions.writes {
            nodes[name]!.pending.append(batch)
            say(name, "write [\(batch.items.map(describe).joined(separator: ", "))]")
        }
        // The replication stream carries the appends (dtc-node sends heartbeats and fences as
        // calls of their own): a restart drops the appends queued to the follower.
        for follower in actions.restartStreams {
            let link = TranscriptLink(from: name, to: follower)
            let queued = links[link] ?? []
            links[link] = queued.filter { !$0.isAppend }
            let dropped = queued.count - links[link]!.count
            if dropped > 0 { say(name, "restarted the stream to \(follower): \(dropped) queued appends dropped") }
        }
        // Stable sorts: a link's messages keep their order.
        for (peer, message) in actions.peerMessages.enumerated().sorted(by: { ($0.element.to, $0.offset) < ($1.element.to, $1.offset) }).map(\.element) {
            send(.peer(message), from: name, to: peer)
        }
        for envelope in actions.rmMessages.enumerated().sorted(by: { ($0.element.rm, $0.offset) < ($1.element.rm, $1.offset) }).map(\.element) {
            send(.toRM(envelope), from: name, to: envelope.rm)
        }
        for (requester, answer) in actions.answers {
            let question = asked.removeValue(forKey: requester)
            let kind = question.map { $0.kind == "submit" ? "" : "\($0.kind) " } ?? "? "
            say(name, "answer \(kind)\(question?.txnID.rawValue ?? "?") \(describe(answer))")
        }
    }

    private mutating func send(_ packet: TranscriptPacket, from: String, to: String) {
        let link = TranscriptLink(from: from, to: to)
        let isLost = cuts.contains(link) || !isLive(to)
        if !packet.isHeartbeat || showsHeartbeats {
            lines.append("\(clockPrefix)\(link): \(describe(packet))\(isLost ? " (lost)" : "")")
        }
        if !isLost { links[link, default: []].append(packet) }
    }

    private mutating func say(_ actor: String, _ text: String) {
        lines.append("\(clockPrefix)\(actor): \(text)")
    }

    // MARK: Inspection

    private mutating func status() {
        lines.append("clock \(now)ms")
        for name in names {
            let node = nodes[name]!
            guard let machine = node.machine else {
                lines.append("\(name): down")
                continue
            }
            var facts: [String] = []
            if machine.leads(0) {
                facts.append("leads p0@\(machine.coordinator.epochs[0]!)")
            } else if let leader = machine.membership.leader(of: 0) {
                facts.append("p0 led by \(leader.node)@\(leader.epoch)")
            } else {
                facts.append("p0 leader unknown")
            }
            facts.append("promised \(machine.promises[0])")
            facts.append("\(machine.inFlightCount) in flight")
            facts.append(machine.membership.isReady ? "ready" : "not ready")
            if let takeover = machine.takeoverInProgress { facts.append("takeover \(takeover)") }
            if let retry = machine.retryTakeover(of: 0), retry > now { facts.append("leaves p0 alone until \(retry)ms") }
            if !node.pending.isEmpty { facts.append("\(node.pending.count) writes pending") }
            if node.isPaused { facts.append("paused") }
            lines.append("\(name): \(facts.joined(separator: ", "))")
        }
    }

    private mutating func printLog(_ name: String) {
        let rows = nodes[name]!.rows(of: 0)
        if rows.isEmpty { lines.append("\(name) p0: no rows") }
        for row in rows { lines.append("\(name) p0: \(describe(row))") }
        let pending = nodes[name]!.pending.count
        if pending > 0 { lines.append("\(name): \(pending) writes pending") }
    }

    // MARK: Text

    private func describe(_ packet: TranscriptPacket) -> String {
        switch packet {
        case .peer(let message): describe(message)
        case .toRM(.prepare(_, let message)): "prepare \(message.txnID) @\(message.sender.epoch)"
        case .toRM(.decision(_, let message)): "\(message.outcome) \(message.txnID) @\(message.sender.epoch)"
        case .vote(let txnID, .yes): "yes \(txnID)"
        case .vote(let txnID, .no): "no \(txnID)"
        case .ack(let txnID): "ack \(txnID)"
        }
    }

    private func describe(_ message: PeerMessage) -> String {
        switch message {
        case .append(let message):
            let head = message.isCatchUp ? "catch-up \(session(message.session))" : "append \(session(message.session)):\(message.sequence)"
            let appends = message.appends.map { append in
                "p\(append.partition)@\(append.epoch) \(ticket(append.ticket)) [\(append.records.map(describe).joined(separator: ", "))]"
            }
            return ([head] + appends).joined(separator: " ")
        case .appendAcks(let acks):
            return acks.map { ack in
                switch ack.kind {
                case .accepted: "ack \(session(ack.session)) p\(ack.partition) \(ticket(ack.ticket))"
                case .refused(let promised): "refuse \(session(ack.session)) p\(ack.partition) \(ticket(ack.ticket)) (promised \(promised))"
                case .gap: "gap \(session(ack.session))"
                }
            }.joined(separator: ", ")
        case .heartbeat(let heartbeat):
            var text = heartbeat.isReply ? "heartbeat reply" : "heartbeat"
            text += " leads \(describe(heartbeat.leads))"
            if heartbeat.isReply { text += " promised \(describe(heartbeat.promised))" }
            return heartbeat.isReady ? text : text + " (not ready)"
        case .fence(let request):
            return "fence #\(request.attempt) \(describe(request.epochs))"
        case .fenceAnswer(let answer):
            let promised = answer.promised.sorted { $0.key < $1.key }.map { partition, rows in
                "promise #\(answer.attempt) p\(partition) [\(rows.map(describe).joined(separator: "; "))]"
            }
            let refused = answer.refused.sorted { $0.key < $1.key }.map { "refuse #\(answer.attempt) p\($0.key) (promised \($0.value))" }
            return (promised + refused).joined(separator: ", ")
        }
    }

    private func describe(_ write: NodeWrite) -> String {
        switch write {
        case .record(let entry): describe(entry.record)
        case .promise(let partition, let epoch): "promise p\(partition)@\(epoch)"
        }
    }

    private func describe(_ record: LogRecord) -> String {
        switch record {
        case .start(let txnID, _, _, _): "start \(txnID)"
        case .decision(let txnID, .commit, _, let epoch): "commit \(txnID)@\(epoch)"
        case .decision(let txnID, .abort, let reason, let epoch): "abort \(txnID)@\(epoch) (\(reason.cause))"
        case .end(let txnID): "end \(txnID)"
        case .trim(let txnID): "trim \(txnID)"
        }
    }

    private func describe(_ row: TxnRow) -> String {
        var parts = ["\(row.txnID)"]
        if !row.branches.isEmpty { parts.append("start") }
        if let decision = row.decision { parts.append("\(decision.outcome)@\(decision.epoch)") }
        if row.isEnded { parts.append("end") }
        return parts.joined(separator: " ")
    }

    private func describe(_ epochs: [UInt32: Epoch]) -> String {
        epochs.isEmpty ? "-" : epochs.sorted { $0.key < $1.key }.map { "p\($0.key)@\($0.value)" }.joined(separator: " ")
    }

    private func describe(_ answer: NodeAnswer) -> String {
        switch answer {
        case .status(let status, _, _): describe(status)
        case .redirect(let leader, _): "redirect to \(leader)"
        case .unavailable(let text): "unavailable: \(text)"
        case .overloaded(let inFlight): "overloaded (\(inFlight) in flight)"
        case .idTaken: "id taken"
        case .notFound: "not found"
        case .snapshot(let snapshot):
            ([describe(snapshot.status)] + snapshot.branches.map { "\($0.summary.rm) \($0.progress)" }).joined(separator: ", ")
        }
    }

    private func describe(_ status: TxnStatus) -> String {
        switch status {
        case .preparing: "preparing"
        case .committed: "committed"
        case .aborted(let reason): "aborted (\(reason.cause): \(reason.text))"
        }
    }

    /// Nil for what other lines already show: issued tickets (the appends), released decisions
    /// (the messages), claims (the acks; a new session restarts them).
    private func describe(_ observation: NodeObservation) -> String? {
        switch observation {
        case .issued, .released, .ackClaims, .claimsRestart:
            return nil
        case .steppedDown(let partition, let reason, let left):
            return "stepped down from p\(partition) (\(reason)); \(left) in flight left to the new leader"
        case .tookOver(let partitions, let inDoubt, let commits, _, let from):
            return "took over \(partitions.map { "p\($0)" }.joined(separator: " ")) from \(from): \(inDoubt) in doubt, \(commits) commits to finish"
        case .takeoverLost(let partition, let epoch, let promisers, let group):
            return "lost the takeover of p\(partition)@\(epoch): promised by \(promisers.joined(separator: " ")) of \(group.joined(separator: " "))"
        case .inDoubtFinished:
            return "every txn found in doubt has finished"
        case .newSession(let follower, let reason):
            return "new session to \(follower) (\(reason))"
        case .decisionRefused(let rm, let txnID, let reason):
            return "\(rm) refused the decision of \(txnID): \(reason)"
        case .stalled(let ms):
            return "stalled for \(ms) ms: peers get a fresh suspicion timeout"
        }
    }

    private func session(_ id: UInt64) -> String { "s\(id >> 32).\(id & 0xffff_ffff)" }

    private func ticket(_ ticket: UInt64) -> String { "#\(ticket & 0xffff_ffff)" }
}
