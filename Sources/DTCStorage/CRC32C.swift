/// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table-driven.
/// Castagnoli rather than the zip CRC-32 because it detects more error patterns at this
/// length and is what storage systems (iSCSI, ext4, LevelDB) use for the same job.
enum CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 {
            crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
        }
        return crc
    }

    static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }
}

/// The on-disk form of every value: 4-byte little-endian CRC-32C of the payload, then the
/// payload. Checked on every read so a torn or bit-rotted value surfaces as `.corruption`.
enum StoredValue {
    static let checksumSize = 4

    static func encode(_ payload: [UInt8]) -> [UInt8] {
        let crc = CRC32C.checksum(payload)
        var stored = [UInt8]()
        stored.reserveCapacity(checksumSize + payload.count)
        stored.append(contentsOf: [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)])
        stored.append(contentsOf: payload)
        return stored
    }

    /// Returns the payload, or nil when the stored bytes are short or fail the checksum.
    static func decode(_ stored: UnsafeRawBufferPointer) -> [UInt8]? {
        guard stored.count >= checksumSize else { return nil }
        let expected = (0..<checksumSize).reduce(UInt32(0)) { $0 | UInt32(stored[$1]) << (8 * $1) }
        let payload = UnsafeRawBufferPointer(rebasing: stored[checksumSize...])
        guard CRC32C.checksum(payload) == expected else { return nil }
        return Array(payload)
    }
}
