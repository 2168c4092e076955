import Foundation

/// Which processors a Core ML stage may use. Recipes and manifests spell them as coremltools does
/// ("ALL", "CPU_AND_GPU", ...); device benchmark files as `device_run.schema.json` does ("all", ...).
public enum ComputeUnitsChoice: String, CaseIterable, Sendable, Codable {
    case all = "ALL"
    case cpuOnly = "CPU_ONLY"
    case cpuAndGPU = "CPU_AND_GPU"
    case cpuAndNeuralEngine = "CPU_AND_NE"

    /// The recipe's choice, recorded in the manifest; bundles without one run on all units.
    public init(manifestValue: String?) throws {
        guard let value = manifestValue else { self = .all; return }
        guard let choice = ComputeUnitsChoice(rawValue: value) else {
            throw EdgeTAMError.manifestIncomplete(
                path: EdgeTAMBundle.manifestName,
                reason: "recipe.compute_units '\(value)' is not one of \(Self.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        self = choice
    }

    /// The name `device_run.schema.json` records.
    public var deviceRunName: String {
        switch self {
        case .all: "all"
        case .cpuOnly: "cpuOnly"
        case .cpuAndGPU: "cpuAndGPU"
        case .cpuAndNeuralEngine: "cpuAndNeuralEngine"
        }
    }
}

/// Where compiled Core ML models (`.mlmodelc`) are kept between launches. Compiling a stage takes seconds
/// on a phone, so it is done once per artifact: the file name carries the artifact's checksum, and a
/// bundle copied in with new weights compiles anew instead of reusing a stale model.
public struct CompiledModelCache: Sendable {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    /// The compiled model of one stage artifact.
    public func compiledURL(stage: String, artifactSHA256: String) -> URL {
        directory.appendingPathComponent("\(stage)-\(artifactSHA256.prefix(16)).mlmodelc", isDirectory: true)
    }

    /// Compiled models of `stage` for other checksums: left by an earlier bundle, safe to delete.
    public func staleEntries(stage: String, keeping artifactSHA256: String) -> [URL] {
        let keep = compiledURL(stage: stage, artifactSHA256: artifactSHA256).lastPathComponent
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasPrefix("\(stage)-") && $0.hasSuffix(".mlmodelc") && $0 != keep }
            .sorted()
            .map { directory.appendingPathComponent($0, isDirectory: true) }
    }
}

/// Pixels for a Core ML image input: the `image` tensor (1, 3, H, W) of 0...255 RGB values that
/// `ImageProcessing.imageEncoderInputs` builds becomes the BGRA bytes of a `CVPixelBuffer`.
public enum PixelPacking {
    /// Rows of `bytesPerRow` bytes (at least 4 x width: Core ML pixel buffers may pad rows), BGRA, alpha 255.
    public static func bgra(from image: Tensor, bytesPerRow: Int? = nil) throws -> (width: Int, height: Int, bytes: [UInt8]) {
        guard image.shape.count == 4, image.shape[0] == 1, image.shape[1] == 3 else {
            throw EdgeTAMError.inputMismatch(stage: "image_encoder", input: "image",
                                             reason: "shape \(image.shape) is not (1, 3, height, width)")
        }
        let height = image.shape[2], width = image.shape[3]
        let rowBytes = bytesPerRow ?? width * 4
        precondition(rowBytes >= width * 4, "a row of \(width) BGRA pixels needs \(width * 4) bytes")
        let values = image.floats, plane = width * height
        var bytes = [UInt8](repeating: 0, count: rowBytes * height)
        for y in 0 ..< height {
            for x in 0 ..< width {
                let source = y * width + x, target = y * rowBytes + x * 4
                for (offset, channel) in [2, 1, 0].enumerated() {  // B, G, R
                    bytes[target + offset] = UInt8(max(0, min(255, values[channel * plane + source].rounded())))
                }
                bytes[target + 3] = 255
            }
        }
        return (width, height, bytes)
    }
}

extension Tensor {
    /// Write `values` (row-major, of `shape`) into a buffer laid out with `strides` (elements), as Core ML
    /// and ExecuTorch arrays may be: the inverse of `Tensor.copying(shape:strides:from:)`.
    public static func write<Element>(_ values: [Element], shape: [Int], into target: UnsafeMutableBufferPointer<Element>,
                                      strides: [Int]) {
        precondition(strides.count == shape.count, "strides \(strides) do not match shape \(shape)")
        precondition(values.count == shape.reduce(1, *), "\(values.count) values do not fill shape \(shape)")
        let outer = contiguousStrides(shape)
        for flat in values.indices {
            var rest = flat, offset = 0
            for axis in 0 ..< shape.count {
                offset += rest / outer[axis] * strides[axis]
                rest %= outer[axis]
            }
            target[offset] = values[flat]
        }
    }
}
