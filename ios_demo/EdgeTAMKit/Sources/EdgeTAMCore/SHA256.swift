import Foundation
#if canImport(CryptoKit)
import CryptoKit
#endif

/// SHA-256 digests of artifacts and manifests, as bundles record them (`EdgeTAMBundle` checks them on open):
/// CryptoKit's on Apple platforms, the portable FIPS 180-4 implementation below elsewhere (Linux has no
/// CryptoKit). Both give the same digests; the tests check them against the standard's vectors.
public enum Checksum {
    /// The digest of `bytes` as 64 lowercase hex digits.
    public static func hex(of bytes: some Sequence<UInt8>) -> String {
        var digester = Digester()
        digester.update(Data(bytes))
        return hexString(digester.finalize())
    }

    /// The digest of a file (read in 1 MiB blocks), or of a folder artifact such as an `.mlpackage`:
    /// every file in it in the order Python's `sorted(Path.rglob("*"))` gives, its relative path then its bytes,
    /// exactly as `edgetam_export.bundle.sha256_of` computes it.
    public static func hex(ofFileAt url: URL) throws -> String {
        var digester = Digester()
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: url.path])
        }
        if isFolder.boolValue {
            for relative in try filesInside(url) {
                digester.update(Data(relative.utf8))
                try hashContents(of: url.appendingPathComponent(relative), into: &digester)
            }
        } else {
            try hashContents(of: url, into: &digester)
        }
        return hexString(digester.finalize())
    }

    private static func hashContents(of url: URL, into digester: inout Digester) throws {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        while let block = try handle.read(upToCount: 1 << 20), !block.isEmpty {
            digester.update(block)
        }
    }

    /// Relative paths of the regular files below `folder`, sorted component by component by code point.
    static func filesInside(_ folder: URL) throws -> [String] {
        let root = folder.standardizedFileURL.path
        var found: [String] = []
        guard let walker = FileManager.default.enumerator(atPath: root) else { return [] }
        while let relative = walker.nextObject() as? String {
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: root + "/" + relative, isDirectory: &isFolder), !isFolder.boolValue {
                found.append(relative)
            }
        }
        return found.sorted { left, right in
            let a = left.split(separator: "/").map { Array($0.unicodeScalars.map(\.value)) }
            let b = right.split(separator: "/").map { Array($0.unicodeScalars.map(\.value)) }
            return a.lexicographicallyPrecedes(b) { $0.lexicographicallyPrecedes($1) }
        }
    }

    static func hexString(_ digest: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(digest.count * 2)
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The platform's streaming SHA-256.
    struct Digester {
        #if canImport(CryptoKit)
        private var hasher = CryptoKit.SHA256()
        mutating func update(_ data: Data) { hasher.update(data: data) }
        mutating func finalize() -> [UInt8] { Array(hasher.finalize()) }
        #else
        private var hasher = PortableSHA256()
        mutating func update(_ data: Data) { hasher.update(data) }
        mutating func finalize() -> [UInt8] { hasher.finalize() }
        #endif
    }
}

/// SHA-256 as specified by FIPS 180-4, streaming, in plain Swift: `Checksum`'s digester where CryptoKit is absent.
struct PortableSHA256: Sendable {
    private static let k: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    private var state: [UInt32] = [
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
    ]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    init() {}

    /// Add bytes to the message.
    mutating func update(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
        let whole = buffer.count / 64 * 64
        if whole > 0 {
            buffer.withUnsafeBufferPointer { pointer in
                for start in stride(from: 0, to: whole, by: 64) {
                    compress(UnsafeBufferPointer(rebasing: pointer[start ..< start + 64]))
                }
            }
            buffer.removeFirst(whole)
        }
        length &+= UInt64(whole)
    }

    /// Add the UTF-8 bytes of a string.
    mutating func update(_ text: String) {
        update(Array(text.utf8))
    }

    /// The 32-byte digest; the hasher can no longer be used.
    consuming func finalize() -> [UInt8] {
        let bits = (length &+ UInt64(buffer.count)) &* 8
        var tail = buffer
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
        tail.withUnsafeBufferPointer { pointer in
            for start in stride(from: 0, to: tail.count, by: 64) {
                compress(UnsafeBufferPointer(rebasing: pointer[start ..< start + 64]))
            }
        }
        return state.flatMap { word in (0 ..< 4).map { UInt8(truncatingIfNeeded: word >> UInt32(24 - 8 * $0)) } }
    }


    private mutating func compress(_ block: UnsafeBufferPointer<UInt8>) {
        let (a0, b0, c0, d0, e0, f0, g0, h0) = (state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7])
        let sums: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
                for t in 0 ..< 16 {
                    w[t] = UInt32(block[4 * t]) << 24 | UInt32(block[4 * t + 1]) << 16 | UInt32(block[4 * t + 2]) << 8
                        | UInt32(block[4 * t + 3])
                }
                for t in 16 ..< 64 {
                    let s0 = w[t - 15].rotatedRight(7) ^ w[t - 15].rotatedRight(18) ^ (w[t - 15] >> 3)
                    let s1 = w[t - 2].rotatedRight(17) ^ w[t - 2].rotatedRight(19) ^ (w[t - 2] >> 10)
                    w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
                }
                var (a, b, c, d, e, f, g, h) = (a0, b0, c0, d0, e0, f0, g0, h0)
                for t in 0 ..< 64 {
                    let sum1 = e.rotatedRight(6) ^ e.rotatedRight(11) ^ e.rotatedRight(25)
                    let choice = (e & f) ^ (~e & g)
                    let t1 = h &+ sum1 &+ choice &+ PortableSHA256.k[t] &+ w[t]
                    let sum0 = a.rotatedRight(2) ^ a.rotatedRight(13) ^ a.rotatedRight(22)
                    let majority = (a & b) ^ (a & c) ^ (b & c)
                    (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ sum0 &+ majority)
                }
                return (a, b, c, d, e, f, g, h)
            }
        state[0] = a0 &+ sums.0; state[1] = b0 &+ sums.1; state[2] = c0 &+ sums.2; state[3] = d0 &+ sums.3
        state[4] = e0 &+ sums.4; state[5] = f0 &+ sums.5; state[6] = g0 &+ sums.6; state[7] = h0 &+ sums.7
    }
}

extension UInt32 {
    @inline(__always) fileprivate func rotatedRight(_ count: UInt32) -> UInt32 {
        (self >> count) | (self << (32 - count))
    }
}
