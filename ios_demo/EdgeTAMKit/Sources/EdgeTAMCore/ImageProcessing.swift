import Foundation

/// An 8-bit RGB picture, row-major and interleaved (R, G, B per pixel): what the app decodes a photo,
/// a video frame or a camera buffer into before EdgeTAMKit sees it.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// `width * height * 3` bytes.
    public let pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) throws {
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw EdgeTAMError.inputMismatch(stage: "image_encoder", input: "image",
                                             reason: "\(pixels.count) bytes for a \(width)x\(height) RGB picture (needs \(max(width * height * 3, 0)))")
        }
        self.width = width; self.height = height; self.pixels = pixels
    }

    /// The picture resized with Pillow's bilinear filter (`Image.resize(size, Image.BILINEAR)`), the resize the
    /// Python runtime applies: byte-identical, so both runtimes feed the image encoder the same numbers.
    public func resizedBilinear(width outWidth: Int, height outHeight: Int) -> RGBImage {
        // Pillow resamples horizontally first (when the width changes), then vertically, each pass rounding to bytes.
        var current = self
        if outWidth != width { current = current.resampled(horizontally: true, to: outWidth) }
        if outHeight != height { current = current.resampled(horizontally: false, to: outHeight) }
        return current
    }

    private func resampled(horizontally: Bool, to outSize: Int) -> RGBImage {
        let inSize = horizontally ? width : height
        let kernel = PillowBilinearKernel(inSize: inSize, outSize: outSize)
        let (newWidth, newHeight) = horizontally ? (outSize, height) : (width, outSize)
        // Source pixels one tap apart: 3 bytes along a row, a row of bytes along a column.
        let tapStride = horizontally ? 3 : width * 3
        var out = [UInt8](repeating: 0, count: newWidth * newHeight * 3)
        pixels.withUnsafeBufferPointer { source in
            kernel.coefficients.withUnsafeBufferPointer { coefficients in
                out.withUnsafeMutableBufferPointer { target in
                    for y in 0 ..< newHeight {
                        for x in 0 ..< newWidth {
                            let position = horizontally ? x : y
                            let first = kernel.firsts[position], taps = kernel.counts[position]
                            let weights = kernel.offsets[position]
                            let origin = horizontally ? (y * width + first) * 3 : (first * width + x) * 3
                            for channel in 0 ..< 3 {
                                var sum = Int64(1) << (PillowBilinearKernel.precisionBits - 1)
                                var at = origin + channel
                                for tap in 0 ..< taps {
                                    sum += Int64(source[at]) * Int64(coefficients[weights + tap])
                                    at += tapStride
                                }
                                target[(y * newWidth + x) * 3 + channel] = PillowBilinearKernel.clip8(sum)
                            }
                        }
                    }
                }
            }
        }
        // swiftlint:disable:next force_try
        return try! RGBImage(width: newWidth, height: newHeight, pixels: out)
    }
}

/// EXIF orientation (tag 0x0112): how a stored picture must be turned to be shown upright. A phone held upright
/// stores its pixels sideways with `.rotatedClockwise` (6). `UIImage(data:)` reads it and draws upright; a
/// picture decoded to raw pixels (CGImageSource, libjpeg, a server) needs `RGBImage.displayed(_:)`, as the Python
/// runtime applies Pillow's `ImageOps.exif_transpose`.
public enum ExifOrientation: Int, Sendable, CaseIterable {
    case upright = 1, mirrored = 2, upsideDown = 3, mirroredUpsideDown = 4
    case transposed = 5, rotatedClockwise = 6, transverse = 7, rotatedCounterclockwise = 8
}

extension RGBImage {
    /// The picture as displayed under an EXIF orientation (the same pixels as Pillow's `exif_transpose`).
    public func displayed(_ orientation: ExifOrientation) -> RGBImage {
        if orientation == .upright { return self }
        let swaps = orientation.rawValue >= 5
        let (outWidth, outHeight) = swaps ? (height, width) : (width, height)
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0 ..< outHeight {
            for x in 0 ..< outWidth {
                let (sx, sy): (Int, Int)
                switch orientation {
                case .upright: (sx, sy) = (x, y)
                case .mirrored: (sx, sy) = (width - 1 - x, y)
                case .upsideDown: (sx, sy) = (width - 1 - x, height - 1 - y)
                case .mirroredUpsideDown: (sx, sy) = (x, height - 1 - y)
                case .transposed: (sx, sy) = (y, x)
                case .rotatedClockwise: (sx, sy) = (y, height - 1 - x)
                case .transverse: (sx, sy) = (width - 1 - y, height - 1 - x)
                case .rotatedCounterclockwise: (sx, sy) = (width - 1 - y, x)
                }
                let source = (sy * width + sx) * 3, target = (y * outWidth + x) * 3
                out[target] = pixels[source]; out[target + 1] = pixels[source + 1]; out[target + 2] = pixels[source + 2]
            }
        }
        // swiftlint:disable:next force_try
        return try! RGBImage(width: outWidth, height: outHeight, pixels: out)
    }
}

