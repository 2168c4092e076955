import Foundation
import Testing
@testable import EdgeTAMCore

@Suite struct PNGTests {
    @Test func checksumsMatchTheirStandards() {
        #expect(PNG.crc32(Array("123456789".utf8)) == 0xCBF4_3926)  // the CRC-32 check value
        #expect(PNG.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)  // RFC 1950's example
        // zlib.adler32(b"\xff" * 100000): the sums wrap modulo 65521 across the 5552-byte runs.
        #expect(PNG.adler32([UInt8](repeating: 255, count: 100_000)) == 0x149A_302C)
    }

    @Test func maskPNGHasValidChunksAndStoredBlocks() throws {
        let width = 300, height = 250  // 75,250 bytes of scanlines: two stored blocks
        let inside = (0 ..< width * height).map { ($0 % width) > 100 ? UInt8($0 % 3 + 1) : 0 }  // any nonzero byte is inside
        let png = [UInt8](PNG.mask(width: width, height: height, inside: inside))
        #expect(Array(png[0 ..< 8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var offset = 8
        var types: [String] = []
        var idat: [UInt8] = []
        while offset < png.count {
            let length = Int(png[offset]) << 24 | Int(png[offset + 1]) << 16 | Int(png[offset + 2]) << 8 | Int(png[offset + 3])
            let typed = Array(png[offset + 4 ..< offset + 8 + length])
            let crc = png[offset + 8 + length ..< offset + 12 + length].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            #expect(PNG.crc32(typed) == crc)
            let type = String(decoding: typed[0 ..< 4], as: UTF8.self)
            types.append(type)
            if type == "IDAT" { idat += typed[4...] }
            offset += 12 + length
        }
        #expect(types == ["IHDR", "IDAT", "IEND"])
        // Undo the stored blocks by hand and compare with the scanlines that were meant.
        var raw: [UInt8] = []
        var position = 2
        while true {
            let final = idat[position] & 1 == 1
            let length = Int(idat[position + 1]) | Int(idat[position + 2]) << 8
            let complement = Int(idat[position + 3]) | Int(idat[position + 4]) << 8
            #expect(length ^ complement == 0xFFFF)
            raw += idat[position + 5 ..< position + 5 + length]
            position += 5 + length
            if final { break }
        }
        let expected: [Int] = (0 ..< height).flatMap { row in [0] + (0 ..< width).map { inside[row * width + $0] != 0 ? 255 : 0 } }
        #expect(raw == expected.map(UInt8.init))
        let adler = idat[position ..< position + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        #expect(adler == PNG.adler32(raw))
    }
}
