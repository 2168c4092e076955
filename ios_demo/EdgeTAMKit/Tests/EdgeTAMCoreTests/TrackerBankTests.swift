import Foundation
import Testing
@testable import EdgeTAMCore

/// Model-free tests of the tracker's memory: stages whose outputs carry the frame they were computed on, so the
/// `memory_attention` calls show which frames' memories and pointers each object attends to.
@Suite struct TrackerBankTests {
    static let shapes = try! JSONDecoder().decode(StageShapes.self, from: Data("""
        {"image_size": 16, "hidden_size": 2, "memory_dim": 1, "memory_tokens": 1, "point_slots": 4, "max_objects": 2,
         "memory_slots": 7, "pointer_slots": 16, "temporal_encodings": 7, "image_input": true}
        """.utf8))

    static func spec(_ name: String, _ inputs: [(String, [EdgeTAMCore.Dimension], DType)], _ outputs: [(String, [EdgeTAMCore.Dimension])]) -> StageSpec {
        StageSpec(name: name, description: "", maxObjects: 2,
                  inputs: inputs.map { TensorSpec(name: $0.0, shape: $0.1, dtype: $0.2, description: "") },
                  outputs: outputs.map { TensorSpec(name: $0.0, shape: $0.1, dtype: .float32, description: "") })
    }

    /// What one `memory_attention` call saw, per object: (memory frames, their time rows, pointer frames).
    struct Attended: Equatable { let memories: [Float]; let rows: [Int32]; let pointers: [Float] }

    /// Stages that pass the frame index along: frame f is a picture of constant value f; every feature, memory and
    /// pointer computed on it is filled with f.
    final class FrameIndexStages: @unchecked Sendable {
        private let lock = NSLock()
        private var log: [[Attended]] = []
        var attended: [[Attended]] { lock.withLock { log } }

        func runners() -> [String: any StageRunner] {
            let one = EdgeTAMCore.Dimension.fixed(1), n = EdgeTAMCore.Dimension.objects
            func runner(_ spec: StageSpec, _ body: @escaping @Sendable ([String: Tensor]) -> [String: Tensor]) -> any StageRunner {
                ClosureRunner(spec: spec, body: body)
            }
            let encoder = runner(TrackerBankTests.spec("image_encoder", [("image", [one, .fixed(3), .fixed(16), .fixed(16)], .float32)],
                                                       [("image_embeddings", [one, one]), ("vision_features", [one, one]),
                                                        ("high_res_features_0", [one, one]), ("high_res_features_1", [one, one])])) { inputs in
                let frame = inputs["image"]!.floats[0]
                return ["image_embeddings", "vision_features", "high_res_features_0", "high_res_features_1"]
                    .reduce(into: [:]) { $0[$1] = Tensor(shape: [1, 1], floats: [frame]) }
            }
            let attention = runner(TrackerBankTests.spec("memory_attention", [
                ("vision_features", [one, one], .float32), ("memory_features", [n, .fixed(7), one], .float32),
                ("memory_positions", [n, .fixed(7), one], .float32), ("memory_time_index", [n, .fixed(7)], .int32),
                ("memory_valid", [n, .fixed(7)], .float32), ("object_pointers", [n, .fixed(16), .fixed(2)], .float32),
                ("pointer_valid", [n, .fixed(16)], .float32),
            ], [("conditioned_features", [n, one])])) { [self] inputs in
                let objects = inputs["memory_valid"]!.shape[0]
                let (features, rows, valid) = (inputs["memory_features"]!.floats, inputs["memory_time_index"]!.ints, inputs["memory_valid"]!.floats)
                let (pointers, pointerValid) = (inputs["object_pointers"]!.floats, inputs["pointer_valid"]!.floats)
                let call = (0 ..< objects).map { o in
                    let slots = (0 ..< 7).filter { valid[o * 7 + $0] == 1 }, chosen = (0 ..< 16).filter { pointerValid[o * 16 + $0] == 1 }
                    return Attended(memories: slots.map { features[o * 7 + $0] }, rows: slots.map { rows[o * 7 + $0] },
                                    pointers: chosen.map { pointers[(o * 16 + $0) * 2] })
                }
                lock.withLock { log.append(call) }
                return ["conditioned_features": Tensor(shape: [objects, 1], floats: [Float](repeating: inputs["vision_features"]!.floats[0], count: objects))]
            }
            let decoder = runner(TrackerBankTests.spec("prompt_decoder", [
                ("image_embeddings", [n, one], .float32), ("high_res_features_0", [one, one], .float32),
                ("high_res_features_1", [one, one], .float32), ("point_coords", [n, .fixed(4), .fixed(2)], .float32),
                ("point_labels", [n, .fixed(4)], .int32), ("mask_input", [n, one, .fixed(4), .fixed(4)], .float32),
                ("has_mask_input", [n], .float32),
            ], [("mask_logits", [n, .fixed(4), .fixed(4), .fixed(4)]), ("iou_scores", [n, .fixed(4)]),
                ("object_score_logits", [n, one]), ("object_pointers", [n, .fixed(4), .fixed(2)])])) { inputs in
                let objects = inputs["image_embeddings"]!.shape[0], frame = inputs["high_res_features_0"]!.floats[0]
                return ["mask_logits": Tensor.filled([objects, 4, 4, 4], value: 1),
                        "iou_scores": Tensor(shape: [objects, 4], floats: (0 ..< objects).flatMap { _ in [0.1, 0.9, 0.5, 0.2] }),
                        "object_score_logits": Tensor.filled([objects, 1], value: 5),
                        "object_pointers": Tensor.filled([objects, 4, 2], value: Double(frame))]
            }
            let memoryEncoder = runner(TrackerBankTests.spec("memory_encoder", [
                ("vision_features", [one, one], .float32), ("mask_logits", [n, one, .fixed(4), .fixed(4)], .float32),
                ("object_score_logits", [n, one], .float32), ("mask_is_binary", [n], .float32),
            ], [("memory_features", [n, one, one]), ("memory_positions", [n, one, one])])) { inputs in
                let objects = inputs["mask_logits"]!.shape[0], frame = Double(inputs["vision_features"]!.floats[0])
                return ["memory_features": Tensor.filled([objects, 1, 1], value: frame), "memory_positions": Tensor.filled([objects, 1, 1])]
            }
            return ["image_encoder": encoder, "memory_attention": attention, "prompt_decoder": decoder, "memory_encoder": memoryEncoder]
        }
    }