/// Pillow's fixed-point bilinear resampling coefficients for one axis (`precompute_coeffs` and
/// `normalize_coeffs_8bpc` of Pillow's Resample.c): a triangle filter widened by the downscale factor,
/// normalized per output pixel in double precision, then rounded to 22 fractional bits.
struct PillowBilinearKernel {
    static let precisionBits = 32 - 8 - 2
    /// Per output pixel: the first source pixel, the number of taps, and where its taps start in `coefficients`.
    let firsts: [Int]
    let counts: [Int]
    let offsets: [Int]
    /// Every output pixel's taps, one after the other (flat, so the resampling loop reads them without copies).
    let coefficients: [Int32]

    init(inSize: Int, outSize: Int) {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = 1.0 * filterScale
        var firsts: [Int] = [], counts: [Int] = [], offsets: [Int] = [], coefficients: [Int32] = []
        for position in 0 ..< outSize {
            let center = (Double(position) + 0.5) * scale
            let low = max(Int(center - support + 0.5), 0)  // C's (int) cast truncates toward zero
            let high = min(Int(center + support + 0.5), inSize)
            let inverse = 1.0 / filterScale  // Pillow multiplies by the reciprocal; dividing could round differently
            var weights = (low ..< high).map { source -> Double in
                let distance = abs((Double(source) - center + 0.5) * inverse)
                return distance < 1.0 ? 1.0 - distance : 0.0
            }
            let total = weights.reduce(0, +)
            if total != 0 { weights = weights.map { $0 / total } }
            let unit = Double(1 << Self.precisionBits)
            firsts.append(low)
            counts.append(high - low)
            offsets.append(coefficients.count)
            coefficients += weights.map { Int32($0 < 0 ? -0.5 + $0 * unit : 0.5 + $0 * unit) }
        }
        self.firsts = firsts
        self.counts = counts
        self.offsets = offsets
        self.coefficients = coefficients
    }

    static func clip8(_ value: Int64) -> UInt8 {
        if value >= Int64(1) << (precisionBits + 8) { return 255 }
        if value <= 0 { return 0 }
        return UInt8(value >> precisionBits)
    }
}

/// Image pre- and post-processing, equal to the Python runtime's (`edgetam_export.runtime.processing`).
public enum ImageProcessing {
    /// ImageNet statistics the image encoder was trained with (`IMAGE_MEAN`, `IMAGE_STD` of the stage contract).
    public static let mean: [Float] = [0.485, 0.456, 0.406]
    public static let std: [Float] = [0.229, 0.224, 0.225]

    /// The image encoder's input for a picture: `pixel_values` (resized, ImageNet-normalized, 1x3xSxS), or for
    /// bundles exported with an image input, the resized 0...255 RGB values under the name `image`.
    public static func imageEncoderInputs(_ picture: RGBImage, spec: StageSpec) throws -> [String: Tensor] {
        guard let input = spec.inputs.first, input.shape.count == 4, case let .fixed(size) = input.shape[3] else {
            throw EdgeTAMError.inputMismatch(stage: spec.name, input: spec.inputs.first?.name ?? "?", reason: "not a 1x3xSxS picture input")
        }
        let resized = picture.resizedBilinear(width: size, height: size)
        let plane = size * size
        var values = [Float](repeating: 0, count: 3 * plane)
        let normalize = input.name != imageInputName
        let shifts = normalize ? mean.map { $0 * 255 } : [0, 0, 0], divisors = normalize ? std.map { $0 * 255 } : [1, 1, 1]
        resized.pixels.withUnsafeBufferPointer { pixels in
            values.withUnsafeMutableBufferPointer { target in
                for channel in 0 ..< 3 {
                    let (shift, divisor) = (shifts[channel], divisors[channel])
                    for pixel in 0 ..< plane {
                        target[channel * plane + pixel] = (Float(pixels[pixel * 3 + channel]) - shift) / divisor
                    }
                }
            }
        }
        return [input.name: Tensor(shape: [1, 3, size, size], floats: values)]
    }

