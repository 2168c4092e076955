import CoreGraphics
import CoreVideo
import EdgeTAMCore
import UIKit

/// Pictures between UIKit / Core Video and EdgeTAMKit's `RGBImage`, and overlays back to `CGImage`.
enum ImageConversion {
    /// Draw a picture (any orientation) into 8-bit RGB, at most `maxSide` pixels on its long side.
    static func rgbImage(_ image: UIImage, maxSide: Int = 2048) throws -> RGBImage {
        let scale = min(1, CGFloat(maxSide) / max(image.size.width, image.size.height))
        return try rgbImage(image, width: max(1, Int(image.size.width * scale)), height: max(1, Int(image.size.height * scale)))
    }

    /// Draw a picture (any orientation: `UIImage` applies its EXIF orientation) into exactly `width` x `height`.
    static func rgbImage(_ image: UIImage, width: Int, height: Int) throws -> RGBImage {
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        rgba.withUnsafeMutableBytes { raw in
            let context = CGContext(data: raw.baseAddress, width: width, height: height, bitsPerComponent: 8,
                                    bytesPerRow: width * 4, space: CGColorSpaceCreateDeviceRGB(),
                                    bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)!
            UIGraphicsPushContext(context)
            context.translateBy(x: 0, y: CGFloat(height))
            context.scaleBy(x: 1, y: -1)
            image.draw(in: CGRect(x: 0, y: 0, width: width, height: height))
            UIGraphicsPopContext()
        }
        return try RGBImage(width: width, height: height, pixels: dropAlpha(rgba, count: width * height))
    }

    /// A camera or video frame (32BGRA) as RGB.
    static func rgbImage(_ buffer: CVPixelBuffer) throws -> RGBImage {
        CVPixelBufferLockBaseAddress(buffer, .readOnly)
        defer { CVPixelBufferUnlockBaseAddress(buffer, .readOnly) }
        let width = CVPixelBufferGetWidth(buffer), height = CVPixelBufferGetHeight(buffer)
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let base = CVPixelBufferGetBaseAddress(buffer)!.assumingMemoryBound(to: UInt8.self)
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0 ..< height {
            for x in 0 ..< width {
                let source = base + y * rowBytes + x * 4, target = (y * width + x) * 3
                rgb[target] = source[2]; rgb[target + 1] = source[1]; rgb[target + 2] = source[0]
            }
        }
        return try RGBImage(width: width, height: height, pixels: rgb)
    }

    static func cgImage(rgba: [UInt8], width: Int, height: Int) -> CGImage? {
        guard let provider = CGDataProvider(data: Data(rgba) as CFData) else { return nil }
        return CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: width * 4,
                       space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }

    /// `picture` with `masks` (one per object) painted over it.
    static func overlay(_ picture: RGBImage, masks: [[UInt8]], colorIndices: [Int]) -> CGImage? {
        cgImage(rgba: MaskOverlay.rgba(picture: picture, masks: masks, colorIndices: colorIndices),
                width: picture.width, height: picture.height)
    }

    private static func dropAlpha(_ rgba: [UInt8], count: Int) -> [UInt8] {
        var rgb = [UInt8](repeating: 0, count: count * 3)
        for pixel in 0 ..< count {
            rgb[pixel * 3] = rgba[pixel * 4]; rgb[pixel * 3 + 1] = rgba[pixel * 4 + 1]; rgb[pixel * 3 + 2] = rgba[pixel * 4 + 2]
        }
        return rgb
    }
}
