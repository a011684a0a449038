/// The shop's payloads are flat JSON objects of strings and integers, e.g.
/// `{"order_id":"o-1","sku":"sku-7","qty":2}`: readable in any language, and small enough to
/// encode and decode by hand on the hot path (Foundation's JSON coders cost tens of
/// microseconds a call).
public enum FlatJSON {
    public enum Value: Hashable, Sendable {
        case string(String)
        case integer(Int64)
    }

    public struct DecodingError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Encodes the fields in the given order.
    public static func encode(_ fields: [(String, Value)]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        for (index, (name, value)) in fields.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(name, to: &out)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .string(let text): appendString(text, to: &out)
            case .integer(let number): out += Array(String(number).utf8)
            }
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> [String: Value] {
        var parser = Parser(bytes: bytes)
        return try parser.object()
    }

    private static func appendString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), byte]
            case 0..<0x20: out += unicodeEscape(byte)
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// `\u00XX` for a control character.
    private static func unicodeEscape(_ byte: UInt8) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        return Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xf)]]
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        mutating func object() throws(DecodingError) -> [String: Value] {
            skipSpace()
            try expect(UInt8(ascii: "{"))
            var fields: [String: Value] = [:]
            skipSpace()
            if peek() == UInt8(ascii: "}") {
                index += 1
                return try finish(fields)
            }
            while true {
                skipSpace()
                let name = try string()
                skipSpace()
                try expect(UInt8(ascii: ":"))
                skipSpace()
                guard fields[name] == nil else { throw fail("field '\(name)' appears twice") }
                fields[name] = peek() == UInt8(ascii: "\"") ? .string(try string()) : .integer(try integer())
                skipSpace()
                if peek() == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                try expect(UInt8(ascii: "}"))
                return try finish(fields)
            }
        }

        private mutating func finish(_ fields: [String: Value]) throws(DecodingError) -> [String: Value] {
            skipSpace()
            guard index == bytes.count else { throw fail("unexpected bytes after the object") }
            return fields
        }

        private mutating func string() throws(DecodingError) -> String {
            try expect(UInt8(ascii: "\""))
            var out: [UInt8] = []
            while let byte = peek() {
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    guard let text = Swift.String(validating: out, as: UTF8.self) else { throw fail("a string is not valid UTF-8") }
                    return text
                case UInt8(ascii: "\\"):
                    guard let escaped = peek() else { throw fail("the payload ends inside a string") }
                    index += 1
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "u"):
                        guard index + 4 <= bytes.count, let code = UInt32(Swift.String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16),
                            let scalar = Unicode.Scalar(code)
                        else { throw fail("a \\u escape is not valid") }
                        index += 4
                        out += Array(Swift.String(Character(scalar)).utf8)
                    default: throw fail("unknown escape in a string")
                    }
                default:
                    out.append(byte)
                }
            }
            throw fail("the payload ends inside a string")
        }

        private mutating func integer() throws(DecodingError) -> Int64 {
            let start = index
            if peek() == UInt8(ascii: "-") { index += 1 }
            while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { index += 1 }
            guard let number = Int64(Swift.String(decoding: bytes[start..<index], as: UTF8.self)) else {
                throw fail("a value at byte \(start) is neither a string nor an integer")
            }
            return number
        }

        private mutating func expect(_ byte: UInt8) throws(DecodingError) {
            guard peek() == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))' at byte \(index)") }
            index += 1
        }

        private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }

        private mutating func skipSpace() {
            while let byte = peek(), byte == 0x20 || byte == 0x0a || byte == 0x0d || byte == 0x09 { index += 1 }
        }

        private func fail(_ reason: String) -> DecodingError { DecodingError(description: "payload is not a flat JSON object: \(reason)") }
    }
}