    /// The name of the 0...255 RGB input of `image_input` bundles (`IMAGE_INPUT` of the stage contract).
    public static let imageInputName = "image"

    /// PyTorch's bilinear interpolation taps (align_corners=False, no antialias) per output position: the two
    /// source positions and their float32 weights, computed as `area_pixel_compute_source_index` computes them.
    /// At the border both taps are the same position (weights then add up, as `np.add.at` adds them in Python).
    public static func bilinearTaps(inSize: Int, outSize: Int) -> [(low: Int, high: Int, lowWeight: Float, highWeight: Float)] {
        let scale = Float(inSize) / Float(outSize)
        return (0 ..< outSize).map { position in
            let source = max((Float(position) + 0.5) * scale - 0.5, 0)
            let low = min(Int(source.rounded(.down)), inSize - 1)
            let fraction = source - Float(low)
            let high = min(low + 1, inSize - 1)
            return high == low ? (low, high, (1 - fraction) + fraction, 0) : (low, high, 1 - fraction, fraction)
        }
    }

    /// Bilinearly resize one `inHeight` x `inWidth` logit map to `height` x `width` (rows first, then columns),
    /// as the Python runtime's `resize_logits` and transformers' `post_process_masks` do.
    public static func resizeLogits(_ logits: ArraySlice<Float>, inHeight: Int, inWidth: Int, height: Int, width: Int) -> [Float] {
        let rows = bilinearTaps(inSize: inHeight, outSize: height), columns = bilinearTaps(inSize: inWidth, outSize: width)
        let base = logits.startIndex
        var partial = [Float](repeating: 0, count: height * inWidth)
        for (y, tap) in rows.enumerated() {
            for x in 0 ..< inWidth {
                partial[y * inWidth + x] = tap.lowWeight * logits[base + tap.low * inWidth + x]
                    + tap.highWeight * logits[base + tap.high * inWidth + x]
            }
        }
        var out = [Float](repeating: 0, count: height * width)
        for y in 0 ..< height {
            let row = y * inWidth
            for (x, tap) in columns.enumerated() {
                out[y * width + x] = partial[row + tap.low] * tap.lowWeight + partial[row + tap.high] * tap.highWeight
            }
        }
        return out
    }

    /// PyTorch's antialiased bilinear weights (align_corners=False) per output position: the first source
    /// position and its taps, rounded in float32 where PyTorch's kernel rounds (`antialiased_weights` in Python).
    public static func antialiasedTaps(inSize: Int, outSize: Int) -> [(first: Int, weights: [Float])] {
        let scale = Float(inSize) / Float(outSize)
        let support: Float = scale >= 1 ? scale : 1
        let inverse: Float = scale >= 1 ? 1 / scale : 1
        return (0 ..< outSize).map { position in
            let center = Float(Double(scale) * (Double(position) + 0.5))
            let low = max(Int(Double(center) - Double(support) + 0.5), 0)
            let high = min(Int(Double(center) + Double(support) + 0.5), inSize)
            let taps = (low ..< high).map { source -> Float in
                let offset = Double(Float(source) - center) + 0.5
                return max(1 - abs(Float(offset * Double(inverse))), 0)
            }
            var total: Float = 0
            for tap in taps { total += tap }
            return (low, total != 0 ? taps.map { $0 / total } : [Float](repeating: 0, count: taps.count))
        }
    }

    /// Resize one `inHeight` x `inWidth` map as `interpolate(..., mode="bilinear", antialias=True)` does (rows,
    /// then columns): how transformers downsizes a drawn mask prompt.
    public static func resizeAntialiased(_ values: [Float], inHeight: Int, inWidth: Int, height: Int, width: Int) -> [Float] {
        let rows = antialiasedTaps(inSize: inHeight, outSize: height), columns = antialiasedTaps(inSize: inWidth, outSize: width)
        var partial = [Float](repeating: 0, count: height * inWidth)
        for (y, tap) in rows.enumerated() {
            for x in 0 ..< inWidth {
                var sum: Float = 0
                for (k, weight) in tap.weights.enumerated() { sum += weight * values[(tap.first + k) * inWidth + x] }
                partial[y * inWidth + x] = sum
            }
        }
        var out = [Float](repeating: 0, count: height * width)
        for y in 0 ..< height {
            for (x, tap) in columns.enumerated() {
                var sum: Float = 0
                for (k, weight) in tap.weights.enumerated() { sum += partial[y * inWidth + tap.first + k] * weight }
                out[y * width + x] = sum
            }
        }
        return out
    }
}
