/// A small binary codec for durable records: fixed-width big-endian integers and
/// length-prefixed strings. Pure, so the core can define its own record formats.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func write(_ value: UInt8) { bytes.append(value) }

    public mutating func write(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    public mutating func write(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    public mutating func write(_ value: Int64) { write(UInt64(bitPattern: value)) }

    public mutating func write(_ value: Bool) { write(value ? UInt8(1) : UInt8(0)) }

    public mutating func write(_ value: String) {
        let utf8 = Array(value.utf8)
        write(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

public enum RecordDecodingError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(at: Int)
    case badTag(UInt8, at: Int)
    case badString(at: Int)
    /// The record ended where more bytes followed: a different layout, or garbage.
    case trailingBytes(at: Int)
    /// The record was written in a format version this build does not read.
    case unsupportedVersion(found: UInt8, expected: UInt8)

    public var description: String {
        switch self {
        case .truncated(let at): "record truncated at byte \(at)"
        case .badTag(let tag, let at): "unknown tag \(tag) at byte \(at) (not a record of this format)"
        case .badString(let at): "invalid UTF-8 string at byte \(at)"
        case .trailingBytes(let at): "unexpected bytes after the record's end at byte \(at)"
        case .unsupportedVersion(let found, let expected): "record format version \(found), this build reads version \(expected)"
        }
    }
}

public struct ByteReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { offset == bytes.count }

    public mutating func readByte() throws(RecordDecodingError) -> UInt8 {
        guard offset < bytes.count else { throw .truncated(at: offset) }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readUInt32() throws(RecordDecodingError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 { value = value << 8 | UInt32(try readByte()) }
        return value
    }

    public mutating func readUInt64() throws(RecordDecodingError) -> UInt64 {
        var value: UInt64 = 0
        for _ in 0..<8 { value = value << 8 | UInt64(try readByte()) }
        return value
    }

    public mutating func readInt64() throws(RecordDecodingError) -> Int64 { Int64(bitPattern: try readUInt64()) }

    public mutating func readBool() throws(RecordDecodingError) -> Bool { try readByte() != 0 }

    public mutating func readString() throws(RecordDecodingError) -> String {
        let start = offset
        let count = Int(try readUInt32())
        guard count <= bytes.count - offset else { throw .truncated(at: start) }
        defer { offset += count }
        guard let text = String(validating: bytes[offset..<offset + count], as: UTF8.self) else {
            throw .badString(at: start)
        }
        return text
    }

    /// A count, then each string.
    public mutating func readStrings() throws(RecordDecodingError) -> [String] {
        var values: [String] = []
        for _ in 0..<(try readUInt32()) { values.append(try readString()) }
        return values
    }

    /// A length-prefixed byte string.
    /// Skips a length-prefixed string or byte field without reading it.
    public mutating func skipSized() throws(RecordDecodingError) {
        let start = offset
        let count = Int(try readUInt32())
        guard count <= bytes.count - offset else { throw .truncated(at: start) }
        offset += count
    }

    public mutating func readBytes() throws(RecordDecodingError) -> [UInt8] {
        let start = offset
        let count = Int(try readUInt32())
        guard count <= bytes.count - offset else { throw .truncated(at: start) }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// Reads a record's leading format version and refuses any other than `expected`: a record
    /// of another format is never misread.
    public mutating func expectVersion(_ expected: UInt8) throws(RecordDecodingError) {
        let found = try readByte()
        guard found == expected else { throw .unsupportedVersion(found: found, expected: expected) }
    }

    /// Reads a record's leading format version, refusing any outside `accepted`, and returns it
    /// (for a format that still reads an older layout).
    public mutating func readVersion(accepting accepted: ClosedRange<UInt8>) throws(RecordDecodingError) -> UInt8 {
        let found = try readByte()
        guard accepted.contains(found) else { throw .unsupportedVersion(found: found, expected: accepted.upperBound) }
        return found
    }
}

extension ByteWriter {
    public mutating func write(_ epoch: Epoch) {
        write(epoch.counter)
        write(epoch.node)
    }

    public mutating func write(_ reason: AbortReason) {
        write(reason.cause.rawValue)
        write(reason.text)
    }

    public mutating func write(_ branch: Branch) {
        write(branch.rm)
        write(branch.kind)
        write(bytes: branch.payload)
    }

    /// A count, then each string.
    public mutating func write(strings values: [String]) {
        write(UInt32(values.count))
        for value in values { write(value) }
    }

    /// A length-prefixed byte string.
    public mutating func write(bytes value: [UInt8]) {
        write(UInt32(value.count))
        bytes.append(contentsOf: value)
    }
}

extension ByteReader {
    public mutating func readEpoch() throws(RecordDecodingError) -> Epoch {
        Epoch(counter: try readUInt64(), node: try readUInt32())
    }

    public mutating func readAbortReason() throws(RecordDecodingError) -> AbortReason {
        let at = offset
        let tag = try readByte()
        guard let cause = AbortCause(rawValue: tag) else { throw .badTag(tag, at: at) }
        return AbortReason(cause, try readString())
    }

    public mutating func readBranch() throws(RecordDecodingError) -> Branch {
        Branch(rm: try readString(), kind: try readString(), payload: try readBytes())
    }
}
