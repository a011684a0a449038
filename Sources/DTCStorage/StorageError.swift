import CLMDB

/// What the storage layer reports. Corruption is a separate case because it must never be
/// mistaken for "absent": a record that fails its checksum is reported, not skipped.
public enum StorageError: Error, Equatable, CustomStringConvertible {
    /// An LMDB call failed; `message` is `mdb_strerror(code)`.
    case lmdb(operation: String, code: Int32, message: String)
    /// A stored value is shorter than its checksum or its CRC-32C does not match.
    /// `key` is the UTF-8 text of the key when that is printable, else lowercase hex.
    case corruption(database: String, key: String)
    /// LMDB accepts keys of 1 through `maximum` bytes (511 by default); checked before the call
    /// so the caller gets the sizes rather than a bare MDB_BAD_VALSIZE.
    case keySize(bytes: Int, maximum: Int)

    public var description: String {
        switch self {
        case .lmdb(let operation, let code, let message):
            "LMDB \(operation) failed (\(code)): \(message)"
        case .corruption(let database, let key):
            "corrupt value in database \"\(database)\" at key \(key)"
        case .keySize(let bytes, let maximum):
            "key of \(bytes) bytes rejected: keys must be 1 to \(maximum) bytes"
        }
    }

    /// Renders a key for an error message: readable text if it is printable UTF-8, else hex.
    static func readable(key: [UInt8]) -> String {
        if let text = String(validating: key, as: UTF8.self),
            !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        {
            return text
        }
        return key.map { byte in
            let digits = String(byte, radix: 16)
            return byte < 16 ? "0" + digits : digits
        }.joined()
    }
}

/// Turns an LMDB return code into a thrown `StorageError.lmdb`.
func check(_ code: Int32, _ operation: String) throws {
    guard code == MDB_SUCCESS else {
        throw StorageError.lmdb(
            operation: operation, code: code, message: String(cString: mdb_strerror(code)))
    }
}
