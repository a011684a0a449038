import DTCCore

/// Which way a message travels, seen from the process that applies its faults.
public enum LinkDirection: Sendable {
    case incoming
    case outgoing
}

/// Which messages a cut-off loses: those from the named processes, those to them, or both.
public enum CutDirection: String, Sendable, CaseIterable {
    case both
    case `in`
    case out

    func cuts(_ direction: LinkDirection) -> Bool {
        switch (self, direction) {
        case (.both, _), (.in, .incoming), (.out, .outgoing): true
        case (.in, .outgoing), (.out, .incoming): false
        }
    }
}

/// How one process misbehaves on its links.
public struct FaultRules: Sendable, Equatable {
    /// Fraction of messages lost, in 0...1.
    public var drop: Double = 0
    /// Every message waits `delayMs` plus a uniform draw from 0...`jitterMs`.
    public var delayMs: UInt64 = 0
    public var jitterMs: UInt64 = 0
    /// Fraction of messages delivered twice, in 0...1.
    public var duplicate: Double = 0
    /// Processes this one cannot talk to, in `cutDirection`.
    public var cutOff: Set<String> = []
    public var cutDirection: CutDirection = .both

    public init() {}

    /// The longest delay or jitter accepted: a limit on everything (STYLE.md 8).
    public static let delayMsMax: UInt64 = 60_000

    public var isEmpty: Bool { self == FaultRules() }
}

/// What was injected since the process started.
public struct FaultCounters: Sendable, Equatable {
    public var dropped: UInt64 = 0
    public var delayed: UInt64 = 0
    public var duplicated: UInt64 = 0
    public var cut: UInt64 = 0

    public init() {}
}

/// What becomes of one message.
public enum MessageFate: Sendable, Equatable {
    /// Delivered after `delayMs`, `copies` times (1 or 2).
    case deliver(delayMs: UInt64, copies: Int)
    /// Lost at random (`drop`).
    case dropped
    /// Lost because the peer is cut off in this direction.
    case cut
}

/// The fault decisions of one process: rules, a seeded generator and counters. Pure and
/// deterministic: the same seed and the same sequence of questions give the same fates. (Which
/// message asks first depends on task scheduling, so a whole cluster run is not replayable.)
public struct FaultModel: Sendable {
    public private(set) var rules = FaultRules()
    public private(set) var seed: UInt64
    public private(set) var counters = FaultCounters()
    private var generator: SplitMix64

    public init(seed: UInt64) {
        self.seed = seed
        generator = SplitMix64(seed: seed)
    }

    /// Replaces drop, delay, jitter and duplicate and restarts the generator from `seed`.
    public mutating func setLink(drop: Double, delayMs: UInt64, jitterMs: UInt64, duplicate: Double, seed: UInt64) {
        rules.drop = drop
        rules.delayMs = delayMs
        rules.jitterMs = jitterMs
        rules.duplicate = duplicate
        self.seed = seed
        generator = SplitMix64(seed: seed)
    }

    /// Replaces the set of processes this one is cut off from.
    public mutating func setCutOff(_ processes: Set<String>, direction: CutDirection) {
        rules.cutOff = processes
        rules.cutDirection = direction
    }

    /// The fate of one message to or from `peer`. A peer that did not name itself (the CLI)
    /// is never faulted. `canDuplicate` is false where a second copy would be discarded
    /// unseen (the answer of a unary call).
    public mutating func fate(_ direction: LinkDirection, peer: String?, canDuplicate: Bool) -> MessageFate {
        guard let peer, !rules.isEmpty else { return .deliver(delayMs: 0, copies: 1) }
        if rules.cutOff.contains(peer), rules.cutDirection.cuts(direction) {
            counters.cut += 1
            return .cut
        }
        if rules.drop > 0, unitDraw() < rules.drop {
            counters.dropped += 1
            return .dropped
        }
        var delay = rules.delayMs
        if rules.jitterMs > 0 { delay += generator.next() % (rules.jitterMs + 1) }
        if delay > 0 { counters.delayed += 1 }
        var copies = 1
        if canDuplicate, rules.duplicate > 0, unitDraw() < rules.duplicate {
            counters.duplicated += 1
            copies = 2
        }
        return .deliver(delayMs: delay, copies: copies)
    }

    /// Whether `peer` is cut off in `direction` (counted when it is): the question for the
    /// opening of a stream, which is no message to drop, delay or duplicate.
    public mutating func isCut(_ direction: LinkDirection, peer: String?) -> Bool {
        guard let peer, rules.cutOff.contains(peer), rules.cutDirection.cuts(direction) else { return false }
        counters.cut += 1
        return true
    }

    /// Uniform in [0, 1).
    private mutating func unitDraw() -> Double {
        Double(generator.next() >> 11) * 0x1p-53
    }

    /// The seed used when none is given: derived from the process name (FNV-1a), so every
    /// process draws differently and the same process the same way on every run.
    public static func seed(for process: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in process.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}

/// A fault setting that cannot be applied; the description names the field.
public struct FaultRuleError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension FaultRules {
    /// Checks the link part: fractions in 0...1, delays within `delayMsMax`.
    public static func checkLink(drop: Double, delayMs: UInt64, jitterMs: UInt64, duplicate: Double) throws(FaultRuleError) {
        guard (0...1).contains(drop) else { throw FaultRuleError("drop \(drop) is outside 0...1") }
        guard (0...1).contains(duplicate) else { throw FaultRuleError("duplicate \(duplicate) is outside 0...1") }
        guard delayMs <= delayMsMax else { throw FaultRuleError("delay \(delayMs) ms is over the maximum of \(delayMsMax) ms") }
        guard jitterMs <= delayMsMax else { throw FaultRuleError("jitter \(jitterMs) ms is over the maximum of \(delayMsMax) ms") }
    }

    /// Checks a cut-off: every name is a process of the cluster other than `process` itself.
    public static func checkCutOff(_ names: [String], process: String, known: Set<String>) throws(FaultRuleError) {
        for name in names {
            guard known.contains(name) else {
                throw FaultRuleError("from: no process named '\(name)' in the cluster config (processes: \(known.sorted().joined(separator: ", ")))")
            }
            guard name != process else { throw FaultRuleError("from: \(process) cannot be cut off from itself") }
        }
    }
}

/// Durations as the CLI takes them: `20ms`, `1s`, `1.5s`, `0`; whole milliseconds.
public enum FaultDuration {
    public static func milliseconds(parsing text: String) throws(FaultRuleError) -> UInt64 {
        let bad = FaultRuleError("'\(text)' is not a duration (examples: 20ms, 1s, 1.5s)")
        if text == "0" { return 0 }
        let (number, scale): (Substring, Double) =
            if text.hasSuffix("ms") { (text.dropLast(2), 1) } else if text.hasSuffix("s") { (text.dropLast(1), 1000) } else { throw bad }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let value = Double(number) else {
            throw bad
        }
        let millis = value * scale
        guard millis == millis.rounded() else { throw FaultRuleError("'\(text)' is not a whole number of milliseconds") }
        guard millis <= Double(FaultRules.delayMsMax) else {
            throw FaultRuleError("'\(text)' is over the maximum of \(FaultRules.delayMsMax / 1000) s")
        }
        return UInt64(millis)
    }
}
