import Foundation

/// PNGs without zlib (Foundation on Linux has none): 8-bit grey, RGB or RGBA, the image data in stored
/// (uncompressed) deflate blocks, checked by CRC-32 per chunk and Adler-32 over the data, which every
/// PNG reader decodes. Masks are written as the Python runtime writes them: 0 outside, 255 inside.
public enum PNG {
    /// A PNG of an 8-bit grayscale image (`pixels`: `width * height` values, row after row).
    public static func grayscale(width: Int, height: Int, pixels: [UInt8]) -> Data {
        image(width: width, height: height, channels: 1, pixels: pixels)
    }

    /// A PNG of 8-bit samples: `channels` 1 (grey), 3 (RGB) or 4 (RGBA) per pixel, row after row.
    public static func image(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> Data {
        let colorTypes = [1: UInt8(0), 3: 2, 4: 6]
        precondition(colorTypes[channels] != nil, "a PNG has 1, 3 or 4 channels here, not \(channels)")
        let row = width * channels
        precondition(width > 0 && height > 0 && pixels.count == row * height, "pixels do not fill \(width)x\(height)x\(channels)")
        var raw = [UInt8]()
        raw.reserveCapacity((row + 1) * height)
        for line in 0 ..< height {
            raw.append(0)  // filter type None
            raw.append(contentsOf: pixels[line * row ..< (line + 1) * row])
        }
        var png = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        header += [8, colorTypes[channels]!, 0, 0, 0]  // bit depth 8, colour type, deflate, adaptive filtering, no interlace
        png.append(chunk("IHDR", header))
        png.append(chunk("IDAT", zlibStored(raw)))
        png.append(chunk("IEND", []))
        return png
    }

    /// A mask as EdgeTAMKit holds it (a byte per pixel, nonzero inside) as a PNG: 255 inside, 0 outside.
    public static func mask(width: Int, height: Int, inside: [UInt8]) -> Data {
        grayscale(width: width, height: height, pixels: inside.map { $0 != 0 ? 255 : 0 })
    }

    /// CRC-32 (ISO 3309, as PNG uses it).
    public static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    /// Adler-32 (RFC 1950), the checksum of a zlib stream.
    public static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        for block in stride(from: 0, to: bytes.count, by: 5552) {  // the largest run without overflow
            for byte in bytes[block ..< min(block + 5552, bytes.count)] {
                a += UInt32(byte)
                b += a
            }
            a %= 65521
            b %= 65521
        }
        return b << 16 | a
    }

    private static let crcTable: [UInt32] = (0 ..< 256).map { index -> UInt32 in
        var value = UInt32(index)
        for _ in 0 ..< 8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    private static func chunk(_ type: String, _ body: [UInt8]) -> Data {
        let typed = Array(type.utf8) + body
        return Data(bigEndian(UInt32(body.count)) + typed + bigEndian(crc32(typed)))
    }

    /// A zlib stream of stored deflate blocks (RFC 1950 / 1951, BTYPE 00).
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var stream: [UInt8] = [0x78, 0x01]
        var start = 0
        repeat {
            let end = min(start + 65535, data.count)
            let length = UInt16(end - start)
            stream.append(end == data.count ? 1 : 0)  // BFINAL on the last block, BTYPE 00
            stream += [UInt8(length & 0xFF), UInt8(length >> 8), UInt8(~length & 0xFF), UInt8(~length >> 8)]
            stream += data[start ..< end]
            start = end
        } while start < data.count
        return stream + bigEndian(adler32(data))
    }
}
