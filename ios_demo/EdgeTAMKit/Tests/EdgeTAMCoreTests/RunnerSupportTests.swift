import Foundation
import Testing
@testable import EdgeTAMCore

/// The platform-independent halves of the Apple runners: compute units, the compiled-model cache, pixel
/// packing for Core ML image inputs, and strided copies both ways.
struct RunnerSupportTests {
    @Test func computeUnitsFollowTheManifestAndRefuseUnknownNames() throws {
        #expect(try ComputeUnitsChoice(manifestValue: nil) == .all)
        #expect(try ComputeUnitsChoice(manifestValue: "CPU_AND_GPU") == .cpuAndGPU)
        #expect(try ComputeUnitsChoice(manifestValue: "CPU_AND_NE").deviceRunName == "cpuAndNeuralEngine")
        #expect(throws: EdgeTAMError.self) { try ComputeUnitsChoice(manifestValue: "GPU_ONLY") }
    }

    @Test func compiledModelsAreKeyedByArtifactChecksum() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let cache = CompiledModelCache(directory: folder)
        let current = cache.compiledURL(stage: "image_encoder", artifactSHA256: String(repeating: "a", count: 64))
        let old = cache.compiledURL(stage: "image_encoder", artifactSHA256: String(repeating: "b", count: 64))
        let other = cache.compiledURL(stage: "prompt_decoder", artifactSHA256: String(repeating: "b", count: 64))
        #expect(current != old && current.lastPathComponent == "image_encoder-aaaaaaaaaaaaaaaa.mlmodelc")
        for url in [current, old, other] { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
        let stale = cache.staleEntries(stage: "image_encoder", keeping: String(repeating: "a", count: 64))
        #expect(stale.map(\.lastPathComponent) == [old.lastPathComponent])
    }

    @Test func imageTensorsBecomeBGRARowsWithPadding() throws {
        // 2x3 picture: channel c of pixel (y, x) = 100 c + 10 y + x, with one value out of range each side.
        var values: [Float] = []
        for c in 0 ..< 3 { for y in 0 ..< 2 { for x in 0 ..< 3 { values.append(Float(100 * c + 10 * y + x)) } } }
        values[0] = -4.2
        values[17] = 300.6
        let image = Tensor(shape: [1, 3, 2, 3], floats: values)
        let packed = try PixelPacking.bgra(from: image, bytesPerRow: 16)
        #expect(packed.width == 3 && packed.height == 2 && packed.bytes.count == 32)
        #expect(Array(packed.bytes[0 ..< 4]) == [200, 100, 0, 255])  // B, G, R (R clamped from -4.2), A
        #expect(Array(packed.bytes[16 + 8 ..< 16 + 12]) == [255, 112, 12, 255])  // pixel (1, 2): B clamped from 300.6
        #expect(packed.bytes[12 ..< 16].allSatisfy { $0 == 0 })  // row padding untouched
        #expect(throws: EdgeTAMError.self) { try PixelPacking.bgra(from: Tensor.filled([1, 4, 2, 2])) }
    }

    @Test func stridedWritesInvertStridedCopies() {
        let tensor = Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        var padded = [Float](repeating: -1, count: 8)  // rows padded to 4 values
        padded.withUnsafeMutableBufferPointer { Tensor.write(tensor.floats, shape: tensor.shape, into: $0, strides: [4, 1]) }
        #expect(padded == [1, 2, 3, -1, 4, 5, 6, -1])
        let back = padded.withUnsafeBufferPointer { Tensor.copying(shape: [2, 3], strides: [4, 1], from: $0) }
        #expect(back == tensor)
        var labels = [Int32](repeating: 0, count: 6)
        labels.withUnsafeMutableBufferPointer { Tensor.write([1, 0, -10, 2, 3, -1], shape: [3, 2], into: $0, strides: [1, 3]) }
        #expect(labels == [1, -10, 3, 0, 2, -1])
    }
}