    struct ClosureRunner: StageRunner {
        let spec: StageSpec
        let body: @Sendable ([String: Tensor]) -> [String: Tensor]
        func run(_ inputs: [String: Tensor]) async throws -> [String: Tensor] {
            _ = try spec.checkInputs(inputs)
            return body(inputs)
        }
    }

    static func video(_ count: Int) throws -> FramesInMemory {
        try FramesInMemory((0 ..< count).map { try RGBImage(width: 16, height: 16, pixels: [UInt8](repeating: UInt8($0), count: 16 * 16 * 3)) })
    }

    @Test func forwardWindowHoldsThePromptThe6LatestFramesAnd16Pointers() async throws {
        let stages = FrameIndexStages()
        let session = try EdgeTAMTracker(shapes: Self.shapes, settings: TrackingSettings(), runners: stages.runners()).initSession(try Self.video(100))
        try await session.addPrompt(frame: 0, object: 7, clicks: [Click(x: 8, y: 8)])
        _ = try await session.runFrame(0)
        try await session.propagate(from: 1, maxFrames: 39)
        let last = stages.attended.last![0]  // frame 40
        #expect(last.memories == [0, 34, 35, 36, 37, 38, 39] && last.rows == [6, 5, 4, 3, 2, 1, 0])
        #expect(last.pointers == [0] + (25 ... 39).reversed().map(Float.init))
        #expect(stages.attended[0][0] == Attended(memories: [0], rows: [6], pointers: [0]))  // frame 1
        // Memory stays bounded: tracked frames farther than the 32-frame window from frame 40 and frame 0 are gone.
        #expect(try await session.trackedFrames(of: 7) == Array(1 ... 40))
        try await session.propagate(from: 41, maxFrames: 49)  // to frame 90: frames 33 ... 57 are out of the window
        #expect(try await session.trackedFrames(of: 7) == Array(1 ... 32) + Array(58 ... 90))
    }

    @Test func reversePassAttendsToLaterFrames() async throws {
        let stages = FrameIndexStages()
        let session = try EdgeTAMTracker(shapes: Self.shapes, settings: TrackingSettings(), runners: stages.runners()).initSession(try Self.video(60))
        try await session.addPrompt(frame: 50, object: 1, clicks: [Click(x: 8, y: 8)])
        _ = try await session.runFrame(50)
        try await session.propagate(from: 49, maxFrames: 4, reverse: true)  // frames 49 ... 45
        let frame45 = stages.attended.last![0]
        #expect(frame45.memories == [50, 49, 48, 47, 46] && frame45.rows == [6, 3, 2, 1, 0])
        #expect(frame45.pointers == [50, 46, 47, 48, 49])
    }

    @Test func manyObjectsAreBatchedAndChunkedByMaxObjects() async throws {
        let stages = FrameIndexStages()
        let session = try EdgeTAMTracker(shapes: Self.shapes, settings: TrackingSettings(), runners: stages.runners()).initSession(try Self.video(20))
        for id in [3, 1, 2] {
            try await session.addPrompt(frame: 0, object: id, clicks: [Click(x: 4, y: Double(id))])
            _ = try await session.runFrame(0)
        }
        try await session.propagate(from: 1, maxFrames: 3)  // frames 1 ... 4
        try await session.addPrompt(frame: 5, object: 4, box: Box(x0: 1, y0: 1, x1: 9, y1: 9))  // an object added later
        let result = try await session.runFrame(5)
        #expect(result.objectIds == [3, 1, 2, 4])
        #expect(try result.mask(ofObject: 4) == result.mask(object: 3))
        #expect(throws: EdgeTAMError.unknownObject(99)) { try result.mask(ofObject: 99) }
        await #expect(throws: EdgeTAMError.unknownObject(99)) { try await session.trackedFrames(of: 99) }
        // 4 tracked frames x (2 + 1 objects) + frame 5 (3 tracked objects, the new one is a prompted frame)
        #expect(stages.attended.map(\.count) == [2, 1, 2, 1, 2, 1, 2, 1, 2, 1])
        #expect(stages.attended.last! == [Attended(memories: [0, 1, 2, 3, 4], rows: [6, 3, 2, 1, 0], pointers: [0, 4, 3, 2, 1])])
    }
}
