#if canImport(CoreML)
import CoreML
import CoreVideo
import EdgeTAMCore
import Foundation

/// Runs one `.mlpackage` stage of a Core ML bundle (`coreml-fp16`, `coreml-int8`, ...) with Core ML.
///
/// The package is compiled once (`MLModel.compileModel(at:)`) into a `CompiledModelCache` keyed by the
/// artifact's checksum, then loaded with the chosen compute units. Inputs are copied into `MLMultiArray`s
/// with the strides Core ML gives them, the `image` input of image-input bundles becomes a BGRA
/// `CVPixelBuffer`, and outputs are read back with their strides (Core ML may pad rows); fp16 outputs are
/// converted to Float at this edge. `MLModel` predictions are thread-safe, hence `@unchecked Sendable`.
public final class CoreMLStageRunner: StageRunner, @unchecked Sendable {
    public let spec: StageSpec
    public let computeUnits: ComputeUnitsChoice
    private let model: MLModel

    init(spec: StageSpec, model: MLModel, computeUnits: ComputeUnitsChoice) {
        self.spec = spec
        self.model = model
        self.computeUnits = computeUnits
    }

    /// Compile (or reuse the compiled copy of) and load one stage of `bundle`. `computeUnits` nil takes the
    /// recipe's choice from the manifest.
    public static func load(bundle: EdgeTAMBundle, stage: String, computeUnits: ComputeUnitsChoice? = nil,
                            cache: CompiledModelCache = .applicationSupport) async throws -> CoreMLStageRunner {
        guard let record = bundle.manifest.stages[stage] else { throw EdgeTAMError.unknownStage(stage) }
        let units = try computeUnits ?? ComputeUnitsChoice(manifestValue: bundle.manifest.recipe.computeUnits)
        let compiled = try await compiledModel(bundle: bundle, stage: stage, sha256: record.sha256, cache: cache)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = units.mlComputeUnits
        do {
            let model = try await MLModel.load(contentsOf: compiled, configuration: configuration)
            return CoreMLStageRunner(spec: record.spec, model: model, computeUnits: units)
        } catch {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "Core ML cannot load it (\(error.localizedDescription))")
        }
    }

    private static func compiledModel(bundle: EdgeTAMBundle, stage: String, sha256: String,
                                      cache: CompiledModelCache) async throws -> URL {
        let target = cache.compiledURL(stage: stage, artifactSHA256: sha256)
        let files = FileManager.default
        if files.fileExists(atPath: target.path) { return target }
        do {
            try files.createDirectory(at: cache.directory, withIntermediateDirectories: true)
            let temporary = try await MLModel.compileModel(at: try bundle.artifactURL(stage))
            for stale in cache.staleEntries(stage: stage, keeping: sha256) { try? files.removeItem(at: stale) }
            // Move into place in one step so a killed app never leaves a half-copied model in the cache.
            try files.moveItem(at: temporary, to: target)
        } catch let error as EdgeTAMError {
            throw error
        } catch {
            throw EdgeTAMError.runnerFailed(stage: stage, reason: "Core ML cannot compile it (\(error.localizedDescription)); re-export the bundle")
        }
        return target
    }

    public func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
        _ = try spec.checkInputs(inputs)
        var features: [String: MLFeatureValue] = [:]
        for input in spec.inputs {
            let tensor = inputs[input.name]!
            features[input.name] = input.name == ImageProcessing.imageInputName
                ? MLFeatureValue(pixelBuffer: try Self.pixelBuffer(tensor))
                : MLFeatureValue(multiArray: try Self.multiArray(tensor, dtype: input.dtype))
        }
        let output: MLFeatureProvider
        do {
            output = try await model.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        } catch {
            throw EdgeTAMError.runnerFailed(stage: spec.name, reason: error.localizedDescription)
        }
        var result: [String: Tensor] = [:]
        for name in spec.outputs.map(\.name) {
            guard let array = output.featureValue(for: name)?.multiArrayValue else {
                throw EdgeTAMError.runnerFailed(stage: spec.name, reason: "Core ML returned no array '\(name)'; re-export the bundle")
            }
            result[name] = Self.tensor(array)
        }
        return result
    }

    static func multiArray(_ tensor: Tensor, dtype: DType) throws -> MLMultiArray {
        switch dtype {
        case .float32: try filled(tensor.floats, shape: tensor.shape, dataType: .float32)
        case .int32: try filled(tensor.ints, shape: tensor.shape, dataType: .int32)
        }
    }

    /// A new array of `dataType` (whose scalars are `Element`) holding `values`, written with Core ML's strides.
    static func filled<Element>(_ values: [Element], shape: [Int], dataType: MLMultiArrayDataType) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: dataType)
        let strides = array.strides.map(\.intValue)
        array.withUnsafeMutableBytes { raw, _ in
            Tensor.write(values, shape: shape, into: raw.bindMemory(to: Element.self), strides: strides)
        }
        return array
    }

    static func tensor(_ array: MLMultiArray) -> Tensor {
        let shape = array.shape.map(\.intValue)
        guard array.dataType == .float32 else {
            // fp16 (or double) outputs: Core ML converts to contiguous Float.
            let converted = MLShapedArray<Float>(converting: array)
            return Tensor(shape: shape, floats: converted.scalars)
        }
        let strides = array.strides.map(\.intValue)
        return array.withUnsafeBytes { raw in
            Tensor.copying(shape: shape, strides: strides, from: raw.bindMemory(to: Float.self))
        }
    }

    static func pixelBuffer(_ image: Tensor) throws -> CVPixelBuffer {
        let height = image.shape.count == 4 ? image.shape[2] : 0, width = image.shape.count == 4 ? image.shape[3] : 0
        var buffer: CVPixelBuffer?
        let attributes = [kCVPixelBufferIOSurfacePropertiesKey: [:]] as CFDictionary
        guard CVPixelBufferCreate(kCFAllocatorDefault, width, height, kCVPixelFormatType_32BGRA, attributes, &buffer)
            == kCVReturnSuccess, let buffer
        else {
            throw EdgeTAMError.runnerFailed(stage: "image_encoder", reason: "cannot allocate a \(width)x\(height) pixel buffer")
        }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let packed = try PixelPacking.bgra(from: image, bytesPerRow: rowBytes)
        packed.bytes.withUnsafeBytes { source in
            CVPixelBufferGetBaseAddress(buffer)!.copyMemory(from: source.baseAddress!, byteCount: source.count)
        }
        return buffer
    }
}

extension ComputeUnitsChoice {
    var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: .all
        case .cpuOnly: .cpuOnly
        case .cpuAndGPU: .cpuAndGPU
        case .cpuAndNeuralEngine: .cpuAndNeuralEngine
        }
    }
}

extension CompiledModelCache {
    /// Application Support/EdgeTAMKit/CompiledModels: kept across launches, not backed up as user data.
    public static var applicationSupport: CompiledModelCache {
        let base = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        return CompiledModelCache(directory: base.appendingPathComponent("EdgeTAMKit/CompiledModels", isDirectory: true))
    }
}
#endif
