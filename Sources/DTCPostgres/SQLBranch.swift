import Foundation

/// The payload of a branch that dtc-pg runs: SQL statements with bind parameters, run in order
/// in one PostgreSQL transaction. A statement may say how many rows it must affect, so
/// `UPDATE balances SET cents = cents - $1 WHERE user_id = $2 AND cents >= $1` with `rows: 1`
/// is a balance check: any other count votes NO.
///
/// On the wire it is JSON: `{"statements": [{"sql": "...", "params": [500, "u1"], "rows": 1}]}`.
/// A parameter is a JSON number (an integer binds as bigint, any other number as double
/// precision), a string (text), true/false (boolean) or null; cast in the SQL where the column
/// wants another type (`$1::int`).
public struct SQLBranch: Hashable, Sendable, Codable {
    /// The branch `kind` dtc-pg runs.
    public static let kind = "sql"

    public var statements: [SQLStatement]

    public init(statements: [SQLStatement]) {
        self.statements = statements
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// Decodes and checks a payload; the error says what is wrong, for the NO vote.
    public init(decoding payload: [UInt8]) throws(SQLBranchError) {
        let decoded: SQLBranch
        do {
            decoded = try JSONDecoder().decode(SQLBranch.self, from: Data(payload))
        } catch {
            throw SQLBranchError("payload is not a statement list ({\"statements\": [{\"sql\": ..., \"params\": [...], \"rows\": N}]}): \(Self.describe(error))")
        }
        guard !decoded.statements.isEmpty else { throw SQLBranchError("payload has no statements") }
        for (index, statement) in decoded.statements.enumerated() {
            guard !statement.sql.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw SQLBranchError("statements[\(index)].sql is empty")
            }
            if let rows = statement.rows, rows < 0 { throw SQLBranchError("statements[\(index)].rows is negative (\(rows))") }
            if let keyword = statement.transactionControlKeyword {
                throw SQLBranchError("statements[\(index)] is transaction control (\(keyword)): dtc-pg runs the branch as one transaction and prepares it itself")
            }
        }
        self = decoded
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context): context.debugDescription
        case DecodingError.keyNotFound(let key, _): "missing \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            "\(context.codingPath.map(\.stringValue).joined(separator: ".")): \(context.debugDescription)"
        default: "\(error)"
        }
    }
}

public struct SQLStatement: Hashable, Sendable, Codable {
    public var sql: String
    public var params: [SQLValue]
    /// The number of rows the statement must affect (as PostgreSQL reports it), if any.
    public var rows: Int?
    /// The NO vote's reason when `rows` does not match ("insufficient funds"); without it the
    /// reason gives the counts.
    public var refusal: String?

    public init(_ sql: String, params: [SQLValue] = [], rows: Int? = nil, refusal: String? = nil) {
        self.sql = sql
        self.params = params
        self.rows = rows
        self.refusal = refusal
    }

    enum CodingKeys: String, CodingKey { case sql, params, rows, refusal }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sql = try container.decode(String.self, forKey: .sql)
        params = try container.decodeIfPresent([SQLValue].self, forKey: .params) ?? []
        rows = try container.decodeIfPresent(Int.self, forKey: .rows)
        refusal = try container.decodeIfPresent(String.self, forKey: .refusal)
    }

    /// Statements that would end or split the branch's transaction are refused: a COMMIT in a
    /// payload would make its writes durable before the vote.
    var transactionControlKeyword: String? {
        let word = Self.firstWord(of: sql).lowercased()
        let refused: Set<String> = ["begin", "start", "commit", "end", "rollback", "abort", "savepoint", "release", "prepare"]
        return refused.contains(word) ? word.uppercased() : nil
    }

    /// The first word of the SQL, past whitespace and comments.
    private static func firstWord(of sql: String) -> String {
        var rest = Substring(sql)
        while true {
            rest = rest.drop { $0.isWhitespace }
            if rest.hasPrefix("--") {
                rest = rest.drop { $0 != "\n" }
            } else if rest.hasPrefix("/*") {
                guard let end = rest.range(of: "*/") else { return "" }
                rest = rest[end.upperBound...]
            } else {
                break
            }
        }
        return String(rest.prefix { $0.isLetter })
    }
}

/// One bind parameter.
public enum SQLValue: Hashable, Sendable, Codable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case text(String)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .text(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "a parameter must be a number, a string, true/false or null")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .text(let value): try container.encode(value)
        }
    }
}

public struct SQLBranchError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
